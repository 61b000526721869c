"""Where activations live on a device mesh: a layout hint at every layer boundary.

Under FSDP the layer weights are sharded over the same devices as the batch; left alone, XLA's
sharding propagation may follow a weight's layout into the activations (rows gathered, model
width split) and keep activations for the whole batch on every device. A caller that knows the
mesh (fine-tuning) traces the model inside `activation_sharding(batch_sharding)`; the model then
pins its [B, ...] activations to that sharding where a layer begins and ends (`constrain`).
Outside the context `constrain` does nothing, so inference and single-device code are unchanged.

    step = with_activation_sharding(step, NamedSharding(mesh, PartitionSpec(("data", "fsdp"))))
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax

_SHARDING: contextvars.ContextVar[Any] = contextvars.ContextVar("activation_sharding",
                                                                default=None)


@contextlib.contextmanager
def activation_sharding(sharding: Any) -> Iterator[None]:
    """Trace the model with its [B, ...] activations pinned to `sharding` (leading axis)."""
    token = _SHARDING.set(sharding)
    try:
        yield
    finally:
        _SHARDING.reset(token)


def constrain(x: jax.Array) -> jax.Array:
    """`x` pinned to the active activation sharding (unchanged outside `activation_sharding`)."""
    sharding = _SHARDING.get()
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def with_activation_sharding(fn: Callable[..., Any], sharding: Any) -> Callable[..., Any]:
    """`fn` traced inside `activation_sharding(sharding)` (wrap before `jax.jit`)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with activation_sharding(sharding):
            return fn(*args, **kwargs)

    return wrapped
