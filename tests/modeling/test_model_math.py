"""Model building blocks: the prefix-LM mask, embedding scaling, soft-caps, padding, and a
forward pass that is differentiable and runs in bfloat16."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeling.config import ModelConfig, TextConfig
from modeling.model import embed_tokens, make_attn_mask
from modeling.model import forward as _forward
from tests.helpers.models import CONFIG_A, random_params, random_pixels

forward = jax.jit(_forward, static_argnums=0)

IDS = np.array([[2, 40, 41, 108, 50, 51, 52, 1]], np.int32)
TYPES = np.array([[0, 0, 0, 0, 1, 1, 1, 1]], np.int32)


def test_prefix_lm_mask_is_bidirectional_on_prefix_and_causal_on_suffix():
    mask = make_attn_mask(jnp.array([[True] * 6]), jnp.array([[0, 0, 0, 1, 1, 1]]))
    expected = np.array([
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ], bool)
    assert np.array_equal(np.asarray(mask[0]), expected)


def test_padding_tokens_are_masked_out_of_every_row():
    mask = make_attn_mask(jnp.array([[True, True, False]]), jnp.array([[0, 1, 1]]))
    assert not np.asarray(mask)[0, :, 2].any() and not np.asarray(mask)[0, 2].any()


def test_text_embedding_scale_is_rounded_to_the_table_dtype():
    config = ModelConfig(text=TextConfig(width=3584))
    table = jnp.ones((3, 3584), jnp.bfloat16)
    out = embed_tokens(config, table, jnp.array([[1]]))
    assert float(out[0, 0, 0]) == 59.75  # bf16(sqrt(3584)), not 59.866


def test_right_padding_does_not_change_the_logits_of_real_tokens():
    params = random_params(CONFIG_A, 1)
    pixels = random_pixels(CONFIG_A, 1)
    short = forward(CONFIG_A, params, pixels, IDS[:, :6], TYPES[:, :6])
    padded_ids = np.concatenate([IDS[:, :6], np.zeros((1, 5), np.int32)], 1)
    padded_types = np.concatenate([TYPES[:, :6], np.ones((1, 5), np.int32)], 1)
    mask = np.arange(11)[None] < 6
    padded = forward(CONFIG_A, params, pixels, padded_ids, padded_types, mask)
    np.testing.assert_allclose(np.asarray(padded[:, :6]), np.asarray(short), atol=1e-5)


def test_final_logit_softcap_is_tanh_of_the_uncapped_logits():
    params = random_params(CONFIG_A, 2)
    pixels = random_pixels(CONFIG_A, 1)
    plain = forward(CONFIG_A, params, pixels, IDS, TYPES)
    capped_config = CONFIG_A.replace(text={"final_logits_softcap": 0.5})
    capped = forward(capped_config, params, pixels, IDS, TYPES)
    np.testing.assert_allclose(np.asarray(capped), 0.5 * np.tanh(np.asarray(plain) / 0.5),
                               atol=1e-6)
    assert np.abs(np.asarray(capped)).max() <= 0.5


def test_forward_is_differentiable_under_jit():
    params = random_params(CONFIG_A, 3)
    pixels = random_pixels(CONFIG_A, 2)
    ids, types = np.repeat(IDS, 2, 0), np.repeat(TYPES, 2, 0)

    @jax.jit
    def loss(p):
        logits = _forward(CONFIG_A, p, pixels, ids[:, :-1], types[:, :-1])
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, ids[:, 1:, None], -1))

    grads = jax.grad(loss)(params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(norms))
    assert np.linalg.norm(np.asarray(grads["img"]["embedding"]["kernel"])) > 0  # reaches the image


def test_bfloat16_compute_with_float32_params_stays_close():
    params = random_params(CONFIG_A, 4)
    pixels = random_pixels(CONFIG_A, 1)
    full = np.asarray(forward(CONFIG_A, params, pixels, IDS, TYPES))
    half = forward(CONFIG_A.replace(compute_dtype="bfloat16"), params, pixels, IDS, TYPES)
    assert half.dtype == jnp.float32
    assert np.abs(np.asarray(half) - full).max() < 0.05 * np.abs(full).max()


@pytest.mark.slow
def test_rematerialised_forward_gives_the_same_gradients():
    params = random_params(CONFIG_A, 5)
    pixels = random_pixels(CONFIG_A, 1)

    def loss(p, remat):
        return jnp.sum(_forward(CONFIG_A, p, pixels, IDS, TYPES, remat=remat) ** 2)

    plain = jax.jit(jax.grad(lambda p: loss(p, False)))(params)
    remat = jax.jit(jax.grad(lambda p: loss(p, True)))(params)
    leaves = zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat), strict=True)
    for a, b in leaves:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_unrolled_layer_scans_give_the_same_logits_and_gradients():
    params = random_params(CONFIG_A, 6)
    pixels = random_pixels(CONFIG_A, 2)
    ids, types = np.repeat(IDS, 2, axis=0), np.repeat(TYPES, 2, axis=0)

    def loss(p, unroll):
        return jnp.sum(_forward(CONFIG_A, p, pixels, ids, types, unroll=unroll) ** 2)

    rolled = jax.jit(jax.value_and_grad(lambda p: loss(p, False)))(params)
    unrolled = jax.jit(jax.value_and_grad(lambda p: loss(p, True)))(params)
    np.testing.assert_allclose(float(rolled[0]), float(unrolled[0]), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(rolled[1]), jax.tree_util.tree_leaves(unrolled[1]),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(unrolled[1]))


@pytest.mark.parametrize("remat,unroll,depth",
                         [(False, False, 3), (True, False, 3), (False, True, 3), (False, False, 1)])
def test_last_layer_skipping_leading_queries_equals_the_full_stack(remat, unroll, depth):
    """decode_layers(outputs_from=n) (what `forward` uses to skip the image positions' queries
    and MLP in the last block) is the full stack's x[:, n:], values and gradients; with one
    layer the scan before the last block is empty."""
    import dataclasses

    from modeling.model import decode_layers, embed_inputs, sequence_layout, sliding_window_mask

    config = dataclasses.replace(CONFIG_A, text=dataclasses.replace(CONFIG_A.text, depth=depth))
    params = random_params(config, 7)
    pixels = random_pixels(config, 2)
    ids, types = np.repeat(IDS, 2, axis=0), np.repeat(TYPES, 2, axis=0)
    x = embed_inputs(config, params, pixels, ids)
    valid, mask_ar, positions = sequence_layout(config, types, None)
    mask = make_attn_mask(valid, mask_ar)
    in_prefix = jnp.cumsum(mask_ar, axis=1) == 0
    sliding = sliding_window_mask(config.text, positions, positions, in_prefix, in_prefix)
    n = config.num_image_tokens + 2
    assert x.shape[1] > config.text.sliding_window > 0 and config.text.depth % 2 == 1

    def run(llm, outputs_from):
        out = decode_layers(config, llm, x, positions, mask, sliding, remat=remat, unroll=unroll,
                            outputs_from=outputs_from)
        return out if outputs_from else out[:, n:]

    full = jax.jit(lambda p: run(p, 0))(params["llm"])
    skipped = jax.jit(lambda p: run(p, n))(params["llm"])
    assert skipped.shape == (2, x.shape[1] - n, config.text.width)
    np.testing.assert_allclose(np.asarray(skipped), np.asarray(full), rtol=1e-5, atol=1e-5)
    grads = [jax.jit(jax.grad(lambda p, k=k: jnp.sum(run(p, k) ** 2)))(params["llm"])
             for k in (0, n)]
    for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in grads), strict=True):
        # float32 sums in another order: relative differences of a few 1e-4 on small entries
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)


def test_the_nnx_parameter_state_is_big_vision_s_tree_with_logical_axes() -> None:
    """`nnx.state(model, nnx.Param)` has exactly `param_shapes`' paths and shapes, and every
    parameter names its axes (stacked ones first "layers") for the finetune mesh rules."""
    from flax import nnx

    from modeling.model import PaliGemma2, axis_names, param_shapes

    model = PaliGemma2(CONFIG_A, rngs=nnx.Rngs(0))
    state = nnx.to_flat_state(nnx.state(model, nnx.Param))
    shapes = {"/".join(map(str, path)): tuple(var.shape) for path, var in state}
    expected = jax.tree_util.tree_flatten_with_path(
        param_shapes(CONFIG_A), is_leaf=lambda x: isinstance(x, tuple))[0]
    assert shapes == {"/".join(k.key for k in path): shape for path, shape in expected}
    names = axis_names(CONFIG_A)
    assert names.keys() == shapes.keys()
    assert all(len(names[p]) == len(shapes[p]) for p in shapes)
    assert names["llm/layers/attn/q_einsum/w"] == ("layers", "heads", "embed", "head_dim")
    assert names["img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"] == ("layers", "embed",
                                                                                "mlp")


def test_one_block_decoding_token_by_token_against_its_cache_equals_the_whole_sequence() -> None:
    """`DecoderBlock` run over T tokens at once (training, prefill) and run one token at a time,
    each writing its key and value into a `KVCache` and attending to it (decode), agree."""
    from modeling.model import KVCache, model_from_params, rope_sincos

    params = random_params(CONFIG_A, 8)
    block = model_from_params(CONFIG_A, params).llm.layer(1)  # a global-attention layer
    cfg = CONFIG_A.text
    b, t = 2, 6
    x = jnp.asarray(np.random.default_rng(0).normal(size=(b, t, cfg.width)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    rope = rope_sincos(positions, cfg.head_dim, cfg.rope_base)
    causal = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    whole, kv = block(x, rope, causal)
    assert kv.k.shape == (b, cfg.num_kv_heads, t, cfg.head_dim)
    zeros = jnp.zeros((b, cfg.num_kv_heads, t, cfg.head_dim), jnp.float32)
    cache = KVCache(zeros, zeros)
    for i in range(t):
        visible = jnp.broadcast_to(jnp.arange(t) <= i, (b, t))
        step_rope = tuple(a[:, i: i + 1] for a in rope)
        out, cache = block(x[:, i: i + 1], step_rope, visible, cache=cache, slot=i)
        np.testing.assert_allclose(np.asarray(out[:, 0]), np.asarray(whole[:, i]), rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_allclose(np.asarray(cache.k), np.asarray(kv.k), rtol=1e-6, atol=1e-6)
