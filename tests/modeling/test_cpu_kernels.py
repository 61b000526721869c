"""The CPU decode kernel (modeling/cpu_kernels.py): its arithmetic, its build and its fallback,
and generation with it against generation with XLA's matmuls."""

from __future__ import annotations

import logging
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeling
from modeling import cpu_kernels
from modeling import generate as gen
from modeling.model import MASK_VALUE
from modeling.runtime import PaliGemma

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(),
                                  reason="CPU decode kernel not built here (see the log)")


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 9, 17])
@pytest.mark.parametrize("k,n", [(1, 1), (70, 47), (64, 48), (33, 100), (512, 1000)])
def test_panel_matmul_equals_numpy(m: int, k: int, n: int) -> None:
    """Every row count (full and partial row tiles), widths that are and are not multiples of
    the panel width, a one-element contraction."""
    rng = np.random.default_rng(m * 1000 + k + n)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = rng.normal(size=(k, n)).astype(np.float32)
    panels = cpu_kernels.pack(jnp.asarray(w))
    assert panels.data.shape[1:] == (k, cpu_kernels.load().width)
    got = np.asarray(jax.jit(cpu_kernels.matmul)(jnp.asarray(x), panels))
    want = x.astype(np.float64) @ w.astype(np.float64)
    assert got.shape == (m, n)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@needs_kernel
def test_panel_matmul_inside_a_while_loop_on_8_rows() -> None:
    """The decode loop's use: loop-invariant packed weights, rows that change every step."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (96, 96)).astype(np.float32)
    x = rng.normal(size=(8, 96)).astype(np.float32)
    panels = cpu_kernels.pack(jnp.asarray(w))

    def run(x, step):
        return jax.lax.fori_loop(0, 5, lambda i, c: jnp.tanh(step(c)), x)

    got = jax.jit(lambda x: run(x, lambda c: cpu_kernels.matmul(c, panels)))(x)
    want = jax.jit(lambda x: run(x, lambda c: c @ w))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_a_failing_compiler_raises_with_its_message(tmp_path, monkeypatch) -> None:
    compiler = tmp_path / "broken-c++"
    compiler.write_text("#!/bin/sh\necho 'panel_matmul.cc:1: error: no such luck' >&2\nexit 3\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path / "cache"))
    with pytest.raises(cpu_kernels.KernelBuildError, match=r"exit 3.*no such luck"):
        cpu_kernels.build()
    assert os.listdir(tmp_path / "cache") == []  # no half-written library left behind


def test_no_compiler_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels.shutil, "which", lambda name: None)
    with pytest.raises(cpu_kernels.KernelBuildError, match="no C.. compiler"):
        cpu_kernels.build()


def test_unavailable_kernel_is_logged_and_switched_off(monkeypatch, caplog) -> None:
    def fail():
        raise cpu_kernels.KernelBuildError("g++ failed (exit 1): boom")

    monkeypatch.setattr(cpu_kernels, "load", fail)
    with caplog.at_level(logging.WARNING, logger="modeling.cpu_kernels"):
        assert cpu_kernels.available.__wrapped__() is False
    assert "XLA matmuls" in caplog.text and "boom" in caplog.text
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    monkeypatch.setattr(cpu_kernels, "load", lambda: pytest.fail("switched off: must not build"))
    assert cpu_kernels.available.__wrapped__() is False


def test_the_build_is_cached_per_source_and_machine(tmp_path, monkeypatch) -> None:
    if cpu_kernels._compiler() is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path))
    path = cpu_kernels.build()
    assert path.parent == tmp_path and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert cpu_kernels.build() == path and path.stat().st_mtime_ns == mtime  # not rebuilt


@needs_kernel
@pytest.mark.parametrize("strategy,options", [("greedy", {}), ("beam", {"beam_size": 3})])
def test_generation_with_the_kernel_equals_generation_with_xla_matmuls(strategy, options) -> None:
    """Same tokens, batch 1 and a ragged batch of 5 (beam search: 15 rows per step)."""
    config = modeling.PRESETS["tiny"]
    params = modeling.init_params(config, jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    size = config.image_size
    pixels = rng.uniform(-1, 1, (5, size, size, 3)).astype(np.float32)
    prompts = [[2, *rng.integers(3, config.text.vocab_size, n).tolist(), 108] for n in (1, 4, 2, 9, 5)]

    ours = PaliGemma(config, params, eos_id=-1)
    assert isinstance(ours.decode_weights["table"], cpu_kernels.Panels)
    assert isinstance(ours.decode_weights["layers"][0]["gate_up"], cpu_kernels.Panels)

    xla = PaliGemma(config, params, eos_id=-1)
    xla.decode_weights = gen.decode_weights(config, params, False)
    assert xla.decode_weights["table"] is None

    for rows in (1, 5):
        got = ours.generate(pixels[:rows], prompts[:rows], 24, strategy, **options)
        want = xla.generate(pixels[:rows], prompts[:rows], 24, strategy, **options)
        assert got == want
        assert all(len(t) == 24 for t in got)


def _attention_reference(q, k, v, visible, scale, softcap, mask_value):
    """float64 numpy: what the decode step's XLA attention computes."""
    s = np.einsum("bkgh,bkrh->bkgr", q.astype(np.float64), k.astype(np.float64)) * scale
    if softcap:
        s = np.tanh(s / softcap) * softcap
    s = np.where(visible[:, None, None, :], s, mask_value)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bkgr,bkrh->bkgh", p, v.astype(np.float64))


@needs_kernel
@pytest.mark.parametrize("b,kv,g,r,h", [(1, 1, 1, 1, 16), (8, 2, 2, 400, 64), (3, 2, 4, 37, 20),
                                        (2, 1, 8, 129, 256), (1, 3, 3, 5, 7), (4, 2, 1, 17, 100)])
@pytest.mark.parametrize("softcap", [None, 50.0, 1.0])
def test_decode_attention_equals_numpy(b, kv, g, r, h, softcap) -> None:
    """Query groups of 1 to 8 heads, head dims that are and are not multiples of the vector
    width, slot counts with a scalar tail, hidden slots, and a row with no visible slot
    (XLA's softmax then weighs every slot alike; so must the kernel)."""
    rng = np.random.default_rng(b * 100 + r + h)
    q = rng.normal(size=(b, kv, g, h)).astype(np.float32)
    k = rng.normal(size=(b, kv, r, h)).astype(np.float32)
    v = rng.normal(size=(b, kv, r, h)).astype(np.float32)
    visible = rng.random((b, r)) < 0.7
    visible[:, -1] = True
    if b > 1:
        visible[1] = False
    scale = h ** -0.5
    got = jax.jit(lambda *a: cpu_kernels.attention(
        *a, scale=scale, softcap=softcap, mask_value=MASK_VALUE))(q, k, v, visible)
    want = _attention_reference(q, k, v, visible, scale, softcap, MASK_VALUE)
    assert got.shape == (b, kv, g, h) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-6)


@needs_kernel
@pytest.mark.parametrize("r", [3, 40, 333])
def test_decode_attention_is_stable_where_scores_exceed_exps_range(r: int) -> None:
    """Without a soft-cap, scores of +-1000: exp overflows unless the softmax subtracts each
    query head's true maximum (its largest score anywhere among the slots, vector or tail)."""
    rng = np.random.default_rng(r)
    q = (rng.normal(size=(2, 2, 2, 64)) * 30).astype(np.float32)
    k = rng.normal(size=(2, 2, r, 64)).astype(np.float32)
    v = rng.normal(size=(2, 2, r, 64)).astype(np.float32)
    visible = np.ones((2, r), bool)
    visible[1, ::3] = False
    for at in (0, r // 2, r - 1):  # the largest score at the front, the middle, the tail
        k[0, 0, at] = q[0, 0, 0] / np.linalg.norm(q[0, 0, 0]) * 4
        want = _attention_reference(q, k, v, visible, 1.0, None, MASK_VALUE)
        got = cpu_kernels.attention(q, k, v, visible, scale=1.0, softcap=None,
                                    mask_value=MASK_VALUE)
        assert np.isfinite(np.asarray(got)).all()
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_decode_attention_hidden_slots_are_never_read() -> None:
    """A hidden slot holding NaN (a ring slot or a cache tail never written) changes nothing."""
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, 2, 2, 16)).astype(np.float32)
    k = rng.normal(size=(2, 2, 9, 16)).astype(np.float32)
    v = rng.normal(size=(2, 2, 9, 16)).astype(np.float32)
    visible = np.ones((2, 9), bool)
    visible[:, 6:] = False
    want = _attention_reference(q, k, v, visible, 0.25, 50.0, MASK_VALUE)
    k[:, :, 6:], v[:, :, 6:] = np.nan, np.nan
    got = cpu_kernels.attention(q, k, v, visible, scale=0.25, softcap=50.0, mask_value=MASK_VALUE)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=2e-6)


def _decode_step_targets(config, kernel: bool) -> str:
    """The jaxpr of one decode step of `config` with weights packed (or not) for the kernel."""
    params = modeling.init_params(config, jax.random.PRNGKey(0))
    weights = gen.decode_weights(config, params, kernel)
    t = config.text
    cache_len = 40
    cache_dtype = jnp.dtype(config.cache_dtype or config.compute_dtype)
    layers = tuple(gen.KVCache(*(jnp.zeros((2, t.num_kv_heads, gen._ring_size(config, i, cache_len),
                                          t.head_dim), cache_dtype),) * 2)
                   for i in range(t.depth))
    slot_pos = {r: jnp.zeros((2, r), jnp.int32) for r in gen._cache_groups(config, cache_len)}
    return str(jax.make_jaxpr(lambda tok, pos: gen._decode_step(
        config, params, weights, tok, gen.Cache(layers, slot_pos, pos), 30, cache_len))(
            jnp.zeros(2, jnp.int32), jnp.full(2, 31, jnp.int32)))


@needs_kernel
def test_the_decode_step_uses_the_attention_kernel_where_it_fits() -> None:
    config = modeling.PRESETS["tiny"]
    assert cpu_kernels.ATTENTION_TARGET in _decode_step_targets(config, True)
    assert cpu_kernels.ATTENTION_TARGET not in _decode_step_targets(config, False)
    # a bfloat16 cache stays with XLA's attention (the matmuls keep the kernel)
    step = _decode_step_targets(config.replace(cache_dtype="bfloat16"), True)
    assert cpu_kernels.ATTENTION_TARGET not in step and cpu_kernels.MATMUL_TARGET in step


@needs_kernel
@pytest.mark.parametrize("vocab", [1, 5, 16, 17, 100, 16384])
def test_greedy_argmax_equals_greedy_token(vocab: int) -> None:
    """Random rows, ties (the first index wins), a row of -inf, a row of NaN (vocab - 1), an inf
    in the last column, a constant row; vocabularies below, at and past the vector width."""
    rng = np.random.default_rng(vocab)
    x = rng.normal(size=(7, vocab)).astype(np.float32)
    x[1] = np.round(x[1])
    x[2] = -np.inf
    x[3] = np.nan
    x[4, -1] = np.inf
    x[5] = 7.0
    x[6, : vocab // 2] = -np.inf
    got = np.asarray(jax.jit(cpu_kernels.greedy_argmax)(x))
    want = np.asarray(jax.jit(gen.greedy_token)(x))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    assert got[3] == vocab - 1 and got[2] == 0


# ----------------------------------------------------------------------------- bfloat16 weights


@needs_kernel
def test_take_f32_widens_exactly_one_layer_of_a_stacked_bfloat16_weight() -> None:
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(4, 3, 70001)), jnp.bfloat16)  # past one copy chunk
    x = jnp.ones((2, 5))
    got = jax.jit(lambda w, x: cpu_kernels.take_f32(w, 2, x))(w, x)
    assert got.dtype == jnp.float32 and got.shape == (3, 70001)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(w[2]).astype(np.float32))


@needs_kernel
@pytest.mark.parametrize("m,k,v", [(1, 1, 1), (3, 37, 100), (8, 64, 129), (2, 2304, 70)])
def test_matmul_t_bf16_equals_numpy(m: int, k: int, v: int) -> None:
    """Contractions below, at and past the vector width; tables of partial row blocks."""
    rng = np.random.default_rng(m + k + v)
    x = rng.normal(size=(m, k)).astype(np.float32)
    table = jnp.asarray(rng.normal(size=(v, k)), jnp.bfloat16)
    got = np.asarray(jax.jit(cpu_kernels.matmul_t_bf16)(jnp.asarray(x), table))
    want = x.astype(np.float64) @ np.asarray(table).astype(np.float64).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@needs_kernel
@pytest.mark.parametrize("m", [1, 3, 8, 33])
@pytest.mark.parametrize("groups,k,cols", [(1, 1, 1), (2, 37, 300), (4, 64, 16), (1, 70, 513)])
def test_matmul_bf16_multiplies_one_layer_of_a_stacked_weight_in_place(m, groups, k, cols) -> None:
    """Layer 1 of a stacked [3, G, K, N] bfloat16 weight: every group's [K, N] block, column
    counts below, at and past one work item, row counts past the accumulator tile."""
    rng = np.random.default_rng(m + groups + k + cols)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(3, groups, k, cols)), jnp.bfloat16)
    got = np.asarray(jax.jit(lambda x, w: cpu_kernels.matmul_bf16(
        x, cpu_kernels.Bf16Block(w, 1, groups, cols)))(jnp.asarray(x), w))
    layer = np.asarray(w[1]).astype(np.float64)  # [G, K, N]
    want = np.concatenate([x.astype(np.float64) @ layer[g] for g in range(groups)], axis=1)
    assert got.shape == (m, groups * cols)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@needs_kernel
def test_gather_bf16_equals_take_with_clipped_ids() -> None:
    table = jnp.asarray(np.random.default_rng(4).normal(size=(50, 24)), jnp.bfloat16)
    ids = jnp.asarray([[0, 49, 7], [60, -3, 7]], jnp.int32)
    got = jax.jit(cpu_kernels.gather_bf16)(table, ids)
    want = np.asarray(jnp.take(table, ids, axis=0, mode="clip")).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(got), want)


def _generate_bf16(params, config, kernels: bool):
    model = PaliGemma(config, params, batch_buckets=(2,), prompt_buckets=(8,),
                      new_token_buckets=(8,))
    if not kernels:  # XLA everywhere: the weights copied in the compute dtype as before
        model.decode_weights = gen._decode_weights(config, params, False)
    pixels = np.random.default_rng(5).uniform(-1, 1, (2, config.image_size, config.image_size, 3))
    return model, model.generate(pixels.astype(np.float32), [[2, 5, 6, 7, 8], [2, 9]], 8)


@needs_kernel
def test_bfloat16_parameters_generate_the_same_tokens_streamed_as_with_xla_copies(
        monkeypatch) -> None:
    """bfloat16 parameters on the CPU: the decode loop and the prefill read each layer in place
    (`generate.streams_bfloat16`, no copy of the weights up front) and generate exactly the
    tokens of XLA's path, which copies every weight to float32."""
    config = modeling.PRESETS["tiny"]
    params = modeling.init_params(config, jax.random.PRNGKey(7), jnp.bfloat16)
    assert gen.streams_bfloat16(params)
    streamed, tokens = _generate_bf16(params, config, True)
    assert streamed.decode_weights == {"layers": None, "table": None}
    monkeypatch.setattr(gen, "streams_bfloat16", lambda params: False)
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    _, want = _generate_bf16(params, config, False)
    assert tokens == want
