"""The train step: suffix-only loss, mixed precision, gradient accumulation, one AdamW update.

The model enters split by `nnx.split` (`finetune.optim.split_model`): its graph, the trainable
state (differentiated) and the frozen state (not), both nested dicts of arrays. The loss merges
them back into the `PaliGemma2` module (`nnx.merge`, no copy) and calls it: logits [B, T, V] over
the text positions, where logits[:, t] predict token t + 1.
The loss follows big_vision: cross-entropy of token t + 1 where `loss_mask[t + 1]` is set
(suffix tokens and EOS), normalised per example, then averaged over the batch.

Master weights are float32; with `compute_dtype=bfloat16` the forward/backward run on a bf16
copy and the gradients come back in float32 (the cast is differentiated through).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

TrainState = dict[str, Any]  # {"step", "trainable", "opt_state", "rng"}


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of `tree` cast to `dtype` (integers untouched)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def suffix_loss(
    logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Mean over examples of the per-example mean next-token NLL on masked (suffix) positions.

    Returns (loss, number of supervised tokens). Examples with no supervised token count zero.
    """
    logits = logits[:, :-1].astype(jnp.float32)
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    if label_smoothing > 0:
        vocab = logits.shape[-1]
        on = 1.0 - label_smoothing
        off = label_smoothing / (vocab - 1)
        soft = jax.nn.one_hot(targets, vocab) * (on - off) + off
        nll = -jnp.sum(soft * logp, axis=-1)
    else:
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    per_example = jnp.sum(nll * mask, axis=-1) / jnp.clip(jnp.sum(mask, axis=-1), 1.0)
    return jnp.mean(per_example), jnp.sum(mask)


def make_loss_fn(
    graphdef: Any,
    compute_dtype: Any,
    label_smoothing: float,
    *,
    remat: bool = False,
    unroll: bool = False,
) -> Callable[[dict[str, Any], dict[str, Any], dict[str, jax.Array]], tuple[jax.Array, jax.Array]]:
    """loss(trainable, frozen, batch) -> (loss, supervised tokens); differentiable in trainable.
    `remat` and `unroll` are the model's (`PaliGemma2.__call__`)."""

    def loss_fn(trainable: dict[str, Any], frozen: dict[str, Any], batch: dict[str, jax.Array]):
        model = nnx.merge(graphdef, cast_floating(trainable, compute_dtype),
                          cast_floating(frozen, compute_dtype))
        pixels = batch["pixel_values"].astype(compute_dtype)
        logits = model(pixels, batch["input_ids"], batch["token_type_ids"], batch["input_mask"],
                       remat=remat, unroll=unroll)
        return suffix_loss(logits, batch["input_ids"], batch["loss_mask"], label_smoothing)

    return loss_fn


def make_train_step(
    graphdef: Any,
    optimizer: optax.GradientTransformation,
    *,
    compute_dtype: Any = jnp.bfloat16,
    grad_accum_steps: int = 1,
    label_smoothing: float = 0.0,
    remat: bool = False,
    unroll: bool = False,
) -> Callable[
    [TrainState, dict[str, Any], dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]
]:
    """step(state, frozen, batch) -> (new state, metrics) for a model split into `graphdef`,
    trainable (in `state`) and frozen state (`finetune.optim.split_model`). Jit it with the
    shardings you need.

    With `grad_accum_steps=k` the batch is split into k interleaved micro-batches (rows i, i+k, ...
    so each device keeps its own rows) whose gradients are averaged: the update equals the one
    of the whole batch, with 1/k of the activation memory.
    """
    loss_fn = make_loss_fn(graphdef, compute_dtype, label_smoothing, remat=remat, unroll=unroll)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, frozen: dict[str, Any], batch: dict[str, jax.Array]):
        trainable = state["trainable"]
        if grad_accum_steps == 1:
            (loss, tokens), grads = grad_fn(trainable, frozen, batch)
        else:
            k = grad_accum_steps

            # [B, ...] -> [B/k, k, ...] -> scan over k micro-batches of B/k rows.
            split = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(-1, k, *x.shape[1:]), 0, 1), batch)

            def body(carry, mb):
                loss_sum, tok_sum, grad_sum = carry
                (loss, tokens), grads = grad_fn(trainable, frozen, mb)
                grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
                return (loss_sum + loss, tok_sum + tokens, grad_sum), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (loss, tokens, grads), _ = jax.lax.scan(body, (0.0, 0.0, zeros), split)
            loss = loss / k
            grads = jax.tree.map(lambda g: g / k, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], trainable)
        new_trainable = optax.apply_updates(trainable, updates)
        rng, _ = jax.random.split(state["rng"])
        new_state = {
            "step": state["step"] + 1,
            "trainable": new_trainable,
            "opt_state": opt_state,
            "rng": rng,
        }
        metrics = {
            "loss": loss,
            "supervised_tokens": tokens,
            "grad_norm": optax.global_norm(grads),
            "param_norm": optax.global_norm(trainable),
        }
        return new_state, metrics

    return step


def init_state(
    trainable: dict[str, Any], optimizer: optax.GradientTransformation, rng: jax.Array
) -> TrainState:
    """A fresh train state (step 0) around the trainable parameters."""
    return {
        "step": jnp.zeros((), jnp.int32),
        "trainable": trainable,
        "opt_state": optimizer.init(trainable),
        "rng": rng,
    }
