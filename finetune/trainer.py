"""The fine-tuning run: data, model, mesh, the loop with validation and checkpoints, and export.

    train(config, out_dir) ─▶ workdir/ {checkpoints/, metrics.jsonl, tensorboard/, cache/,
                                        tokenizer.model, config.json}
                          └▶ out_dir/  the model bundle of the best checkpoint, with its scores

A run restarted with the same workdir continues from its latest checkpoint (params, optimizer,
data position, RNG and step exactly); SIGTERM (preemption) saves a checkpoint and exits 143.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import evaluation
from finetune import data as data_lib
from finetune.config import ConfigError, TrainConfig

PREEMPTED_EXIT_CODE = 143


class Preempted(RuntimeError):
    """The run received SIGTERM; a checkpoint was saved and the run can be resumed."""

    def __init__(self, step: int, workdir: Path) -> None:
        super().__init__(
            f"stopped by SIGTERM at step {step}; checkpoint saved in {workdir}/checkpoints — "
            "run the same command again to resume"
        )
        self.step = step


@dataclass
class RunResult:
    """What a finished run produced."""

    workdir: Path
    steps: int
    best_step: int | None
    val_metrics: dict[str, float] = field(default_factory=dict)
    test_scores: dict[str, float] = field(default_factory=dict)
    bundle: Path | None = None
    train_seconds: float = 0.0


class _Signals:
    """Turns SIGTERM (and SIGINT when asked) into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM,):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.stop = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _check_best_metric(config: TrainConfig) -> None:
    """Refuse a `checkpoint.best_metric` that `evaluation.score` does not report."""
    try:
        evaluation.metric(config.checkpoint.best_metric)
    except evaluation.UnknownMetricError as error:
        raise ConfigError(f"checkpoint.best_metric: {error}") from None


def workdir_of(config: TrainConfig) -> Path:
    """Where a run keeps its checkpoints and logs."""
    return Path(config.workdir) if config.workdir else Path("runs") / config.name


def model_config_for(config: TrainConfig, vocab_size: int | None) -> Any:
    """The `modeling.ModelConfig` of a run: preset + overrides + compute dtype (+ vocabulary)."""
    import modeling

    if config.model.preset not in modeling.PRESETS:
        raise ConfigError(
            f"model.preset {config.model.preset!r} is unknown; "
            f"presets: {', '.join(sorted(modeling.PRESETS))}"
        )
    base = modeling.PRESETS[config.model.preset]
    overrides = dict(config.model.overrides)
    changes: dict[str, Any] = {"compute_dtype": config.model.compute_dtype}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section in ("vision", "text") and name:
            changes.setdefault(section, {})[name] = value
        else:
            changes[key] = value
    if vocab_size is not None:
        changes.setdefault("text", {})["vocab_size"] = vocab_size
    return base.replace(**changes)


class Run:
    """One fine-tuning run, set up from a config: call `train()` and then `export(out_dir)`."""

    def __init__(self, config: TrainConfig, console: Any = None) -> None:
        import jax

        from finetune import distributed

        _check_best_metric(config)
        self.config = config
        self.console = console
        self.started = time.time()  # time_limit_s counts from here (caching and warm-up included)
        if config.mesh.distributed:
            distributed.initialize()
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        if config.model.init.startswith("REQUIRED:"):
            raise ConfigError(
                f"preset {config.name} starts from a pretrained PaliGemma 2 checkpoint: add "
                "--set model.init=PATH (a bundle, a Hugging Face paligemma2-*-pt-* directory or a "
                "big_vision .npz; for .npz also --set model.tokenizer=paligemma_tokenizer.model)"
            )
        self.workdir = workdir_of(config)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._check_same_config()
        self._log(f"run {config.name}: workdir {self.workdir}")
        self._prepare_data()
        self._prepare_model()

    # -- set-up ---------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        if self.process_index != 0:
            return
        if self.console is not None:
            self.console.print(message)
        else:
            print(message, flush=True)

    def _check_same_config(self) -> None:
        path = self.workdir / "config.json"
        current = self.config.to_dict()
        comparable = {k: v for k, v in current.items() if k not in ("time_limit_s",)}
        if path.exists():
            # Keys added since the run started take their defaults (so it still resumes).
            from finetune.config import from_dict

            saved = from_dict(json.loads(path.read_text())).to_dict()
            saved = {k: v for k, v in saved.items() if k not in ("time_limit_s",)}
            if saved != comparable:
                raise ConfigError(
                    f"{self.workdir} holds a run with a different config; resume it with the same "
                    "config, or choose another --workdir for a new run"
                )
        elif self.process_index == 0:
            path.write_text(json.dumps(current, indent=2))

    def _prepare_data(self) -> None:
        cfg = self.config
        self.train_examples = data_lib.read_split(
            cfg.data, cfg.data.train_split, cfg.data.max_train_examples)
        self.val_examples = data_lib.read_split(
            cfg.data, cfg.data.val_split, cfg.data.max_eval_examples)
        self.train_pairs = data_lib.text_pairs(cfg.data, self.train_examples)
        self.val_pairs = data_lib.text_pairs(cfg.data, self.val_examples)
        self.tokenizer, self.tokenizer_path = self._tokenizer()
        self._log(
            f"data: {len(self.train_pairs)} training and {len(self.val_pairs)} validation studies; "
            f"tokenizer {self.tokenizer_path.name} ({self.tokenizer.vocab_size} pieces)"
        )

    def _tokenizer(self) -> tuple[Any, Path]:
        from modeling.tokenizer import Tokenizer, train_tokenizer

        cfg = self.config.model
        if cfg.tokenizer:
            path = Path(cfg.tokenizer)
        elif cfg.init != "scratch":
            init = Path(cfg.init)
            candidates = [init / "tokenizer.model", init.with_suffix(".model"),
                          init.parent / "tokenizer.model",
                          init.parent / "paligemma_tokenizer.model"]
            path = next((c for c in candidates if c.is_file()), candidates[0])
        else:
            path = self.workdir / "tokenizer.model"
            if not path.exists():
                texts = [p.target for p in self.train_pairs] + [p.prefix for p in self.train_pairs]
                tmp = self.workdir / f"tokenizer.tmp{self.process_index}.model"
                train_tokenizer(texts, tmp, cfg.tokenizer_vocab_size)
                tmp.replace(path)
        if not path.exists():
            raise ConfigError(f"tokenizer {path} does not exist")
        return Tokenizer(str(path)), path

    def _prepare_model(self) -> None:
        import jax
        import jax.numpy as jnp

        import modeling
        from finetune import optim, sharding
        from finetune.step import init_state, make_train_step

        cfg = self.config
        vocab = self.tokenizer.vocab_size if cfg.model.init == "scratch" else None
        self.model_config = model_config_for(cfg, vocab)
        self.image_size = self.model_config.image_size
        self.forward = partial(modeling.forward, self.model_config, unroll=cfg.model.unroll_layers,
                               remat=cfg.model.remat)

        # Steps and batches.
        self.mesh = sharding.make_mesh(cfg.mesh)
        devices = self.mesh.devices.size
        if cfg.optim.batch_size % (devices * cfg.optim.grad_accum_steps):
            raise ConfigError(
                f"optim.batch_size={cfg.optim.batch_size} must be a multiple of "
                f"devices ({devices}) x optim.grad_accum_steps ({cfg.optim.grad_accum_steps})"
            )
        if cfg.optim.batch_size % self.process_count:
            raise ConfigError(
                f"optim.batch_size must be a multiple of the {self.process_count} hosts")
        self.local_batch = cfg.optim.batch_size // self.process_count
        if cfg.optim.steps > 0:
            self.total_steps = cfg.optim.steps
        else:
            epoch_batches = len(self.train_pairs) / cfg.optim.batch_size
            self.total_steps = max(1, math.ceil(cfg.optim.epochs * epoch_batches))

        # Parameters: init, split into trainable / frozen, shard.
        rng = jax.random.PRNGKey(cfg.seed)
        init_rng, lora_rng, self.state_rng = jax.random.split(rng, 3)
        initial = self._initial_params(init_rng)
        if cfg.vision_warmup.steps > 0:
            initial = dict(initial, img=self._warm_vision(initial["img"]))
        model = optim.build_model(self.model_config, initial, cfg.optim, lora_rng)
        split = optim.split_model(model, cfg.optim.trainable)
        self.graphdef, trainable, frozen = split.graphdef, split.trainable, split.frozen
        rules = [tuple(rule) for rule in cfg.mesh.rules]
        axes = split.axes
        frozen_shardings = sharding.tree_shardings(frozen, self.mesh, rules, axes)
        self.frozen = jax.device_put(frozen, frozen_shardings)
        self.optimizer = optim.make_optimizer(cfg.optim, self.total_steps)
        self.schedule = optim.learning_rate_schedule(cfg.optim, self.total_steps)
        state = init_state(trainable, self.optimizer, self.state_rng)
        self.state_shardings = sharding.tree_shardings(state, self.mesh, rules, axes)
        self.state = jax.device_put(state, self.state_shardings)
        self.param_count = modeling.count_params(initial)
        self.trainable_count = modeling.count_params(trainable)
        self._log(
            f"model {cfg.model.preset}: {self.param_count / 1e6:.2f}M parameters, "
            f"{self.trainable_count / 1e6:.2f}M trainable ({cfg.optim.trainable}); "
            f"{self.model_config.num_image_tokens} image tokens; mesh {dict(self.mesh.shape)}; "
            f"{self.total_steps} steps of {cfg.optim.batch_size}"
        )
        compute_dtype = jnp.bfloat16 if cfg.model.compute_dtype == "bfloat16" else jnp.float32
        step = make_train_step(
            self.graphdef,
            self.optimizer,
            compute_dtype=compute_dtype,
            grad_accum_steps=cfg.optim.grad_accum_steps,
            label_smoothing=cfg.optim.label_smoothing,
            remat=cfg.model.remat,
            unroll=cfg.model.unroll_layers,
        )
        if cfg.mesh.shard_activations:
            from modeling.activations import with_activation_sharding

            step = with_activation_sharding(step, sharding.batch_sharding(self.mesh))
        self.train_step = jax.jit(
            step,
            out_shardings=(self.state_shardings, sharding.replicated(self.mesh)),
            donate_argnums=(0,),
        )

    def _initial_params(self, rng: Any) -> dict[str, Any]:
        import modeling

        init = self.config.model.init
        if init == "scratch":
            return modeling.init_params(self.model_config, rng)
        base = modeling.load_pretrained(Path(init), tokenizer=self.tokenizer_path)
        self.model_config = self.model_config.replace(vision=base.config.vision,
                                                      text=base.config.text)
        self.image_size = self.model_config.image_size
        self.forward = partial(modeling.forward, self.model_config,
                               unroll=self.config.model.unroll_layers,
                               remat=self.config.model.remat)
        return base.params

    def _warm_vision(self, img: dict[str, Any]) -> dict[str, Any]:
        """The vision tower after the label warm-up (computed once per workdir, then reused)."""
        import jax

        from finetune import optim
        from finetune.vision_warmup import label_matrix, label_rows, warm_up_vision
        from modeling.formats import unflatten

        cfg = self.config
        if cfg.model.init != "scratch" or self.process_count > 1:
            raise ConfigError(
                "vision_warmup is for single-host runs from scratch (model.init=scratch)")
        path = self.workdir / "vision_warmup.npz"
        if path.exists():
            saved = np.load(path)
            return unflatten({k: jax.numpy.asarray(saved[k]) for k in saved.files})
        labels, names = label_matrix(self.train_examples)
        images = self._images(self.train_examples, cfg.data.train_split)
        validation = None
        if self.val_examples:
            tag = f"{cfg.data.val_split}-{len(self.val_examples)}"
            validation = (self._images(self.val_examples, tag),
                          label_rows(self.val_examples, names))
        warm, history = warm_up_vision(
            self.model_config, img, images, labels, cfg.vision_warmup.steps, cfg.vision_warmup.lr,
            cfg.vision_warmup.batch_size, cfg.seed, cfg.data.augment, log=self._log,
            unroll=cfg.model.unroll_layers, validation=validation,
            deadline=(self.started + cfg.vision_warmup.max_time_fraction * cfg.time_limit_s
                      if cfg.time_limit_s > 0 else None),
        )
        if self.process_index == 0:
            from finetune.metrics import MetricsWriter

            writer = MetricsWriter(self.workdir)
            for row in history:
                writer.write(row["step"], "vision_warmup",
                             {k: v for k, v in row.items() if k != "step"})
            writer.close()
            flat = {k: np.asarray(v) for k, v in optim.flatten(jax.device_get(warm)).items()}
            tmp = self.workdir / "vision_warmup.tmp.npz"
            np.savez(tmp, **flat)
            tmp.replace(path)
        return warm

    # -- data -----------------------------------------------------------------------------------

    def _cache_dir(self) -> Path:
        cache_dir = self.config.data.cache_dir
        return Path(cache_dir) if cache_dir else self.workdir / "cache"

    def _images(self, examples: list[Any], tag: str) -> np.ndarray:
        from modeling.preprocess import preprocess_image

        return data_lib.image_cache(examples, self.image_size, self._cache_dir(),
                                    preprocess_image, tag)

    def _train_iterator(self) -> data_lib.TrainIterator:
        import jax

        cfg = self.config
        images = self._images(self.train_examples, f"{cfg.data.train_split}")
        tokens = data_lib.tokenize_pairs(self.tokenizer, self.train_pairs, cfg.data.text_len)
        self.train_supervised = float(tokens["loss_mask"].sum(axis=1).mean())
        source = data_lib.ExampleSource(images, tokens)
        dataset = data_lib.train_dataset(
            source,
            self.local_batch,
            seed=cfg.data.shuffle_seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            with_augmentation=cfg.data.augment,
        )
        return data_lib.TrainIterator(dataset)

    def _device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from finetune import sharding

        names = ("input_ids", "token_type_ids", "input_mask", "loss_mask")
        local = {name: batch[name] for name in names}
        local["pixel_values"] = data_lib.to_pixels(batch["image"])
        return sharding.global_batch(local, self.mesh)

    # -- parameters -----------------------------------------------------------------------------

    def params(self, trainable: Any | None = None) -> dict[str, Any]:
        """The full nested parameter tree (frozen + trainable, LoRA merged) as float32 arrays."""
        from finetune import optim

        trainable = self.state["trainable"] if trainable is None else trainable
        return optim.merged_params(self.graphdef, trainable, self.frozen)

    # -- validation -----------------------------------------------------------------------------

    def generate(self, params: Any, examples: list[Any], pairs: list[data_lib.TextPair],
                 tag: str) -> list[str]:
        """Greedy reports for `examples` with `params` (batched; fixed shapes)."""
        images = self._images(examples, tag)
        prompts = [p.prefix for p in pairs]
        if self.process_count == 1:
            return self._generate_cached(params, images, prompts)
        return self._generate_recompute(params, images, prompts)

    def _compute_params(self, params: Any) -> Any:
        import jax.numpy as jnp

        from finetune.step import cast_floating

        dtype = jnp.bfloat16 if self.config.model.compute_dtype == "bfloat16" else jnp.float32
        return cast_floating(params, dtype)

    def _generate_cached(self, params: Any, images: np.ndarray, prompts: list[str]) -> list[str]:
        """modeling's KV-cached decoder (the one serving uses), single process."""
        from modeling.runtime import PaliGemma

        cfg = self.config
        model = PaliGemma(self.model_config, self._compute_params(params), self.tokenizer,
                          eos_id=int(self.tokenizer.eos_id))
        texts: list[str] = []
        for start in range(0, len(prompts), cfg.eval.batch_size):
            rows = np.asarray(images[start : start + cfg.eval.batch_size])
            chunk = prompts[start : start + cfg.eval.batch_size]
            texts.extend(t.strip() for t in model.generate_text(
                data_lib.to_pixels(rows), chunk, cfg.eval.max_new_tokens))
        return texts

    def _generate_recompute(self, params: Any, images: np.ndarray, prompts: list[str]) -> list[str]:
        """Fixed-shape greedy decoding over global arrays (multi-host runs)."""
        import jax

        from finetune import decode, sharding

        cfg = self.config
        eos = int(self.tokenizer.eos_id)
        if not hasattr(self, "_decoder"):
            decoder = decode.make_greedy_decoder(self.forward, eos, cfg.eval.max_new_tokens)
            self._decoder = jax.jit(decoder, out_shardings=sharding.replicated(self.mesh))
        compute = self._compute_params(params)
        prompt_len = cfg.data.text_len // 2
        batch_size = cfg.eval.batch_size
        rep = sharding.replicated(self.mesh)
        texts: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            real = len(chunk)
            chunk = chunk + [chunk[-1]] * (batch_size - real)
            ids, lengths = decode.prompt_arrays(self.tokenizer, chunk, prompt_len)
            rows = np.asarray(images[start : start + real])
            if real < batch_size:
                rows = np.concatenate([rows, np.repeat(rows[-1:], batch_size - real, axis=0)])
            pixels = data_lib.to_pixels(rows)
            out = self._decoder(
                compute,
                sharding.replicated_array(pixels, rep),
                sharding.replicated_array(ids, rep),
                sharding.replicated_array(lengths, rep),
            )
            texts.extend(decode.tokens_to_text(self.tokenizer, np.asarray(out)[:real], eos))
        return texts

    def evaluate(self, params: Any, examples: list[Any], pairs: list[data_lib.TextPair],
                 tag: str) -> tuple[dict[str, float], list[str]]:
        """`evaluation.score` of greedy reports against the targets (plus the example count)."""
        hypotheses = self.generate(params, examples, pairs, tag)
        references = [p.target for p in pairs]
        scores = {k: float(v) for k, v in evaluation.score(hypotheses, references).items()
                  if isinstance(v, int | float)}
        return scores, hypotheses

    def validate(self, step: int) -> dict[str, float]:
        """Scores on the first `eval.val_examples` validation studies with the current params;
        the generated reports go to <workdir>/predictions/val-<step>.jsonl."""
        n = self.config.eval.val_examples or len(self.val_examples)
        examples, pairs = self.val_examples[:n], self.val_pairs[:n]
        tag = f"{self.config.data.val_split}-{n}"
        scores, hypotheses = self.evaluate(self.params(), examples, pairs, tag)
        self._write_predictions(f"val-{step}", pairs, hypotheses)
        return scores

    def _write_predictions(self, name: str, pairs: list[data_lib.TextPair],
                           hypotheses: list[str]) -> None:
        if self.process_index != 0:
            return
        folder = self.workdir / "predictions"
        folder.mkdir(exist_ok=True)
        with (folder / f"{name}.jsonl").open("w") as handle:
            for pair, hypothesis in zip(pairs, hypotheses, strict=True):
                handle.write(json.dumps({"study_id": pair.study_id, "prompt": pair.prefix,
                                         "reference": pair.target, "generated": hypothesis}) + "\n")

    # -- the loop -------------------------------------------------------------------------------

    def train(self, stop_at_step: int | None = None) -> RunResult:
        """Train to `total_steps` (resuming if checkpoints exist), validating and checkpointing.

        `stop_at_step` ends the session early at that step with a checkpoint, as a preemption
        would; running `train()` again continues the same schedule and data order.
        """
        import jax
        from tqdm import tqdm

        from finetune import distributed
        from finetune.checkpoint import RunCheckpoints
        from finetune.metrics import MetricsWriter

        cfg = self.config
        iterator = self._train_iterator()
        self.checkpoints = RunCheckpoints(
            self.workdir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.best_metric,
            cfg.checkpoint.async_save,
        )
        start = self.checkpoints.latest_step()
        if start is not None:
            self.state = self.checkpoints.restore_state(start, self.state)
            self.checkpoints.restore_iterator(start, iterator)
            self._log(f"resumed from the checkpoint of step {start}")
        step = int(jax.device_get(self.state["step"]))
        writer = MetricsWriter(self.workdir, enabled=self.process_index == 0)
        val_metrics: dict[str, float] = {}
        train_seconds = 0.0
        bar = tqdm(
            total=self.total_steps, initial=step, desc=cfg.name, unit="step",
            disable=self.process_index != 0, dynamic_ncols=True,
        )
        window_start, window_steps = time.time(), 0
        last_loss = float("nan")
        try:
            with _Signals() as signals:
                while step < self.total_steps:
                    batch = self._device_batch(next(iterator))
                    self.state, metrics = self.train_step(self.state, self.frozen, batch)
                    step += 1
                    window_steps += 1
                    if step % cfg.log_every == 0 or step == self.total_steps:
                        metrics = jax.device_get(metrics)
                        last_loss = float(metrics["loss"])
                        if not math.isfinite(last_loss):
                            raise FloatingPointError(
                                f"the training loss became {last_loss} at step {step}; "
                                "lower optim.lr or check the data"
                            )
                        elapsed = time.time() - window_start
                        rate = window_steps * cfg.optim.batch_size / max(elapsed, 1e-9)
                        train_seconds += elapsed
                        writer.write(step, "train", {
                            **{k: float(v) for k, v in metrics.items()},
                            "lr": float(self.schedule(step - 1)),
                            "examples_per_s": rate,
                            "epoch": step * cfg.optim.batch_size / len(self.train_pairs),
                        })
                        bar.set_postfix(loss=f"{last_loss:.3f}", ex_s=f"{rate:.1f}")
                        window_start, window_steps = time.time(), 0
                    bar.update(1)
                    time_up = cfg.time_limit_s > 0 and time.time() - self.started > cfg.time_limit_s
                    # Every host stops at the same step: a SIGTERM (or a clock) seen by one host
                    # stops all of them, and all save the same checkpoint first.
                    stop, time_up = distributed.any_process([signals.stop, time_up])
                    validate_now = cfg.eval.every_steps > 0 and (
                        step % cfg.eval.every_steps == 0 or step == self.total_steps or time_up
                    )
                    if validate_now:
                        eval_start = time.time()
                        val_metrics = self.validate(step)
                        writer.write(step, "val", val_metrics)
                        self._log(
                            f"step {step}: val {cfg.checkpoint.best_metric}="
                            f"{val_metrics.get(cfg.checkpoint.best_metric, float('nan')):.3f} "
                            + evaluation.summarize(val_metrics)
                        )
                        window_start += time.time() - eval_start
                    time_up = time_up or step == stop_at_step
                    if (
                        validate_now
                        or step % cfg.checkpoint.every_steps == 0
                        or step == self.total_steps
                        or stop
                        or time_up
                    ):
                        self.checkpoints.save(
                            step, self.state, iterator.get_state(),
                            val_metrics if validate_now else None,
                        )
                    if stop:
                        self.checkpoints.wait()
                        distributed.barrier(f"preempted-checkpoint-{step}")
                        raise Preempted(step, self.workdir)
                    if time_up:
                        self._log(f"stopping at step {step} (resumable: run again to continue)")
                        break
        finally:
            bar.close()
            writer.close()
            self.checkpoints.wait()
        return RunResult(
            workdir=self.workdir, steps=step, best_step=self.checkpoints.best_step(),
            val_metrics=val_metrics, train_seconds=train_seconds,
        )

    # -- export ---------------------------------------------------------------------------------

    def best_state(self) -> tuple[dict[str, Any], int]:
        """The train state of the best validated checkpoint (else the latest) and its step."""
        step = self.checkpoints.best_step() or self.checkpoints.latest_step()
        if step is None:
            raise RuntimeError("no checkpoint to export; train first")
        return self.checkpoints.restore_state(step, self.state), step

    def _write_adapter(self, out_dir: Path, trainable: dict[str, Any]) -> None:
        """A LoRA run's adapters as a PEFT adapter in `out_dir` (for transformers' PaliGemma
        with the run's base weights), or the reason they cannot be, logged."""
        from flax import nnx

        from modeling.lora import LoRAError, save_peft_adapter

        model = nnx.merge(self.graphdef, trainable, self.frozen)
        base = self.config.model.init
        try:
            save_peft_adapter(self.model_config, model, out_dir, base_model=base)
        except LoRAError as error:
            self._log(f"no PEFT adapter written: {error}")
            return
        self._log(f"LoRA adapters written as a PEFT adapter to {out_dir} (base: {base})")

    def export(self, out_dir: Path, result: RunResult) -> RunResult:
        """Write the bundle of the best checkpoint, scored on the held-out test split."""
        import jax

        from modeling.bundle import save_bundle

        cfg = self.config
        state, step = self.best_state()
        params = self.params(state["trainable"])
        scores: dict[str, float] = {}
        count = 0
        if cfg.eval.test_examples >= 0:
            test = data_lib.read_split(cfg.data, cfg.data.test_split, cfg.eval.test_examples)
            pairs = data_lib.text_pairs(cfg.data, test)
            tag = f"{cfg.data.test_split}-{len(test)}"
            scores, hypotheses = self.evaluate(params, test, pairs, tag)
            self._write_predictions(f"{cfg.data.test_split}-step{step}", pairs, hypotheses)
            count = len(test)
            self._log(f"held-out {cfg.data.test_split} "
                      f"({count} studies, checkpoint of step {step}): "
                      + evaluation.summarize(scores))
            from finetune.metrics import MetricsWriter

            writer = MetricsWriter(self.workdir, enabled=self.process_index == 0)
            writer.write(result.steps, "test",
                         {**scores, "checkpoint_step": step, "examples": count})
            writer.close()
        metadata = {
            "created_by": "radreport finetune",
            "run": cfg.name,
            "config": cfg.to_dict(),
            "base": cfg.model.init,
            "data": {
                "root": str(Path(cfg.data.root).resolve()) if cfg.data.root else None,
                "train_studies": len(self.train_pairs),
                "validation_studies": len(self.val_pairs),
                "prompt": cfg.data.prompt,
                "target": cfg.data.target,
            },
            "steps": int(result.steps),
            "checkpoint_step": int(step),
            "train_seconds": round(result.train_seconds, 1),
            "parameters": self.param_count,
            "scores": scores,
            "scores_split": cfg.data.test_split,
            "scores_examples": count,
            "validation_scores": result.val_metrics,
            "decoding": {"method": "greedy", "max_new_tokens": cfg.eval.max_new_tokens},
        }
        if self.process_index == 0:
            host_params = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
            save_bundle(
                Path(out_dir),
                self.model_config.replace(compute_dtype="float32"),
                host_params,
                str(self.tokenizer_path),
                metadata,
                generation={"max_new_tokens": cfg.eval.max_new_tokens, "method": "greedy"},
                prompt=cfg.data.prompt,
            )
            self._log(f"bundle written to {out_dir} (checkpoint of step {step})")
            if cfg.optim.trainable == "lora":
                self._write_adapter(Path(out_dir) / "peft_adapter", state["trainable"])
        result.test_scores = scores
        result.bundle = Path(out_dir)
        return result

    def close(self) -> None:
        """Finish pending checkpoint writes."""
        if hasattr(self, "checkpoints"):
            self.checkpoints.close()


def train(config: TrainConfig, out_dir: Path | None = None, console: Any = None,
          stop_at_step: int | None = None) -> RunResult:
    """Run (or resume) a fine-tuning run and, with `out_dir`, export its best bundle.

    `stop_at_step` ends this session at that step with a checkpoint (see `Run.train`)."""
    run = Run(config, console=console)
    try:
        result = run.train(stop_at_step=stop_at_step)
        if out_dir is not None:
            result = run.export(out_dir, result)
        return result
    finally:
        run.close()
