"""Typed fine-tuning configurations: dataclasses, `--set key=value` overrides, files and names.

A run is described by one `TrainConfig`. It comes from a preset name or a JSON/TOML file holding a
(partial) config (`finetune.presets.load_config`), and is then adjusted with dotted overrides:

    >>> from finetune.presets import load_config
    >>> cfg = load_config("demo", ["optim.lr=1e-3", "data.target=findings"])
    >>> cfg.optim.lr, cfg.data.target
    (0.001, 'findings')
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what it accepts."""


Trainable = Literal["all", "llm", "vision_frozen", "lora"]
Target = Literal["findings_impression", "findings", "impression"]


@dataclass
class ModelSection:
    """Which network to train and where its weights start."""

    # Name in `modeling.PRESETS` (the architecture, image size and vocabulary).
    preset: str = "paligemma2-3b-448"
    # Field overrides applied to the preset's `ModelConfig` (e.g. {"image_size": 224}).
    overrides: dict[str, Any] = field(default_factory=dict)
    # "scratch" (random init from `seed`) or a model bundle directory to start from.
    init: str = "scratch"
    # SentencePiece model to use; None trains one on the training reports (from-scratch runs).
    tokenizer: str | None = None
    # Vocabulary of a tokenizer trained on the training reports.
    tokenizer_vocab_size: int = 512
    # Forward/backward dtype; parameters (master weights) stay float32.
    compute_dtype: Literal["float32", "bfloat16"] = "bfloat16"
    # Unroll the scans over the layer stacks: faster steps for few-layer models on CPU, but a
    # program (and compile time) that grows with depth; keep False for the 26+ layer models.
    unroll_layers: bool = False
    # Recompute each decoder block's activations in the backward pass instead of keeping them:
    # less memory for about a third more compute (`radreport finetune --plan` shows when needed).
    remat: bool = False


@dataclass
class DataSection:
    """The MIMIC-CXR-layout tree, the prompt and target, and the input pipeline."""

    root: str | None = None
    train_split: str = "train"
    val_split: str = "validate"
    test_split: str = "test"
    # The prompt (prefix). `{indication}` is replaced by the study's indication section.
    prompt: str = "INDICATION: {indication}"
    # What the model writes: the paper's findings + impression, or one section.
    target: Target = "findings_impression"
    # Text tokens per example (prefix + separator + suffix + EOS); longer reports are truncated.
    text_len: int = 256
    # Preprocessed images are cached here (default: <workdir>/cache).
    cache_dir: str | None = None
    # Random crop-and-resize + brightness/contrast jitter on training images.
    augment: bool = False
    shuffle_seed: int = 0
    # Limits for quick runs (0 = all examples).
    max_train_examples: int = 0
    max_eval_examples: int = 0


@dataclass
class OptimSection:
    """AdamW with linear warm-up and cosine decay, clipping, accumulation and what trains."""

    lr: float = 5e-6
    warmup_fraction: float = 0.05
    # Cosine ends at lr * end_lr_fraction.
    end_lr_fraction: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    # Regex on parameter paths that get weight decay (big_vision: only `.../kernel`).
    weight_decay_pattern: str = r".*/kernel$"
    grad_clip_norm: float = 1.0
    label_smoothing: float = 0.0
    # Global batch (all hosts, all devices); one optimizer step sees this many examples.
    batch_size: int = 32
    # The global batch is split into this many micro-batches whose gradients are averaged.
    grad_accum_steps: int = 1
    epochs: float = 8.0
    # Total optimizer steps; 0 derives them from epochs and the training split size.
    steps: int = 0
    trainable: Trainable = "all"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    # Regex on parameter paths that get LoRA adapters (attention and MLP weights of the LLM).
    lora_pattern: str = (r"^llm/layers/(attn/(q_einsum|kv_einsum|attn_vec_einsum)/w"
                         r"|mlp/(gating_einsum|linear))$")


@dataclass
class MeshSection:
    """Device mesh: `data` (pure data parallel) x `fsdp` (data parallel with sharded params)."""

    data: int = -1  # -1: all devices left after fsdp
    fsdp: int = 1
    # Extra (regex, spec) rules, first match wins, spec like "fsdp,None" per axis; default: the
    # largest axis divisible by the fsdp size is sharded over `fsdp`.
    rules: list[list[str]] = field(default_factory=list)
    # Call jax.distributed.initialize() (multi-host GPU nodes, TPU slices).
    distributed: bool = False
    # Pin activations to the batch sharding where every layer begins and ends
    # (modeling.activations); without it XLA may keep the whole batch's activations on every
    # device under FSDP (`radreport finetune --plan` shows the difference).
    shard_activations: bool = True


@dataclass
class CheckpointSection:
    """Orbax checkpoints: how often, how many, and which one is the best."""

    every_steps: int = 500
    keep: int = 2
    # Validation metric that picks the best checkpoint (higher is better).
    best_metric: str = "radgraph_partial"
    async_save: bool = True


@dataclass
class EvalSection:
    """Validation during training and the held-out evaluation written into the bundle."""

    every_steps: int = 500
    max_new_tokens: int = 192
    batch_size: int = 16
    # Examples of the validation split generated at each validation (0 = all).
    val_examples: int = 64
    # Score the exported bundle on the test split (0 = all examples, -1 = skip).
    test_examples: int = 0


@dataclass
class VisionWarmupSection:
    """From-scratch runs: first train the vision tower on the training studies' labels."""

    steps: int = 0  # 0 = off
    lr: float = 2e-3
    batch_size: int = 32
    # With a run time limit (`time_limit_s`), the warm-up stops early once this fraction of it
    # has passed, leaving the rest for the report training (a slow or busy machine still gets
    # a report model rather than a warm tower and no training).
    max_time_fraction: float = 0.6


@dataclass
class TrainConfig:
    """Everything one fine-tuning run needs."""

    name: str = "custom"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    mesh: MeshSection = field(default_factory=MeshSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    eval: EvalSection = field(default_factory=EvalSection)
    vision_warmup: VisionWarmupSection = field(default_factory=VisionWarmupSection)
    seed: int = 0
    # Checkpoints, logs and caches (default: runs/<name>).
    workdir: str | None = None
    log_every: int = 10
    # Stop after this many wall-clock seconds (0 = no limit), saving a checkpoint first.
    time_limit_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


def from_dict(data: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Build a config from a (partial, nested) dict laid over `base` (default: the defaults)."""
    config = base if base is not None else TrainConfig()
    config = _copy(config)
    _merge(config, data, prefix="")
    return config


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply `section.key=value` strings; values are parsed to the field's type."""
    config = _copy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        _set_path(config, key.strip(), raw.strip())
    return config


def _copy(config: TrainConfig) -> TrainConfig:
    return _build(TrainConfig, json.loads(json.dumps(config.to_dict())))


def _build(cls: type, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            if dataclasses.is_dataclass(hints[f.name]):
                value = _build(hints[f.name], value)
            kwargs[f.name] = value
    return cls(**kwargs)


def _merge(obj: Any, data: dict[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}; known: {', '.join(sorted(names))}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} is a section; give a table/object")
            _merge(getattr(obj, key), value, prefix=f"{path}.")
        else:
            setattr(obj, key, _coerce(path, hints[key], value))


def _set_path(config: TrainConfig, key: str, raw: str) -> None:
    parts = key.split(".")
    obj: Any = config
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(type(obj))
        if part not in hints:
            where = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown config key {key!r} ({part!r} is not a field of {where})")
        is_last = i == len(parts) - 1
        if not is_last and dataclasses.is_dataclass(hints[part]):
            obj = getattr(obj, part)
            continue
        if not is_last and _origin(hints[part]) is dict:
            # model.overrides.image_size=224 sets one entry of a dict field.
            sub = ".".join(parts[i + 1 :])
            getattr(obj, part)[sub] = _parse_scalar(raw)
            return
        if not is_last:
            raise ConfigError(f"config key {key!r}: {part!r} has no sub-keys")
        setattr(obj, part, _coerce(key, hints[part], _parse_scalar(raw)))
        return


def _origin(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


def _parse_scalar(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        lowered = raw.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null"):
            return None
        return raw


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check and convert `value` to the annotated type `tp`.

    Handles bool, int, float, str, Literal and Optional.
    """
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key} must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, arg, value)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ConfigError(f"{key} must be a {origin.__name__} (JSON), got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        return value if isinstance(value, str) else json.dumps(value)
    return value
