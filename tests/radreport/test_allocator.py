"""radreport.allocator: jemalloc preloaded by re-executing, and why (XLA's large buffers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radreport import allocator

# Runs in a fresh interpreter: re-executes with jemalloc unless switched off, then calls a jitted
# function whose 64 MiB output is freed after each call, and reports the page faults per call.
PROBE = """
import resource
from radreport.allocator import active_allocator, reexec_with_jemalloc
reexec_with_jemalloc()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 4096), jnp.float32)
f = jax.jit(lambda a: jnp.sin(a) * 2.0)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x).block_until_ready()
print(active_allocator(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

needs_jemalloc = pytest.mark.skipif(
    allocator.find_jemalloc() is None or not sys.platform.startswith("linux"),
    reason="jemalloc is not installed on this machine",
)


def _fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    monkeypatch.setattr(allocator, "_CANDIDATES", (str(library),))
    return str(library)


def test_env_preloads_the_library_and_keeps_what_was_there(tmp_path, monkeypatch):
    library = _fake_library(tmp_path, monkeypatch)
    env = allocator.jemalloc_env({"PATH": "/bin", "LD_PRELOAD": "/opt/other.so"})
    assert env["LD_PRELOAD"] == f"{library} /opt/other.so"
    assert env["MALLOC_CONF"] == allocator.MALLOC_CONF
    assert env["PATH"] == "/bin"
    # a user's own jemalloc settings win
    assert allocator.jemalloc_env({"MALLOC_CONF": "narenas:2"})["MALLOC_CONF"] == "narenas:2"


def test_env_changes_nothing_when_off_preloaded_or_missing(tmp_path, monkeypatch):
    _fake_library(tmp_path, monkeypatch)
    assert allocator.jemalloc_env({allocator.ENV_SWITCH: "system"}) is None
    assert allocator.jemalloc_env({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) is None
    monkeypatch.setattr(allocator, "_CANDIDATES", (str(tmp_path / "absent.so"),))
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    assert allocator.find_jemalloc() is None
    assert allocator.jemalloc_env({}) is None


def _env_without_preload() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}


def _probe(**env: str) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", PROBE],
                          env={**_env_without_preload(), "JAX_PLATFORMS": "cpu", **env},
                          capture_output=True, text=True, timeout=300, check=True)
    name, faults = done.stdout.split()
    return name, float(faults)


@needs_jemalloc
def test_reexec_keeps_xla_buffers_mapped():
    """The system allocator unmaps a freed 64 MiB XLA buffer, so each call faults it in again
    (16,384 pages); after the re-exec jemalloc reuses it (measured: 7-8 faults per call, at
    times ~3,300: some other 13 MB that jemalloc maps anew)."""
    system_name, system_faults = _probe(**{allocator.ENV_SWITCH: "system"})
    je_name, je_faults = _probe()
    assert (system_name, je_name) == ("system", "jemalloc")
    assert system_faults > 8000  # 64 MiB / 4 KiB = 16,384 pages touched anew
    assert je_faults < system_faults / 3


@needs_jemalloc
def test_radreport_main_reexecutes_before_the_command(repo_root):
    """`radreport.cli.main` (the `radreport` script, `python -m radreport`, and so the workers
    that service/system.py starts with it) runs its command on jemalloc: the command here is
    replaced by one that prints the allocator of the process it runs in."""
    code = ("import radreport.cli as cli\n"
            "from radreport.allocator import active_allocator\n"
            "cli.app = lambda: print(active_allocator())\n"
            "cli.main()\n")
    done = subprocess.run([sys.executable, "-c", code], env=_env_without_preload(),
                          capture_output=True, text=True, timeout=120, check=True, cwd=repo_root)
    assert done.stdout.strip() == "jemalloc"
