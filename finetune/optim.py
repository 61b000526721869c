"""What trains and how: parameter selection by path, LoRA adapters, AdamW + warm-up/cosine.

Parameters are handled as flat dicts keyed by '/'-joined paths (`img/head/kernel`,
`llm/layers/attn/q_einsum/w`). A run splits them into a trainable dict (differentiated, updated,
checkpointed) and a frozen dict (neither), so frozen towers cost no gradient memory:

    trainable="all"            everything
    trainable="llm"            the language model only (vision tower and projector frozen)
    trainable="vision_frozen"  everything but the vision encoder (projector + LLM train)
    trainable="lora"           all base weights frozen; low-rank adapters on matching weights
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from finetune.config import ConfigError, OptimSection

# Parameter-path conventions of `modeling` (big_vision's tree: `img/...` SigLIP incl. the
# projector `img/head`, `llm/...` Gemma 2).
VISION_PREFIX = "img/"
PROJECTOR_PREFIX = "img/head/"
LLM_PREFIX = "llm/"
LORA_A = "#lora_a"
LORA_B = "#lora_b"


def flatten(tree: dict[str, Any]) -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}."""
    out: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{prefix}{key}/")
        else:
            out[prefix[:-1]] = node

    visit(tree, "")
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a/b/c': leaf} -> nested dict (inverse of `flatten`)."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


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


def split_params(flat: dict[str, Any], mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainable, frozen) flat dicts of base parameters."""
    trainable = {k: v for k, v in flat.items() if is_trainable(k, mode)}
    frozen = {k: v for k, v in flat.items() if k not in trainable}
    return trainable, frozen


# ---------------------------------------------------------------------------------------------
# LoRA on stacked (scan) weights.
#
# A weight W whose leading axis stacks the layers (when `stacked`) is adapted per layer with a
# rank-r product scaled by alpha / r. The model-width axis D decides the layout:
#   D is W's last axis (the weight writes the residual stream: attn_vec (L,N,H,D), linear (L,F,D)):
#       A: (L, prod(other axes), r)   B: (L, r, D)           delta = reshape(A @ B)
#   otherwise (the weight reads it: q (L,N,D,H), kv (L,2,K,D,H), gating (L,2,D,F)):
#       A: (L, D, r)                  B: (L, r, prod(others)) delta = A @ B, D moved back in place
# `lora_axes` records D's axis per adapted weight; `merge_params` needs it.
# ---------------------------------------------------------------------------------------------


def lora_width_axis(shape: tuple[int, ...], width: int, stacked: bool) -> int:
    """The axis of a weight that carries the model width (the last such axis).

    >>> lora_width_axis((2, 4, 64, 16), width=64, stacked=True)   # q_einsum (L, N, D, H)
    2
    >>> lora_width_axis((2, 128, 64), width=64, stacked=True)     # mlp linear (L, F, D)
    2
    """
    first = 1 if stacked else 0
    d_axes = [axis for axis in range(first, len(shape)) if shape[axis] == width]
    return d_axes[-1] if d_axes else len(shape) - 1


def lora_axes(
    frozen: dict[str, Any], pattern: str, width: int, stacked_prefix: str
) -> dict[str, int]:
    """{path: width axis} for every frozen weight matching the LoRA `pattern`."""
    regex = re.compile(pattern)
    axes = {
        path: lora_width_axis(tuple(value.shape), width, path.startswith(stacked_prefix))
        for path, value in sorted(frozen.items())
        if regex.search(path)
    }
    if not axes:
        raise ConfigError(
            f"optim.lora_pattern {pattern!r} matches no parameter; "
            f"example paths: {', '.join(sorted(frozen)[:5])}"
        )
    return axes


def _lora_shapes(shape: tuple[int, ...], axis: int, stacked: bool, rank: int):
    lead = shape[:1] if stacked else ()
    if axis == len(shape) - 1:
        fan_in = int(np.prod(shape[len(lead) : -1]))
        return (*lead, fan_in, rank), (*lead, rank, shape[-1])
    others = [shape[i] for i in range(len(lead), len(shape)) if i != axis]
    return (*lead, shape[axis], rank), (*lead, rank, int(np.prod(others)))


def init_lora(
    frozen: dict[str, Any], axes: dict[str, int], rank: int, stacked_prefix: str, rng: jax.Array
) -> dict[str, jax.Array]:
    """Adapters for the weights in `axes`: A ~ N(0, 1/fan_in), B = 0 (so training starts at W)."""
    adapters: dict[str, jax.Array] = {}
    keys = jax.random.split(rng, len(axes))
    for key, (path, axis) in zip(keys, sorted(axes.items()), strict=True):
        shape = tuple(frozen[path].shape)
        a_shape, b_shape = _lora_shapes(shape, axis, path.startswith(stacked_prefix), rank)
        adapters[path + LORA_A] = (jax.random.normal(key, a_shape, jnp.float32)
                                   / np.sqrt(a_shape[-2]))
        adapters[path + LORA_B] = jnp.zeros(b_shape, jnp.float32)
    return adapters


def _lora_delta(a: jax.Array, b: jax.Array, shape: tuple[int, ...], axis: int) -> jax.Array:
    product = jnp.matmul(a, b)  # (*lead, fan_in, fan_out)
    if axis == len(shape) - 1:
        return product.reshape(shape)
    lead = product.ndim - 2
    others = [shape[i] for i in range(lead, len(shape)) if i != axis]
    product = product.reshape(*shape[:lead], shape[axis], *others)
    return jnp.moveaxis(product, lead, axis)


def merge_params(
    trainable: dict[str, Any],
    frozen: dict[str, Any],
    lora_scale: float = 1.0,
    axes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One flat dict of effective weights: base weights, with LoRA deltas added where present."""
    merged = dict(frozen)
    for path, value in trainable.items():
        if not path.endswith((LORA_A, LORA_B)):
            merged[path] = value
    for path, axis in (axes or {}).items():
        if path + LORA_A not in trainable:
            continue
        base = merged[path]
        delta = _lora_delta(trainable[path + LORA_A], trainable[path + LORA_B], base.shape, axis)
        merged[path] = base + (delta * lora_scale).astype(base.dtype)
    return merged


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

    def decay_mask(params: dict[str, Any]) -> dict[str, bool]:
        return {path: bool(pattern.search(path)) and not path.endswith((LORA_A, LORA_B))
                for path in params}

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
