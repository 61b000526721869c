"""Whole runs on a synthetic tree: exact resume, SIGTERM checkpoints, and the exported bundle."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from finetune import optim
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
    flat_a, flat_b = optim.flatten(a["trainable"]), optim.flatten(b["trainable"])
    assert flat_a.keys() == flat_b.keys()
    for path in flat_a:
        np.testing.assert_array_equal(flat_a[path], flat_b[path], err_msg=path)
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


@pytest.mark.slow
def test_a_lora_run_exports_merged_weights_and_a_peft_adapter_of_its_base(
        synth_tree, tiny_config, tmp_path) -> None:
    from modeling import load_pretrained

    base_cfg = tiny_config(synth_tree, tmp_path / "base-work", "optim.steps=2",
                           "eval.every_steps=0", "eval.test_examples=-1")
    train(base_cfg, out_dir=tmp_path / "base")
    cfg = tiny_config(synth_tree, tmp_path / "work", "optim.steps=3", "eval.every_steps=0",
                      "eval.test_examples=-1", "optim.trainable=lora", "optim.lora_rank=2",
                      "optim.lr=0.05", f"model.init={tmp_path / 'base'}")
    run = Run(cfg)
    trainable = optim.flatten(run.state["trainable"])
    assert trainable and all(optim.is_adapter(path) for path in trainable)
    run.close()
    train(cfg, out_dir=tmp_path / "bundle")
    adapter = tmp_path / "bundle" / "peft_adapter"
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 2 and adapter_config["base_model_name_or_path"] == str(
        tmp_path / "base")
    base = optim.flatten(load_pretrained(tmp_path / "base").params)
    tuned = optim.flatten(load_pretrained(tmp_path / "bundle").params)
    pattern = re.compile(cfg.optim.lora_pattern)
    moved = {path for path in base if not np.array_equal(base[path], tuned[path])}
    assert moved and all(pattern.search(path) for path in moved)  # only adapted weights
    # The PEFT adapter on the base is the merged bundle (our reader of peft's format).
    again = optim.flatten(load_pretrained(tmp_path / "base", adapter=adapter).params)
    for path in tuned:
        np.testing.assert_allclose(again[path], tuned[path], rtol=1e-5, atol=1e-6, err_msg=path)


def test_a_checkpoint_of_the_flat_parameter_layout_of_before_resumes(tmp_path) -> None:
    """Run checkpoints written before the step ran on nnx.split state keyed parameters (and
    their Adam moments) by '/'-joined path, LoRA adapters as '<weight>#lora_a'."""
    import jax.numpy as jnp

    from finetune.config import OptimSection
    from finetune.step import init_state

    rng = np.random.default_rng(0)
    old = {"llm/layers/mlp/linear#lora_a": rng.normal(size=(2, 8, 2)).astype(np.float32),
           "llm/layers/mlp/linear#lora_b": rng.normal(size=(2, 2, 4)).astype(np.float32),
           "llm/final_norm/scale": rng.normal(size=(4,)).astype(np.float32)}
    tx = optim.make_optimizer(OptimSection(lr=0.1, warmup_fraction=0.0, grad_clip_norm=0.0), 10)
    state = init_state({k: jnp.asarray(v) for k, v in old.items()}, tx, jax.random.key(0))
    grads = jax.tree.map(jnp.ones_like, state["trainable"])
    _, state["opt_state"] = tx.update(grads, state["opt_state"], state["trainable"])
    checkpoints = RunCheckpoints(tmp_path / "ckpt", keep=1, best_metric="x", async_save=False)
    checkpoints.save(3, state, {"position": 1})
    checkpoints.wait()

    nested = {"llm": {"layers": {"mlp": {"linear_lora": {
        "lora_a": jnp.zeros((2, 8, 2)), "lora_b": jnp.zeros((2, 2, 4))}}},
        "final_norm": {"scale": jnp.zeros((4,))}}}
    target = init_state(nested, tx, jax.random.key(1))
    restored = checkpoints.restore_state(3, target)
    checkpoints.close()
    assert jax.tree.structure(restored) == jax.tree.structure(target)
    trainable = optim.flatten(restored["trainable"])
    np.testing.assert_array_equal(trainable["llm/layers/mlp/linear_lora/lora_a"],
                                  old["llm/layers/mlp/linear#lora_a"])
    np.testing.assert_array_equal(trainable["llm/final_norm/scale"], old["llm/final_norm/scale"])
    adam = next(node for node in jax.tree.leaves(
        restored["opt_state"], is_leaf=lambda x: hasattr(x, "mu")) if hasattr(node, "mu"))
    mu = optim.flatten(adam.mu)
    np.testing.assert_allclose(mu["llm/layers/mlp/linear_lora/lora_b"], 0.1, rtol=1e-6)
    assert int(restored["step"]) == 0
