"""The train step: suffix-only loss, accumulation, mixed precision and what trains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from finetune import optim
from finetune.config import OptimSection
from finetune.step import init_state, make_train_step, suffix_loss


def test_loss_ignores_predictions_outside_the_suffix() -> None:
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 6, 11)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 11, (2, 6)))
    loss_mask = jnp.asarray([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]])
    base, tokens = suffix_loss(logits, ids, loss_mask)
    # logits[:, t] predicts token t + 1: positions 0, 1 and 5 of row 0 predict unsupervised tokens.
    changed = logits.at[0, 0].add(5.0).at[0, 1].add(-3.0).at[0, 5].add(7.0)
    assert float(suffix_loss(changed, ids, loss_mask)[0]) == pytest.approx(float(base), rel=1e-6)
    assert float(tokens) == 6.0
    moved = logits.at[0, 2, int(ids[0, 3])].add(1.0)  # predicts token 3, which is supervised
    assert float(suffix_loss(moved, ids, loss_mask)[0]) != pytest.approx(float(base), rel=1e-6)


def test_loss_is_a_per_example_mean_then_a_batch_mean() -> None:
    logits = jnp.zeros((2, 4, 5))  # uniform: every supervised token costs log(5)
    ids = jnp.zeros((2, 4), jnp.int32)
    loss_mask = jnp.asarray([[0, 1, 0, 0], [0, 1, 1, 1]])
    loss, _ = suffix_loss(logits, ids, loss_mask)
    assert float(loss) == pytest.approx(np.log(5.0), rel=1e-6)


_STEPS: dict = {}


def _trained(tiny_model, make_batch, accum: int, mode: str = "all", dtype=jnp.float32,
             steps: int = 1, sgd: bool = False):
    config, params, _ = tiny_model
    model = optim.build_model(config, params, OptimSection(trainable=mode), jax.random.key(2))
    graphdef, trainable, frozen, _ = optim.split_model(model, mode)
    if sgd:
        tx = optax.sgd(0.1)
    else:
        tx = optim.make_optimizer(
            OptimSection(lr=1e-2, warmup_fraction=0.0, grad_clip_norm=0.0), 10)
    state = init_state(trainable, tx, jax.random.PRNGKey(1))
    key = (accum, mode, dtype, sgd)
    if key not in _STEPS:  # one compilation per variant
        _STEPS[key] = jax.jit(
            make_train_step(graphdef, tx, compute_dtype=dtype, grad_accum_steps=accum))
    step = _STEPS[key]
    batch = make_batch(config, batch=4)
    for _ in range(steps):
        state, metrics = step(state, frozen, batch)
    return state, metrics, frozen


def test_gradient_accumulation_gives_the_whole_batch_update(tiny_model, make_batch) -> None:
    # Plain SGD: the update is linear in the gradient, so equal updates mean equal gradients.
    whole, m1, _ = _trained(tiny_model, make_batch, accum=1, sgd=True)
    split, m2, _ = _trained(tiny_model, make_batch, accum=2, sgd=True)
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)
    whole, split = optim.flatten(whole["trainable"]), optim.flatten(split["trainable"])
    assert whole.keys() == split.keys()
    for path in whole:
        np.testing.assert_allclose(whole[path], split[path], rtol=1e-4, atol=1e-6)


def test_bf16_compute_keeps_float32_master_weights_and_learns(tiny_model, make_batch) -> None:
    state, metrics, _ = _trained(tiny_model, make_batch, accum=1, dtype=jnp.bfloat16, steps=3)
    assert {x.dtype for x in jax.tree.leaves(state["trainable"])} == {jnp.dtype(jnp.float32)}
    first, _, _ = _trained(tiny_model, make_batch, accum=1, dtype=jnp.bfloat16, steps=1)
    assert np.isfinite(float(metrics["loss"]))
    assert int(state["step"]) == 3 and int(first["step"]) == 1


def test_llm_only_training_leaves_the_vision_tower_out_of_the_optimizer(
        tiny_model, make_batch) -> None:
    _, params, _ = tiny_model
    state, _, frozen = _trained(tiny_model, make_batch, accum=1, mode="llm")
    trained = optim.flatten(state["trainable"])
    assert trained and all(path.startswith("llm/") for path in trained)
    assert frozen.keys() == {"img"}
    before = optim.flatten(params)
    changed = [p for p in trained if not np.allclose(trained[p], before[p])]
    assert changed, "the LLM weights did not move"
