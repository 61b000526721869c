"""Whole runs on a synthetic tree: exact resume, SIGTERM checkpoints, and the exported bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from finetune.checkpoint import RunCheckpoints
from finetune.config import ConfigError
from finetune.trainer import PREEMPTED_EXIT_CODE, Run, train

ROOT = Path(__file__).resolve().parents[2]


def test_a_best_metric_that_evaluation_does_not_report_is_refused_before_anything_runs(
    tiny_config, tmp_path
) -> None:
    cfg = tiny_config(tmp_path / "data", tmp_path / "work",
                      "checkpoint.best_metric=radgraph_partal")
    with pytest.raises(ConfigError, match="best_metric: unknown metric 'radgraph_partal'"):
        Run(cfg)
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_stopping_and_resuming_gives_the_same_run_as_training_straight(
        synth_tree, tiny_config, tmp_path) -> None:
    overrides = ("optim.steps=4", "eval.every_steps=0", "checkpoint.every_steps=100",
                 "data.augment=true")
    straight = Run(tiny_config(synth_tree, tmp_path / "straight", *overrides))
    straight.train()
    straight.close()

    first = Run(tiny_config(synth_tree, tmp_path / "resumed", *overrides))
    assert first.train(stop_at_step=2).steps == 2
    first.close()
    second = Run(tiny_config(synth_tree, tmp_path / "resumed", *overrides))
    assert second.train().steps == 4
    second.close()

    a, b = jax.device_get(straight.state), jax.device_get(second.state)
    assert int(a["step"]) == int(b["step"]) == 4
    np.testing.assert_array_equal(a["rng"], b["rng"])
    for path in a["trainable"]:
        np.testing.assert_array_equal(a["trainable"][path], b["trainable"][path], err_msg=path)
    for x, y in zip(jax.tree.leaves(a["opt_state"]), jax.tree.leaves(b["opt_state"]), strict=True):
        np.testing.assert_array_equal(x, y)

    def losses(workdir):
        rows = (workdir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(row)["loss"] for row in rows]

    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_the_process_exits(
        synth_tree, tmp_path, compilation_cache) -> None:
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "radreport", "finetune", "--config", "tiny",
               "--data", str(synth_tree), "--workdir", str(workdir),
               "--set", "optim.steps=100000", "--set", "eval.every_steps=0",
               "--set", "checkpoint.every_steps=1000000", "--set", "checkpoint.async_save=true"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=str(compilation_cache))
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.5)
    assert process.poll() is None, process.stdout.read().decode()[-2000:]
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == PREEMPTED_EXIT_CODE, output[-2000:]
    logged = max(json.loads(line)["step"] for line in metrics.read_text().splitlines())
    checkpoints = RunCheckpoints(workdir / "checkpoints", keep=2, best_metric="radgraph_partial")
    saved = checkpoints.latest_step()
    checkpoints.close()
    assert saved is not None and logged <= saved < 100000
    assert "resume" in output


@pytest.mark.slow
def test_the_exported_bundle_holds_held_out_scores_under_evaluation_key_names(
        synth_tree, tiny_config, tmp_path) -> None:
    import evaluation
    from modeling import load_pretrained

    cfg = tiny_config(synth_tree, tmp_path / "work", "optim.steps=4", "eval.every_steps=4")
    result = train(cfg, out_dir=tmp_path / "bundle")
    metadata = json.loads((tmp_path / "bundle" / "metadata.json").read_text())
    assert set(evaluation.headline_keys()) <= set(metadata["scores"])
    assert metadata["scores_split"] == "test" and metadata["scores_examples"] > 0
    assert metadata["checkpoint_step"] == result.best_step == 4
    assert metadata["data"]["target"] == "findings_impression"
    model = load_pretrained(tmp_path / "bundle")
    size = model.config.image_size
    text = model.generate_text(np.zeros((1, size, size, 3), np.float32), ["INDICATION: cough"], 4)
    assert isinstance(text[0], str)
    assert (tmp_path / "work" / "tensorboard").is_dir()
    lines = (tmp_path / "work" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert {"train", "val"} <= {row["kind"] for row in rows}
