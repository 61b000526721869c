"""Bundles written before the model moved to Flax NNX still load and generate the same tokens.

`data/bundle_format1` was written by `data/make_bundle_format1.py` run on the functional-JAX
model (commit dc7bc62); its greedy and beam tokens and a few logits, computed by that code, are
in `data/bundle_format1_expected.json`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from modeling.bundle import load_bundle
from modeling.model import model_from_params, param_shapes, params_of

DATA = Path(__file__).parent / "data"


def _load(tmp_path: Path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DATA / "bundle_format1", bundle)  # Orbax may touch files it reads
    return load_bundle(bundle, prompt_buckets=(8,), new_token_buckets=(8,), batch_buckets=(2,))


def test_a_bundle_of_the_functional_model_loads_into_the_nnx_tree(tmp_path: Path) -> None:
    model = _load(tmp_path)
    shapes = {k: tuple(v.shape) for k, v in _flat(model.params).items()}
    assert shapes == _flat(param_shapes(model.config))
    nnx_model = model_from_params(model.config, model.params)
    assert all(np.array_equal(a, b) for a, b in zip(
        _flat(params_of(nnx_model)).values(), _flat(model.params).values(), strict=True))


def test_a_bundle_of_the_functional_model_generates_what_it_generated(tmp_path: Path) -> None:
    expected = json.loads((DATA / "bundle_format1_expected.json").read_text())
    model = _load(tmp_path)
    pixels = np.random.default_rng(1).uniform(-1, 1, (2, 28, 28, 3)).astype(np.float32)
    assert model.generate(pixels, expected["prompts"], 8) == expected["greedy"]
    assert model.generate(pixels, expected["prompts"], 8, "beam", beam_size=2) == expected["beam"]
    logits = model.logits(pixels[:1], np.array([[2, 40, 41, 108, 5, 6]]),
                          np.array([[0, 0, 0, 0, 1, 1]]))
    np.testing.assert_allclose(logits[0, -1, :8], expected["logits_0"], rtol=1e-4, atol=1e-5)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key in sorted(tree):
        value = tree[key]
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out
