"""Will the run fit? Compile the real train step for N devices ahead of time and read its memory.

`radreport finetune --config mimic-3b-448 --plan --devices 8 --device-memory 80GB` answers,
before anyone rents the machines, whether a run fits and with which micro-batch:

1. A child process starts JAX with N simulated CPU devices
   (XLA_FLAGS=--xla_force_host_platform_device_count=N; the caller's JAX is untouched).
2. It builds the run's train step exactly as `finetune.trainer` does (model, what trains,
   optimizer, mesh and sharding rules, gradient accumulation, remat) from abstract parameters
   (`jax.eval_shape`: shapes and shardings, no weights) and compiles it with
   `jax.jit(step).lower(state, frozen, batch).compile()`.
3. `compiled.memory_analysis()` gives each device's arguments, outputs and temporaries; the
   parameter, optimizer-state and batch bytes are the sizes of their shards, the gradients one
   float32 shard of the trainable parameters (two with accumulation: the micro-batch's and the
   running sum); the rest of the temporaries are activations and gathered weights.
4. The micro-batch per device doubles from 1 while the program fits in the device memory less
   `headroom`; the largest that fits gives `grad_accum_steps = batch_size / (devices x it)`.

The CPU compiler is not the GPU/TPU compiler: its fusion and buffer reuse differ, and it may
keep some bfloat16 intermediates in float32, so the figures are an estimate on the high side.
On the real machines the same command (`--plan`) without `--devices` compiles for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from finetune.config import ConfigError, TrainConfig, from_dict
from modeling.memory import DEFAULT_HEADROOM, CompiledMemory, fits, format_bytes

# Larger micro-batches are not tried: a step this large per device is beyond any accelerator.
MAX_MICRO_BATCH = 256


@dataclass
class Attempt:
    """One compiled train step: its micro-batch, accumulation and per-device memory."""

    micro_batch: int  # examples per device in one forward/backward pass
    grad_accum_steps: int
    parameters: int  # bytes per device: trainable (float32 master weights) + frozen shards
    optimizer_state: int
    gradients: int  # float32 gradient shards (inside the temporaries)
    batch: int  # the step's input rows on one device
    activations: int  # temporaries less gradients: activations, gathered weights, buffers
    memory: dict[str, int]  # XLA's figures (`CompiledMemory.to_dict`)
    fits: bool

    @property
    def peak(self) -> int:
        """Bytes live at once on one device."""
        return self.memory["peak"]


@dataclass
class TrainPlan:
    """The answer: which micro-batch and accumulation fit the devices, with the evidence."""

    config: str
    model: str
    devices: int
    mesh: dict[str, int]
    device_memory: int
    headroom: float
    batch_size: int
    trainable: str
    remat: bool
    shard_activations: bool
    compute_dtype: str
    parameters_total: int
    trainable_total: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def budget(self) -> int:
        """Bytes a device may use: its memory less the headroom."""
        return int(self.device_memory * (1.0 - self.headroom))

    @property
    def chosen(self) -> Attempt | None:
        """The largest micro-batch that fits (None when not even 1 does)."""
        fitting = [a for a in self.attempts if a.fits]
        return max(fitting, key=lambda a: a.micro_batch) if fitting else None

    @property
    def fits(self) -> bool:
        """Whether the run fits at some micro-batch."""
        return self.chosen is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the budget, the chosen attempt and whether it fits."""
        data = asdict(self)
        data["budget"] = self.budget
        data["fits"] = self.fits
        chosen = self.chosen
        data["micro_batch"] = chosen.micro_batch if chosen else None
        data["grad_accum_steps"] = chosen.grad_accum_steps if chosen else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainPlan:
        """Inverse of `to_dict` (extra derived keys are ignored)."""
        names = set(cls.__dataclass_fields__)
        plan = cls(**{k: v for k, v in data.items() if k in names and k != "attempts"})
        plan.attempts = [Attempt(**a) for a in data.get("attempts", [])]
        return plan


def micro_batches(batch_size: int, devices: int) -> list[int]:
    """Per-device micro-batches 1, 2, 4, ... that split the global batch evenly.

    >>> micro_batches(256, 8)
    [1, 2, 4, 8, 16, 32]
    """
    if batch_size % devices:
        raise ConfigError(
            f"optim.batch_size={batch_size} is not a multiple of the {devices} devices")
    sizes, size = [], 1
    while size <= min(batch_size // devices, MAX_MICRO_BATCH):
        if (batch_size // devices) % size == 0:
            sizes.append(size)
        size *= 2
    return sizes


def _shard_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s (the largest shard)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


class _Program:
    """The run's train step over abstract, sharded inputs (what `finetune.trainer.Run` builds)."""

    def __init__(self, config: TrainConfig, devices: int) -> None:
        import jax
        import jax.numpy as jnp

        import modeling
        from finetune import optim, sharding
        from finetune.trainer import model_config_for

        self.config = config
        available = jax.devices()
        if len(available) < devices:
            raise ConfigError(f"{devices} devices asked for, {len(available)} visible")
        vocab = config.model.tokenizer_vocab_size if config.model.init == "scratch" else None
        self.model_config = model_config_for(config, vocab)
        self.mesh = sharding.make_mesh(config.mesh, available[:devices])
        rules = [tuple(rule) for rule in config.mesh.rules]
        from flax import nnx

        def build() -> Any:
            params = modeling.init_params(self.model_config, jax.random.key(0))
            return optim.build_model(self.model_config, params, config.optim, jax.random.key(1))

        split = optim.split_model(nnx.eval_shape(build), config.optim.trainable)
        self.graphdef, trainable, frozen = split.graphdef, split.trainable, split.frozen
        self.trainable_total = modeling.count_params(trainable)
        self.parameters_total = modeling.count_params(frozen) + (
            0 if config.optim.trainable == "lora" else self.trainable_total)
        self.optimizer = optim.make_optimizer(config.optim, total_steps=1000)

        from finetune.step import init_state

        state = jax.eval_shape(lambda t: init_state(t, self.optimizer, jax.random.PRNGKey(0)),
                               trainable)
        axes = split.axes
        self.state = _with_shardings(state, sharding.tree_shardings(state, self.mesh, rules, axes))
        self.frozen = _with_shardings(frozen, sharding.tree_shardings(frozen, self.mesh, rules,
                                                                      axes))
        self.state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
        bf16 = config.model.compute_dtype == "bfloat16"
        self.compute_dtype = jnp.bfloat16 if bf16 else jnp.float32

    def compile(self, micro_batch: int) -> Attempt:
        """Compile the step for `micro_batch` examples per device (accumulating to the batch)."""
        import jax
        import numpy as np

        from finetune import sharding
        from finetune.step import make_train_step
        from modeling.memory import compiled_memory

        cfg = self.config
        devices = self.mesh.devices.size
        accum = cfg.optim.batch_size // (devices * micro_batch)
        rows, size, length = cfg.optim.batch_size, self.model_config.image_size, cfg.data.text_len
        batch_sharding = sharding.batch_sharding(self.mesh)
        batch = {
            "pixel_values": jax.ShapeDtypeStruct((rows, size, size, 3), np.float32,
                                                 sharding=batch_sharding),
            **{name: jax.ShapeDtypeStruct((rows, length), np.int32, sharding=batch_sharding)
               for name in ("input_ids", "token_type_ids", "input_mask", "loss_mask")},
        }
        step = make_train_step(self.graphdef, self.optimizer, compute_dtype=self.compute_dtype,
                               grad_accum_steps=accum, label_smoothing=cfg.optim.label_smoothing,
                               remat=cfg.model.remat, unroll=cfg.model.unroll_layers)
        if cfg.mesh.shard_activations:
            from modeling.activations import with_activation_sharding

            step = with_activation_sharding(step, batch_sharding)
        jitted = jax.jit(step, out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
                         donate_argnums=(0,))
        compiled = jitted.lower(self.state, self.frozen, batch).compile()
        memory: CompiledMemory = compiled_memory(compiled)
        trainable = _shard_bytes(self.state["trainable"])
        gradients = sum(
            int(np.prod(x.sharding.shard_shape(x.shape), dtype=np.int64)) * 4
            for x in jax.tree.leaves(self.state["trainable"])
        ) * (2 if accum > 1 else 1)
        return Attempt(
            micro_batch=micro_batch,
            grad_accum_steps=accum,
            parameters=trainable + _shard_bytes(self.frozen),
            optimizer_state=_shard_bytes(self.state["opt_state"]),
            gradients=gradients,
            batch=_shard_bytes(batch),
            activations=max(memory.temporaries - gradients, 0),
            memory=memory.to_dict(),
            fits=False,
        )


def _with_shardings(tree: Any, shardings: Any) -> Any:
    import jax

    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def plan_here(
    config: TrainConfig,
    devices: int,
    device_memory: int,
    headroom: float = DEFAULT_HEADROOM,
    micro_batch: int | None = None,
    log: Any = None,
) -> TrainPlan:
    """Plan with the devices this process sees (simulated CPU devices in `plan`'s child).

    Tries `micro_batch` only when given; else 1, 2, 4, ... until one does not fit.
    """
    program = _Program(config, devices)
    result = TrainPlan(
        config=config.name, model=config.model.preset, devices=devices,
        mesh={k: int(v) for k, v in program.mesh.shape.items()},
        device_memory=device_memory, headroom=headroom, batch_size=config.optim.batch_size,
        trainable=config.optim.trainable, remat=config.model.remat,
        shard_activations=config.mesh.shard_activations,
        compute_dtype=config.model.compute_dtype, parameters_total=program.parameters_total,
        trainable_total=program.trainable_total,
    )
    sizes = micro_batches(config.optim.batch_size, devices)
    if micro_batch is not None:
        if micro_batch not in sizes:
            raise ConfigError(f"micro-batch {micro_batch} per device does not split "
                              f"optim.batch_size={config.optim.batch_size} over {devices} devices "
                              f"into whole steps; try one of {sizes}")
        sizes = [micro_batch]
    for size in sizes:
        attempt = program.compile(size)
        attempt.fits = fits(attempt.peak, device_memory, headroom)
        result.attempts.append(attempt)
        if log is not None:
            log(f"micro-batch {size}: peak {format_bytes(attempt.peak)} per device "
                f"({'fits' if attempt.fits else 'does not fit'})")
        if not attempt.fits:
            break
    return result


def plan(
    config: TrainConfig,
    devices: int,
    device_memory: int,
    headroom: float = DEFAULT_HEADROOM,
    micro_batch: int | None = None,
    timeout_s: float = 3600.0,
) -> TrainPlan:
    """Plan in a child process that sees `devices` simulated CPU devices (see the module doc)."""
    flags = os.environ.get("XLA_FLAGS", "")
    flags = " ".join(f for f in flags.split() if "xla_force_host_platform_device_count" not in f)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip())
    request = {"config": config.to_dict(), "devices": devices, "device_memory": device_memory,
               "headroom": headroom, "micro_batch": micro_batch}
    done = subprocess.run([sys.executable, "-m", "finetune.plan"], input=json.dumps(request),
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        if done.returncode == 2:
            raise ConfigError(last[0])
        raise RuntimeError(f"the planning process failed: {last[0]}\n{done.stderr[-3000:]}")
    return TrainPlan.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def format_plan(result: TrainPlan) -> str:
    """The plan as a table a person reads: one column per compiled micro-batch."""
    b = format_bytes
    lines = [
        f"{result.config}: {result.model}, {_count(result.parameters_total)} parameters "
        f"({_count(result.trainable_total)} trainable: {result.trainable}), "
        f"{result.compute_dtype} compute, remat {'on' if result.remat else 'off'}, "
        f"activations {'pinned to' if result.shard_activations else 'free of'} the batch sharding",
        f"{result.devices} devices, mesh {result.mesh}, {b(result.device_memory)} each; budget "
        f"{b(result.budget)} ({result.headroom:.0%} headroom); global batch {result.batch_size}",
        "",
        "per device                " + "".join(f"{'mb ' + str(a.micro_batch):>12}"
                                             for a in result.attempts),
    ]
    rows = [
        ("grad_accum_steps", lambda a: str(a.grad_accum_steps)),
        ("parameters", lambda a: b(a.parameters)),
        ("optimizer state", lambda a: b(a.optimizer_state)),
        ("gradients", lambda a: b(a.gradients)),
        ("activations, temporaries", lambda a: b(a.activations)),
        ("batch", lambda a: b(a.batch)),
        ("peak (XLA)", lambda a: b(a.peak)),
        ("fits", lambda a: "yes" if a.fits else "NO"),
    ]
    for name, value in rows:
        lines.append(f"{name:<26}" + "".join(f"{value(a):>12}" for a in result.attempts))
    chosen = result.chosen
    lines.append("")
    if chosen is None:
        hint = "" if result.remat else " Try --set model.remat=true (recompute activations),"
        lines.append(f"DOES NOT FIT at micro-batch 1.{hint} more devices or "
                     "--set optim.trainable=lora.")
    else:
        lines.append(f"FITS: micro-batch {chosen.micro_batch} per device, "
                     f"--set optim.grad_accum_steps={chosen.grad_accum_steps} "
                     f"(peak {b(chosen.peak)} of {b(result.budget)})")
    return "\n".join(lines)


def _main() -> None:
    """Child process: read a request (JSON on stdin), print the plan as one JSON line."""
    request = json.loads(sys.stdin.read())
    try:
        config = from_dict(request["config"])
        result = plan_here(config, int(request["devices"]), int(request["device_memory"]),
                           float(request["headroom"]), request.get("micro_batch"),
                           log=lambda message: print(message, file=sys.stderr, flush=True))
    except ConfigError as error:
        print(f"{error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    _main()
