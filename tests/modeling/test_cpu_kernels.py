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
