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
# A weight W of shape (L, *rest) (leading axis: the stacked layers when `stacked`) is adapted as
#     W' = W + (alpha / r) * reshape(A @ B)
# where A: (L, fan_in, r) and B: (L, r, fan_out), fan_in = the product of the axes before `split`
# and fan_out = the product of the axes from `split` on. `lora_split` chooses `split` so that the
# model width D is the fan-in of projections that read the residual stream (q/kv/gating: D is
# early) and the fan-out of those that write it (attn_vec/linear: D is last).
# ---------------------------------------------------------------------------------------------


def lora_split(shape: tuple[int, ...], width: int, stacked: bool) -> int:
    """The axis index where fan-out starts, for a weight of `shape` in a model of `width`.

    >>> lora_split((2, 4, 64, 16), width=64, stacked=True)   # q_einsum (L, N, D, H)
    3
    >>> lora_split((2, 128, 64), width=64, stacked=True)     # mlp linear (L, F, D)
    2
    """
    first = 1 if stacked else 0
    d_axes = [axis for axis in range(first, len(shape)) if shape[axis] == width]
    if not d_axes:
        return len(shape) - 1
    axis = d_axes[-1]
    if axis == len(shape) - 1:  # writes the residual stream: fan-out = D
        return axis
    return axis + 1  # reads the residual stream: fan-in ends after D


def init_lora(
    frozen: dict[str, Any], config: OptimSection, width: int, stacked_prefix: str, rng: jax.Array
) -> dict[str, jax.Array]:
    """Adapters for every frozen weight matching `config.lora_pattern`: A ~ N(0, 1/fan_in), B = 0."""
    pattern = re.compile(config.lora_pattern)
    adapters: dict[str, jax.Array] = {}
    targets = sorted(path for path in frozen if pattern.search(path))
    if not targets:
        raise ConfigError(
            f"optim.lora_pattern {config.lora_pattern!r} matches no parameter; "
            f"example paths: {', '.join(sorted(frozen)[:5])}"
        )
    keys = jax.random.split(rng, len(targets))
    for key, path in zip(keys, targets, strict=True):
        shape = tuple(frozen[path].shape)
        stacked = path.startswith(stacked_prefix)
        split = lora_split(shape, width, stacked)
        lead = shape[:1] if stacked else ()
        body = shape[1:] if stacked else shape
        fan_in = int(np.prod(body[: split - len(lead)]))
        fan_out = int(np.prod(body[split - len(lead) :]))
        r = config.lora_rank
        adapters[path + LORA_A] = jax.random.normal(key, (*lead, fan_in, r), jnp.float32) / np.sqrt(fan_in)
        adapters[path + LORA_B] = jnp.zeros((*lead, r, fan_out), jnp.float32)
    return adapters


def merge_params(
    trainable: dict[str, Any], frozen: dict[str, Any], lora_scale: float = 1.0
) -> dict[str, Any]:
    """One flat dict of effective weights: base weights, with LoRA deltas added where present."""
    merged = dict(frozen)
    for path, value in trainable.items():
        if path.endswith(LORA_A) or path.endswith(LORA_B):
            continue
        merged[path] = value
    for path in trainable:
        if not path.endswith(LORA_A):
            continue
        base_path = path[: -len(LORA_A)]
        a = trainable[path]
        b = trainable[base_path + LORA_B]
        base = merged[base_path]
        delta = jnp.matmul(a, b) * lora_scale
        merged[base_path] = base + delta.reshape(base.shape).astype(base.dtype)
    return merged


# ---------------------------------------------------------------------------------------------
# Optimizer.
# ---------------------------------------------------------------------------------------------


def warmup_steps(config: OptimSection, total_steps: int) -> int:
    """Linear warm-up length: `warmup_fraction` of the run, at least one step."""
    return max(1, int(round(total_steps * config.warmup_fraction)))


def learning_rate_schedule(config: OptimSection, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to `lr`, then cosine decay to `lr * end_lr_fraction` at the end."""
    warmup = warmup_steps(config, total_steps)
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
        return {path: bool(pattern.search(path)) and not path.endswith((LORA_A, LORA_B)) for path in params}

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
