"""Parameter selection, LoRA adapters and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeling
from finetune import optim
from finetune.config import OptimSection
from finetune.step import init_state, make_train_step


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_end_value() -> None:
    cfg = OptimSection(lr=1.0, warmup_fraction=0.1, end_lr_fraction=0.0)
    schedule = optim.learning_rate_schedule(cfg, total_steps=100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(55)) == pytest.approx(0.5, abs=1e-6)  # half-way through the cosine
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_trainable_modes_select_parameters_by_path() -> None:
    paths = ["img/embedding/kernel", "img/head/kernel", "llm/final_norm/scale"]
    assert [optim.is_trainable(p, "all") for p in paths] == [True, True, True]
    assert [optim.is_trainable(p, "llm") for p in paths] == [False, False, True]
    assert [optim.is_trainable(p, "vision_frozen") for p in paths] == [False, True, True]
    assert [optim.is_trainable(p, "lora") for p in paths] == [False, False, False]


def test_flatten_and_unflatten_are_inverse(tiny_model) -> None:
    _, params, _ = tiny_model
    flat = optim.flatten(params)
    assert "llm/layers/attn/q_einsum/w" in flat
    again = optim.flatten(optim.unflatten(flat))
    assert again.keys() == flat.keys()


def test_lora_adapters_start_as_the_identity_on_attention_and_mlp(tiny_model) -> None:
    config, params, _ = tiny_model
    flat = optim.flatten(params)
    _, frozen = optim.split_params(flat, "lora")
    axes = optim.lora_axes(frozen, OptimSection().lora_pattern, config.text.width, "llm/layers/")
    adapters = optim.init_lora(frozen, axes, 4, "llm/layers/", jax.random.PRNGKey(0))
    targets = {p.split("#")[0] for p in adapters}
    assert targets == {
        "llm/layers/attn/q_einsum/w", "llm/layers/attn/kv_einsum/w",
        "llm/layers/attn/attn_vec_einsum/w", "llm/layers/mlp/gating_einsum",
        "llm/layers/mlp/linear",
    }
    merged = optim.merge_params(adapters, frozen, lora_scale=4.0, axes=axes)
    for path in targets:
        np.testing.assert_array_equal(merged[path], frozen[path])


def test_lora_delta_is_a_rank_r_update_of_the_model_width_axis(tiny_model) -> None:
    config, params, _ = tiny_model
    _, frozen = optim.split_params(optim.flatten(params), "lora")
    axes = optim.lora_axes(frozen, OptimSection().lora_pattern, config.text.width, "llm/layers/")
    adapters = optim.init_lora(frozen, axes, 4, "llm/layers/", jax.random.PRNGKey(0))
    layers, width, heads = config.text.depth, config.text.width, config.text.num_heads
    assert adapters["llm/layers/attn/q_einsum/w#lora_a"].shape == (layers, width, 4)
    assert adapters["llm/layers/mlp/linear#lora_b"].shape == (layers, 4, width)
    # With B = 1, the q delta of layer 0, head 0 is A @ 1 (as a D x H block): rank <= 4.
    ones = {k: (jnp.ones_like(v) if k.endswith("#lora_b") else v) for k, v in adapters.items()}
    merged = optim.merge_params(ones, frozen, 1.0, axes)
    delta = merged["llm/layers/attn/q_einsum/w"] - frozen["llm/layers/attn/q_einsum/w"]
    assert delta.shape == (layers, heads, width, config.text.head_dim)
    expected = adapters["llm/layers/attn/q_einsum/w#lora_a"][0].sum(-1)  # (D,)
    np.testing.assert_allclose(delta[0, 0, :, 0], expected, rtol=1e-5)


def test_lora_training_moves_only_the_adapters(tiny_model, make_batch) -> None:
    config, params, forward = tiny_model
    _, frozen = optim.split_params(optim.flatten(params), "lora")
    axes = optim.lora_axes(frozen, OptimSection().lora_pattern, config.text.width, "llm/layers/")
    adapters = optim.init_lora(frozen, axes, 2, "llm/layers/", jax.random.PRNGKey(0))
    tx = optim.make_optimizer(OptimSection(lr=1e-2, warmup_fraction=0.0), 10)
    step = jax.jit(make_train_step(forward, tx, compute_dtype=jnp.float32, lora_scale=2.0,
                                   lora_axes=axes))
    state = init_state(adapters, tx, jax.random.PRNGKey(1))
    batch = make_batch(config)
    for _ in range(2):
        state, metrics = step(state, frozen, batch)
    assert set(state["trainable"]) == set(adapters)
    b = state["trainable"]["llm/layers/mlp/linear#lora_b"]
    assert float(jnp.abs(b).max()) > 0  # B left zero: the adapter learned
    merged = optim.merge_params(state["trainable"], frozen, 2.0, axes)
    assert not np.allclose(merged["llm/layers/mlp/linear"], frozen["llm/layers/mlp/linear"])


def test_weight_decay_only_touches_matching_paths() -> None:
    params = {"img/head/kernel": jnp.ones((2, 2)), "llm/final_norm/scale": jnp.ones((2,))}
    cfg = OptimSection(lr=0.1, warmup_fraction=0.0, weight_decay=0.5, grad_clip_norm=0.0)
    tx = optim.make_optimizer(cfg, 100)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["img/head/kernel"]).max()) > 0
    assert float(jnp.abs(updates["llm/final_norm/scale"]).max()) == 0.0


def test_preset_names_used_by_the_demo_exist_in_modeling() -> None:
    assert "tiny" in modeling.PRESETS and "paligemma2-3b-448" in modeling.PRESETS
