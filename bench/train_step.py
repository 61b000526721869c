"""Train-step throughput: our JAX step against a transformers (torch) step, same model and batch.

Both sides train the same miniature PaliGemma 2 (the `demo` preset's architecture by default:
SigLIP + projector + Gemma 2, random init, float32) on the same batch and sequence length with
AdamW and the loss on suffix tokens only, in interleaved rounds; everything trains unless
`--trainable` names one of finetune's other modes (the demo's report steps train with the vision
tower frozen: `--trainable vision_frozen`), the same on both sides. Prints examples/s of each and
the median ratio of the rounds; our step is built as the preset trains it (`model.unroll_layers`);
then the step time of our step on 8 simulated CPU devices (data=2 x fsdp=4) in a subprocess.

    .venv/bin/python bench/train_step.py [--batch 16] [--steps 5] [--rounds 5] [--config demo]
                                         [--trainable all|vision_frozen|llm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str, vocab: int):
    """(ModelConfig, text tokens per example, unroll_layers) of a finetune preset."""
    from finetune.presets import load_config
    from finetune.trainer import model_config_for

    cfg = load_config(name)
    return model_config_for(cfg, vocab), cfg.data.text_len, cfg.model.unroll_layers


def make_batch(
    config, batch: int, length: int, prefix: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = config.image_size
    token_type = np.ones((batch, length), np.int32)
    token_type[:, :prefix] = 0
    ids = rng.integers(3, config.text.vocab_size, (batch, length)).astype(np.int32)
    ids[:, 0] = 2  # BOS
    return {
        "pixel_values": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
        "input_ids": ids,
        "token_type_ids": token_type,
        "input_mask": np.ones((batch, length), np.int32),
        "loss_mask": token_type.copy(),
    }


def jax_step(config, batch: dict[str, np.ndarray], mesh_shape: tuple[int, int] | None = None,
             unroll: bool = False, trainable_mode: str = "all"):
    """(run one step and wait for it, first-step seconds incl. compile, last loss getter)."""
    import jax
    import jax.numpy as jnp

    import modeling
    from finetune import optim, sharding
    from finetune.config import MeshSection, OptimSection
    from finetune.step import init_state, make_train_step

    params = modeling.init_params(config, jax.random.PRNGKey(0))
    optim_config = OptimSection(lr=1e-4, warmup_fraction=0.0, trainable=trainable_mode)
    model = optim.build_model(config, params, optim_config, jax.random.PRNGKey(2))
    graphdef, trainable, frozen, axes = optim.split_model(model, trainable_mode)
    tx = optim.make_optimizer(OptimSection(lr=1e-4, warmup_fraction=0.0), 1000)
    data, fsdp = mesh_shape or (1, 1)
    mesh = sharding.make_mesh(MeshSection(data=data, fsdp=fsdp), jax.devices()[: data * fsdp])
    state = init_state(trainable, tx, jax.random.PRNGKey(1))
    shardings = sharding.tree_shardings(state, mesh, axes=axes)
    state = jax.device_put(state, shardings)
    frozen = jax.device_put(frozen, sharding.tree_shardings(frozen, mesh, axes=axes))
    step = jax.jit(
        make_train_step(graphdef, tx, compute_dtype=jnp.float32, unroll=unroll),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    device_batch = sharding.global_batch(batch, mesh)
    box = {"state": state, "loss": None}

    def run() -> None:
        box["state"], metrics = step(box["state"], frozen, device_batch)
        box["loss"] = metrics["loss"]
        jax.block_until_ready(box["loss"])

    first = _timed(run)
    return run, first, lambda: float(box["loss"])


def _timed(fn: Callable[[], object], repeats: int = 1) -> float:
    """Mean seconds per call over `repeats` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def time_jax(config, batch: dict[str, np.ndarray], steps: int,
             mesh_shape: tuple[int, int] | None = None, unroll: bool = False,
             trainable_mode: str = "all") -> dict:
    run, first, loss = jax_step(config, batch, mesh_shape, unroll, trainable_mode)
    step_s = _timed(run, steps)
    n = batch["input_ids"].shape[0]
    data, fsdp = mesh_shape or (1, 1)
    return {"step_s": step_s, "examples_per_s": n / step_s, "first_step_s": first,
            "loss": loss(), "devices": data * fsdp}


# finetune's `optim.trainable` modes as transformers module names that stay frozen.
TORCH_FROZEN = {
    "all": (),
    "vision_frozen": ("vision_tower",),
    "llm": ("vision_tower", "multi_modal_projector"),
}


def torch_step(config, batch: dict[str, np.ndarray], trainable_mode: str = "all",
               device: str = "cpu"):
    """(run one step, first-step seconds, last loss getter, torch threads) on `device`."""
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    from modeling.convert import hf_config_dict

    torch.manual_seed(0)
    hf = hf_config_dict(config)
    hf["text_config"]["attn_implementation"] = "eager"  # Gemma 2 soft-capping needs eager
    model = PaliGemmaForConditionalGeneration(PaliGemmaConfig.from_dict(hf))
    model.config._attn_implementation = "eager"
    model.to(device).train()
    for name, param in model.named_parameters():
        if any(part in name.split(".") for part in TORCH_FROZEN[trainable_mode]):
            param.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    n, length = batch["input_ids"].shape
    image_tokens = config.num_image_tokens
    image_ids = np.full((n, image_tokens), hf["image_token_index"], np.int64)
    input_ids = torch.from_numpy(
        np.concatenate([image_ids, batch["input_ids"]], axis=1).astype(np.int64))
    token_type = torch.from_numpy(
        np.concatenate([np.zeros((n, image_tokens), np.int64), batch["token_type_ids"]], axis=1))
    labels = input_ids.clone()
    labels[token_type == 0] = -100
    pixels = torch.from_numpy(batch["pixel_values"].transpose(0, 3, 1, 2).copy())
    input_ids, token_type, labels, pixels = (t.to(device) for t in (input_ids, token_type, labels,
                                                                     pixels))
    attention = torch.ones_like(input_ids)

    box = {"loss": None}

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=input_ids, pixel_values=pixels, token_type_ids=token_type,
                    attention_mask=attention, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        box["loss"] = out.loss.detach()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    first = _timed(run)
    return run, first, lambda: float(box["loss"]), torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="finetune preset whose model is timed")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=0, help="text tokens (default: the preset's)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of ours and theirs")
    parser.add_argument("--trainable", default="all", choices=sorted(TORCH_FROZEN),
                        help="what trains on both sides (finetune's optim.trainable; the demo's "
                             "report steps use vision_frozen)")
    parser.add_argument("--no-warm-step", action="store_true",
                        help="time each block from its first step (no untimed warm-up step)")
    parser.add_argument("--skip-multidevice", action="store_true")
    parser.add_argument("--multidevice-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Both libraries run in this process on the same allocator: jemalloc where installed
    # (RADREPORT_MALLOC=system for glibc's); see radreport/allocator.py.
    from radreport.allocator import active_allocator, reexec_with_jemalloc

    reexec_with_jemalloc()

    config, text_len, unroll = model_config(args.config, args.vocab)
    length = args.length or text_len
    batch = make_batch(config, args.batch, length)
    if args.multidevice_only:
        print(json.dumps(time_jax(config, batch, args.steps, mesh_shape=(2, 4), unroll=unroll,
                                  trainable_mode=args.trainable)))
        return

    print(f"model: {args.config} preset architecture, {config.num_image_tokens} image tokens + "
          f"{length} text tokens, batch {args.batch}, float32, AdamW, trains {args.trainable}, "
          f"{os.cpu_count()} CPUs, "
          f"layer scans {'unrolled' if unroll else 'rolled'}, malloc {active_allocator()}")
    ours, ours_first, ours_loss = jax_step(config, batch, unroll=unroll,
                                           trainable_mode=args.trainable)
    theirs, theirs_first, theirs_loss, threads = torch_step(config, batch, args.trainable)
    # Interleave: each round times `steps` of ours then `steps` of theirs, so both see the same
    # machine; the ratio of each round is reported by its median (shared machines are noisy).
    # A pause before each block lets the other library's worker threads stop spinning, and one
    # untimed step then warms the side about to be timed: a training loop runs its steps back to
    # back, and the first step after the other library ran is slower for ours, not for theirs
    # (bench/README.md has the numbers; --no-warm-step times without the warm-up step).
    rounds = []
    for _ in tqdm(range(args.rounds), desc="rounds", leave=False):
        blocks = []
        for side in (ours, theirs):
            time.sleep(0.5)
            if not args.no_warm_step:
                side()
            blocks.append(_timed(side, args.steps))
        rounds.append(tuple(blocks))
    ours_s = float(np.median([r[0] for r in rounds]))
    theirs_s = float(np.median([r[1] for r in rounds]))
    ratios = sorted(r[1] / r[0] for r in rounds)
    n = args.batch
    print(f"{'':28s}{'examples/s':>12s}{'step (s)':>10s}{'first step (s)':>16s}{'loss':>8s}")
    print(f"{'radreport (JAX, jit)':28s}{n / ours_s:12.1f}{ours_s:10.3f}{ours_first:16.1f}"
          f"{ours_loss():8.3f}")
    print(f"{'transformers (torch, eager)':28s}{n / theirs_s:12.1f}{theirs_s:10.3f}"
          f"{theirs_first:16.1f}{theirs_loss():8.3f}   ({threads} threads)")
    print(f"ratio (ours / transformers): {float(np.median(ratios)):.2f}x median of "
          f"{len(rounds)} rounds of {args.steps} steps each "
          f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}x)")

    if not args.skip_multidevice:
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
                   JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
        command = [sys.executable, __file__, "--multidevice-only", "--config", args.config,
                   "--vocab", str(args.vocab), "--batch", str(args.batch), "--length", str(length),
                   "--steps", str(args.steps), "--trainable", args.trainable]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        multi = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"8 simulated CPU devices (data=2 x fsdp=4): {multi['step_s']:.3f} s/step, "
              f"{multi['examples_per_s']:.1f} examples/s (1 device: {ours_s:.3f} s/step; "
              "simulated devices share the same cores, so this checks the sharded program, "
              "not speed-up)")


if __name__ == "__main__":
    main()
