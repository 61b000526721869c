"""Parameter selection, LoRA adapters and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import modeling
from finetune import optim
from finetune.config import ConfigError, OptimSection
from finetune.step import init_state, make_train_step
from modeling.formats import unflatten


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
    again = optim.flatten(unflatten(flat))
    assert again.keys() == flat.keys()


LORA_TARGETS = {
    "llm/layers/attn/q_einsum/w", "llm/layers/attn/kv_einsum/w",
    "llm/layers/attn/attn_vec_einsum/w", "llm/layers/mlp/gating_einsum", "llm/layers/mlp/linear",
}


def _lora_split(tiny_model, rank: int = 4, alpha: float = 16.0):
    config, params, _ = tiny_model
    cfg = OptimSection(trainable="lora", lora_rank=rank, lora_alpha=alpha)
    return optim.split_model(optim.build_model(config, params, cfg, jax.random.key(0)), "lora")


def test_lora_trains_nnx_lora_params_next_to_attention_and_mlp_weights(tiny_model) -> None:
    config, params, _ = tiny_model
    split = _lora_split(tiny_model)
    adapters = optim.flatten(split.trainable)
    assert {p.rsplit("_lora/", 1)[0] for p in adapters} == LORA_TARGETS
    assert all(optim.is_adapter(p) for p in adapters)
    # The frozen part is exactly the base model; the adapters are nnx.LoRAParams.
    assert optim.flatten(split.frozen).keys() == optim.flatten(params).keys()
    model = nnx.merge(split.graphdef, split.trainable, split.frozen)
    assert isinstance(model.llm.layers.attn.q_einsum.w_lora, nnx.LoRA)
    lora_state = nnx.state(model, nnx.LoRAParam)
    assert optim.flatten(nnx.to_pure_dict(lora_state)).keys() == adapters.keys()
    layers, width = config.text.depth, config.text.width
    assert adapters["llm/layers/attn/q_einsum/w_lora/lora_a"].shape == (layers, width, 4)
    assert adapters["llm/layers/mlp/linear_lora/lora_b"].shape == (layers, 4, width)
    assert split.axes["llm/layers/mlp/linear_lora/lora_a"][0] == "layers"
    # B starts at zero: merged weights are the base weights.
    merged = optim.flatten(optim.merged_params(split.graphdef, split.trainable, split.frozen))
    for path, value in optim.flatten(params).items():
        np.testing.assert_array_equal(merged[path], value, err_msg=path)


def test_lora_delta_is_alpha_over_r_times_a_rank_r_update_of_the_read_axis(tiny_model) -> None:
    config, params, _ = tiny_model
    split = _lora_split(tiny_model, rank=4, alpha=8.0)
    ones = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.ones_like(v) if path[-1].key == "lora_b" else v, split.trainable)
    merged = optim.merged_params(split.graphdef, ones, split.frozen)
    base = params["llm"]["layers"]["attn"]["q_einsum"]["w"]
    delta = merged["llm"]["layers"]["attn"]["q_einsum"]["w"] - base
    assert delta.shape == (config.text.depth, config.text.num_heads, config.text.width,
                           config.text.head_dim)
    a = ones["llm"]["layers"]["attn"]["q_einsum"]["w_lora"]["lora_a"]  # [L, D, r]
    # With B = 1, every (head, head-dim) column of the q delta is A @ 1 * alpha / r over D.
    np.testing.assert_allclose(delta[1, 0, :, 2], a[1].sum(-1) * 2.0, rtol=1e-5)
    assert np.linalg.matrix_rank(np.asarray(delta[0]).transpose(1, 0, 2).reshape(
        config.text.width, -1)) <= 4


def test_lora_training_moves_only_the_adapters(tiny_model, make_batch) -> None:
    config, params, _ = tiny_model
    split = _lora_split(tiny_model, rank=2, alpha=4.0)
    tx = optim.make_optimizer(OptimSection(lr=1e-2, warmup_fraction=0.0), 10)
    step = jax.jit(make_train_step(split.graphdef, tx, compute_dtype=jnp.float32))
    state = init_state(split.trainable, tx, jax.random.PRNGKey(1))
    batch = make_batch(config)
    losses = []
    for _ in range(3):
        state, metrics = step(state, split.frozen, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    trained = optim.flatten(state["trainable"])
    assert trained.keys() == optim.flatten(split.trainable).keys()
    assert float(jnp.abs(trained["llm/layers/mlp/linear_lora/lora_b"]).max()) > 0
    merged = optim.merged_params(split.graphdef, state["trainable"], split.frozen)
    base = params["llm"]["layers"]["mlp"]["linear"]
    assert not np.allclose(merged["llm"]["layers"]["mlp"]["linear"], base)
    # The merged plain model computes what the adapted model computed in training.
    adapted = nnx.merge(split.graphdef, state["trainable"], split.frozen)
    args = (jnp.asarray(batch["pixel_values"]), jnp.asarray(batch["input_ids"]),
            jnp.asarray(batch["token_type_ids"]), jnp.asarray(batch["input_mask"]))
    np.testing.assert_allclose(modeling.forward(config, merged, *args), adapted(*args),
                               rtol=1e-5, atol=1e-5)


def test_a_lora_pattern_that_matches_nothing_is_a_config_error(tiny_model) -> None:
    config, params, _ = tiny_model
    cfg = OptimSection(trainable="lora", lora_pattern="^llm/nothing$")
    with pytest.raises(ConfigError, match="llm/layers/mlp/linear"):
        optim.build_model(config, params, cfg, jax.random.key(0))


def test_weight_decay_only_touches_matching_paths() -> None:
    params = {"img": {"head": {"kernel": jnp.ones((2, 2)),
                               "kernel_lora": {"lora_a": jnp.ones((2, 1))}}},
              "llm": {"final_norm": {"scale": jnp.ones((2,))}}}
    cfg = OptimSection(lr=0.1, warmup_fraction=0.0, weight_decay=0.5, grad_clip_norm=0.0,
                       weight_decay_pattern=r"kernel")
    tx = optim.make_optimizer(cfg, 100)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    updates = optim.flatten(updates)
    assert float(jnp.abs(updates["img/head/kernel"]).max()) > 0
    assert float(jnp.abs(updates["llm/final_norm/scale"]).max()) == 0.0
    assert float(jnp.abs(updates["img/head/kernel_lora/lora_a"]).max()) == 0.0


def test_preset_names_used_by_the_demo_exist_in_modeling() -> None:
    assert "tiny" in modeling.PRESETS and "paligemma2-3b-448" in modeling.PRESETS
