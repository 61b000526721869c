"""Mesh shapes, parameter-name sharding rules, and the same loss on 1 and 8 devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jax.sharding import PartitionSpec as P

from finetune.config import MeshSection
from finetune.sharding import MeshError, mesh_shape, param_spec, parse_spec


def test_mesh_shape_fills_the_axis_given_as_minus_one() -> None:
    assert mesh_shape(MeshSection(data=-1, fsdp=4), 8) == (2, 4)
    assert mesh_shape(MeshSection(data=1, fsdp=-1), 8) == (1, 8)


def test_a_mesh_that_does_not_fit_the_devices_is_refused() -> None:
    with pytest.raises(MeshError, match="8 devices"):
        mesh_shape(MeshSection(data=3, fsdp=1), 8)
    with pytest.raises(MeshError, match="does not divide"):
        mesh_shape(MeshSection(data=-1, fsdp=3), 8)


def test_without_rules_the_largest_divisible_axis_is_sharded_over_fsdp() -> None:
    assert param_spec("llm/embedder/input_embedding", (1000, 64), 4) == P("fsdp", None)
    spec = param_spec("llm/layers/attn/q_einsum/w", (3, 4, 64, 16), 4)
    assert spec == P(None, None, "fsdp", None)
    assert param_spec("img/pos_embedding", (1, 5, 6), 4) == P()  # nothing divisible
    assert param_spec("llm/embedder/input_embedding", (1000, 64), 1) == P()


def test_the_first_matching_rule_wins_over_the_default() -> None:
    rules = [(r"embedder", "None,fsdp"), (r".*", "")]
    assert param_spec("llm/embedder/input_embedding", (1000, 64), 4, rules) == P(None, "fsdp")
    assert param_spec("llm/layers/mlp/linear", (3, 128, 64), 4, rules) == P()


def test_specs_parse_axis_names_none_and_combined_axes() -> None:
    assert parse_spec("fsdp,None") == P("fsdp", None)
    assert parse_spec("data+fsdp") == P(("data", "fsdp"))
    assert parse_spec("") == P()


@pytest.mark.slow
def test_eight_simulated_devices_give_the_loss_of_one_device() -> None:
    script = Path(__file__).with_name("multidevice_loss.py")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, str(script), "2", "4", "3"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    assert result["param_shards"]["llm/embedder/input_embedding"] != "PartitionSpec()"
    assert result["single"] == pytest.approx(result["sharded"], rel=1e-4)
    assert result["single"][-1] < result["single"][0]  # and it trains
