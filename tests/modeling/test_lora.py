"""LoRA on the NNX model: nnx.LoRA adapters next to any matmul weight, folded back exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import modeling
from modeling import model as M
from modeling.lora import LoRAError, adaptable_paths, add_lora, merge_lora

CONFIG = modeling.PRESETS["tiny"].replace(text={"sliding_window": None, "vocab_size": 64})


def _inputs(batch: int = 2, length: int = 6):
    size = CONFIG.image_size
    pixels = jax.random.uniform(jax.random.key(2), (batch, size, size, 3), minval=-1, maxval=1)
    ids = jax.random.randint(jax.random.key(3), (batch, length), 0, 64)
    types = jnp.asarray([[0] * (length // 2) + [1] * (length - length // 2)] * batch)
    return pixels, ids, types


def _perturbed(model: nnx.Module) -> nnx.Module:
    """The model with every adapter's B moved off zero (random), so adapters change outputs."""
    graphdef, adapters, rest = nnx.split(model, nnx.LoRAParam, ...)
    leaves, tree = jax.tree.flatten(nnx.to_pure_dict(adapters))
    keys = jax.random.split(jax.random.key(4), len(leaves))
    moved = [x + 0.05 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, moved), nnx.to_pure_dict(rest))


def test_every_matmul_weight_of_both_towers_can_take_an_adapter() -> None:
    model = M.PaliGemma2(CONFIG, rngs=nnx.Rngs(0))
    paths = adaptable_paths(model)
    assert "img/head/kernel" in paths and "llm/layers/mlp/linear" in paths
    assert "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel" in paths
    assert not any("norm" in p or "embedder" in p or p.endswith("bias") for p in paths)
    with pytest.raises(LoRAError, match="llm/layers/attn/q_einsum/w"):
        add_lora(model, "^nothing$", 2, 4.0, nnx.Rngs(1))


def test_an_adapted_model_equals_its_merged_weights_in_both_towers() -> None:
    params = M.init_params(CONFIG, jax.random.key(0))
    model = M.model_from_params(CONFIG, params)
    pattern = (r"^llm/layers/|^img/head/kernel$"
               r"|^img/Transformer/encoderblock/MultiHeadDotProductAttention_0/(query|out)/")
    adapted = add_lora(model, pattern, rank=2, alpha=4.0, rngs=nnx.Rngs(1))
    assert len(adapted) == 8
    # B = 0: the adapted model is its base model.
    pixels, ids, types = _inputs()
    np.testing.assert_array_equal(model(pixels, ids, types), M.forward(CONFIG, params, pixels,
                                                                       ids, types))
    model = _perturbed(model)
    merged = merge_lora(model)
    assert jax.tree.structure(merged) == jax.tree.structure(params)  # plain params again
    expected = model(pixels, ids, types)
    assert float(jnp.abs(expected - M.forward(CONFIG, params, pixels, ids, types)).max()) > 1e-2
    np.testing.assert_allclose(M.forward(CONFIG, merged, pixels, ids, types), expected,
                               rtol=1e-5, atol=1e-5)
    # Weights without an adapter are left as they were.
    np.testing.assert_array_equal(merged["img"]["embedding"]["kernel"],
                                  params["img"]["embedding"]["kernel"])


def test_adapters_are_lora_params_the_base_state_leaves_out() -> None:
    model = M.PaliGemma2(CONFIG, rngs=nnx.Rngs(0))
    add_lora(model, r"^llm/layers/attn/q_einsum/w$", rank=3, alpha=3.0, rngs=nnx.Rngs(1))
    adapter = model.llm.layers.attn.q_einsum.w_lora
    assert isinstance(adapter, nnx.LoRA) and adapter.scale == 1.0
    assert isinstance(adapter.lora_a, nnx.LoRAParam)
    depth, width = CONFIG.text.depth, CONFIG.text.width
    heads, head_dim = CONFIG.text.num_heads, CONFIG.text.head_dim
    assert adapter.lora_a.shape == (depth, width, 3)
    assert adapter.lora_b.shape == (depth, 3, heads * head_dim)
    assert not np.any(adapter.lora_b[...])
    base = M.params_of(model)
    assert "w_lora" not in base["llm"]["layers"]["attn"]["q_einsum"]
    assert jax.tree.structure(base) == jax.tree.structure(M.abstract_params(CONFIG))
