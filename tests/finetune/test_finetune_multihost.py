"""Multi-host training for real: two processes x 4 CPU devices joined by `jax.distributed`.

Each process is the `radreport finetune` command a GPU host or TPU worker would run, with
--coordinator/--num-processes/--process-id; the devices talk over gloo. One scenario, kept
short because it runs in CI: a SIGTERM to one process stops both at the same step with one
complete checkpoint; both resume from it; every loss equals the one-process, 8-device run's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune.checkpoint import RunCheckpoints
from finetune.trainer import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ("optim.batch_size=8", "optim.steps=1000", "eval.every_steps=0",
            "eval.test_examples=-1", "checkpoint.every_steps=1000000", "log_every=1")


def _command(data: Path, workdir: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "radreport", "finetune", "--config", "tiny",
               "--data", str(data), "--workdir", str(workdir)]
    for setting in SETTINGS:
        command += ["--set", setting]
    return command + list(extra)


def _env(devices: int, cache: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_COMPILATION_CACHE_DIR=str(cache))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(data: Path, workdir: Path, cache: Path, *extra: str) -> list[subprocess.Popen]:
    """Two processes of 4 devices each, one run."""
    coordinator = f"127.0.0.1:{_free_port()}"
    return [
        subprocess.Popen(
            _command(data, workdir, "--coordinator", coordinator, "--num-processes", "2",
                     "--process-id", str(i), *extra),
            cwd=ROOT, env=_env(4, cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for i in range(2)
    ]


def _finish(processes: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.communicate()[0].decode()) for p in processes]


def _losses(workdir: Path) -> dict[int, float]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.slow
def test_two_hosts_stop_together_resume_exactly_and_match_one_host(
        synth_tree: Path, tmp_path: Path, compilation_cache: Path) -> None:
    workdir = tmp_path / "two-hosts"
    processes = _launch(synth_tree, workdir, compilation_cache)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in processes):
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert all(p.poll() is None for p in processes), _finish(processes)
    processes[1].send_signal(signal.SIGTERM)  # one host is preempted; the other is not told
    for code, output in _finish(processes):
        assert code == PREEMPTED_EXIT_CODE, output[-3000:]
    checkpoints = RunCheckpoints(workdir / "checkpoints", keep=2, best_metric="radgraph_partial")
    saved = checkpoints.latest_step()
    checkpoints.close()
    assert saved is not None and saved >= 2
    assert max(_losses(workdir)) == saved  # both stopped after the same step, and saved it

    resumed = _finish(_launch(synth_tree, workdir, compilation_cache,
                              "--stop-at-step", str(saved + 2)))
    for code, output in resumed:
        assert code == 0, output[-3000:]
    assert f"resumed from the checkpoint of step {saved}" in resumed[0][1]  # process 0 logs

    one_host = tmp_path / "one-host"
    done = subprocess.run(_command(synth_tree, one_host, "--stop-at-step", str(saved + 2)),
                          cwd=ROOT, env=_env(8, compilation_cache), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two, one = _losses(workdir), _losses(one_host)
    assert sorted(two) == sorted(one) == list(range(1, saved + 3))
    assert [two[s] for s in sorted(two)] == pytest.approx([one[s] for s in sorted(one)], rel=1e-5)
