"""What trains and how: parameter selection by path, LoRA adapters, AdamW + warm-up/cosine.

A run builds the Flax NNX model (`build_model`, with `nnx.LoRA` adapters for "lora") and splits
its state with `nnx.split` (`split_model`) into a trainable part (differentiated, updated,
checkpointed) and a frozen part (neither), so frozen towers cost no gradient memory. Paths are
big_vision's, '/'-joined (`img/head/kernel`, `llm/layers/attn/q_einsum/w`):

    trainable="all"            everything
    trainable="llm"            the language model only (vision tower and projector frozen)
    trainable="vision_frozen"  everything but the vision encoder (projector + LLM train)
    trainable="lora"           all base weights frozen; low-rank adapters on matching weights
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx

from finetune.config import ConfigError, OptimSection
from finetune.sharding import path_name
from modeling import formats
from modeling.config import ModelConfig

# Parameter-path conventions of `modeling` (big_vision's tree: `img/...` SigLIP incl. the
# projector `img/head`, `llm/...` Gemma 2).
VISION_PREFIX = "img/"
PROJECTOR_PREFIX = "img/head/"
LLM_PREFIX = "llm/"


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf} (`modeling.formats.flatten` as a dict; `unflatten` is its
    inverse)."""
    return dict(formats.flatten(tree))


def is_trainable(path: str, mode: str) -> bool:
    """Whether a base parameter trains under `mode` (LoRA trains only its adapters)."""
    if mode == "all":
        return True
    if mode == "llm":
        return path.startswith(LLM_PREFIX)
    if mode == "vision_frozen":
        return not path.startswith(VISION_PREFIX) or path.startswith(PROJECTOR_PREFIX)
    if mode == "lora":
        return False
    raise ConfigError(f"optim.trainable must be all, llm, vision_frozen or lora, got {mode!r}")


def trainable_filter(mode: str) -> Any:
    """The `nnx` filter of the variables that train under `mode`: the LoRA adapters
    (`nnx.LoRAParam`) for "lora", else the base parameters `is_trainable` selects by path."""
    is_trainable("", mode)  # validates the mode
    if mode == "lora":
        return nnx.LoRAParam

    def select(path: tuple[Any, ...], variable: Any) -> bool:
        return (isinstance(variable, nnx.Param) and not isinstance(variable, nnx.LoRAParam)
                and is_trainable("/".join(str(p) for p in path), mode))

    return select


def build_model(model_config: ModelConfig, params: dict[str, Any], config: OptimSection,
                rng: jax.Array) -> nnx.Module:
    """The NNX model around `params` (no copy), with LoRA adapters attached when
    `config.trainable` is "lora" (`modeling.lora.add_lora`: rank, alpha, pattern from config)."""
    from modeling.lora import LoRAError, add_lora
    from modeling.model import model_from_params

    model = model_from_params(model_config, params)
    if config.trainable == "lora":
        try:
            add_lora(model, config.lora_pattern, config.lora_rank, config.lora_alpha,
                     nnx.Rngs(params=rng))
        except LoRAError as error:
            raise ConfigError(f"optim.lora_pattern: {error}") from None
    return model


class Split(NamedTuple):
    """A model split for training: `nnx.split(model, trainable_filter(mode), ...)` with both
    states as nested dicts of arrays (what the train step differentiates, optax updates and
    Orbax saves), and the logical axis names of every variable by '/'-joined path (the
    `out_sharding` metadata `finetune.sharding.tree_shardings` reads)."""

    graphdef: Any
    trainable: dict[str, Any]
    frozen: dict[str, Any]
    axes: dict[str, tuple[str | None, ...]]


def split_model(model: nnx.Module, mode: str) -> Split:
    """Trainable and frozen state of `model` under `mode` (see `Split`)."""
    from modeling.model import axis_names_of

    graphdef, trainable, frozen = nnx.split(model, trainable_filter(mode), ...)
    return Split(graphdef, nnx.to_pure_dict(trainable), nnx.to_pure_dict(frozen),
                 axis_names_of(model))


def merged_params(graphdef: Any, trainable: dict[str, Any],
                  frozen: dict[str, Any]) -> dict[str, Any]:
    """The plain parameter tree of a split model: its LoRA adapters, if any, folded into their
    weights (`modeling.lora.merge_lora`)."""
    from modeling.lora import merge_lora

    return merge_lora(nnx.merge(graphdef, trainable, frozen))


def is_adapter(path: str) -> bool:
    """Whether a '/'-joined path names a LoRA adapter's parameter (`<weight>_lora/lora_a|b`)."""
    return path.endswith(("_lora/lora_a", "_lora/lora_b"))


# ---------------------------------------------------------------------------------------------
# Optimizer.
# ---------------------------------------------------------------------------------------------


def warmup_steps(config: OptimSection, total_steps: int) -> int:
    """Linear warm-up length: `warmup_fraction` of the run (0 when the fraction is 0)."""
    if config.warmup_fraction <= 0:
        return 0
    return max(1, int(round(total_steps * config.warmup_fraction)))


def learning_rate_schedule(config: OptimSection, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to `lr`, then cosine decay to `lr * end_lr_fraction` at the end."""
    warmup = warmup_steps(config, total_steps)
    if warmup == 0:
        return optax.cosine_decay_schedule(
            config.lr, max(total_steps, 1), alpha=config.end_lr_fraction
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=config.lr * config.end_lr_fraction,
    )


def make_optimizer(config: OptimSection, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (weight decay only on paths matching the wd pattern)."""
    pattern = re.compile(config.weight_decay_pattern)

    def decay_mask(params: Any) -> Any:
        def decays(path: tuple[Any, ...], _: Any) -> bool:
            name = path_name(path)
            return bool(pattern.search(name)) and not is_adapter(name)

        return jax.tree_util.tree_map_with_path(decays, params)

    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    parts.append(
        optax.adamw(
            learning_rate_schedule(config, total_steps),
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
