"""`radreport finetune --plan`: the real train step compiled for N simulated devices, no weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.config import ConfigError
from finetune.plan import Attempt, TrainPlan, format_plan, micro_batches

ROOT = Path(__file__).resolve().parents[2]


def test_micro_batches_split_the_global_batch_into_whole_accumulation_steps() -> None:
    assert micro_batches(256, 8) == [1, 2, 4, 8, 16, 32]
    assert micro_batches(24, 8) == [1]
    with pytest.raises(ConfigError, match="multiple of the 8 devices"):
        micro_batches(12, 8)


def _attempt(micro_batch: int, peak: int, fits: bool) -> Attempt:
    memory = {"arguments": 1, "outputs": 0, "temporaries": peak - 1, "aliased": 0, "code": 0,
              "peak": peak}
    return Attempt(micro_batch, 32 // micro_batch, 1, 2, 2, 1, peak - 3, memory, fits)


def test_the_plan_chooses_the_largest_micro_batch_that_fits_and_says_so() -> None:
    plan = TrainPlan("run", "paligemma2-3b-448", 8, {"data": 1, "fsdp": 8}, 80 * 10**9, 0.1, 256,
                     "all", True, True, "bfloat16", 3, 3, [_attempt(1, 50 * 10**9, True),
                                                     _attempt(2, 90 * 10**9, False)])
    assert plan.budget == 72 * 10**9 and plan.chosen.micro_batch == 1
    assert TrainPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert "optim.grad_accum_steps=32" in format_plan(plan)
    plan.attempts = plan.attempts[1:]
    assert not plan.fits and "model.remat=true" not in format_plan(plan)
    plan.remat = False
    assert "DOES NOT FIT" in format_plan(plan) and "model.remat=true" in format_plan(plan)


@pytest.mark.slow
def test_the_3b_224_recipe_is_planned_on_eight_simulated_devices_from_a_real_compile() -> None:
    command = [sys.executable, "-m", "radreport", "finetune", "--config", "mimic-3b-224", "--plan",
               "--devices", "8", "--device-memory", "80GB", "--micro-batch", "1", "--json"]
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(done.stdout)
    assert plan["devices"] == 8 and plan["mesh"] == {"data": 1, "fsdp": 8}
    assert plan["micro_batch"] == 1 and plan["grad_accum_steps"] == 256 // 8
    (attempt,) = plan["attempts"]
    # float32 master weights and two Adam moments, sharded 8 ways (a few small tensors replicate).
    params = plan["parameters_total"] * 4 / 8
    assert attempt["parameters"] == pytest.approx(params, rel=0.01)
    assert attempt["optimizer_state"] == pytest.approx(2 * params, rel=0.01)
    assert attempt["activations"] > 0 and attempt["memory"]["temporaries"] > attempt["gradients"]
    assert attempt["memory"]["peak"] >= attempt["parameters"] + attempt["optimizer_state"]
    assert plan["fits"] is (attempt["memory"]["peak"] <= 0.9 * 80e9)
