"""`evaluate_bundle`: a tiny random-weight bundle generates the reports of a synthetic MIMIC-CXR
split."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jax")


@pytest.mark.slow
def test_bundle_run_generates_every_study_and_scores_it(tmp_path):
    from evaluation.run import evaluate_bundle
    from modeling.bundle import save_bundle
    from modeling.config import PRESETS
    from modeling.model import param_shapes
    from modeling.tokenizer import train_tokenizer
    from radiology.mimic import read_dataset
    from radiology.synth.dataset import write_dataset

    data = write_dataset(tmp_path / "data", 4, seed=0, workers=1, image_format="jpg", size=(64, 64),
                         progress=False)
    tokenizer = train_tokenizer(
        ["no pleural effusion", "the heart is normal", "mild cardiomegaly", "describe en"] * 20,
        tmp_path / "tokenizer.model", vocab_size=400,
    )
    config = PRESETS["tiny"]
    rng = np.random.default_rng(0)

    def leaf(shape):
        return rng.normal(0.0, 0.02, shape).astype(np.float32)

    import jax

    params = jax.tree_util.tree_map(
        leaf, param_shapes(config), is_leaf=lambda x: isinstance(x, tuple)
    )
    bundle = save_bundle(tmp_path / "bundle", config, params, tokenizer, {"purpose": "test"},
                         generation={"max_new_tokens": 4}, prompt="describe en\n")

    results = evaluate_bundle(bundle, data, None, tmp_path / "out", batch_size=4, resamples=10,
                              progress=False)

    studies = [str(example.study_id) for example in read_dataset(data)]
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p["id"] for p in predictions] == studies
    assert all(p["reference"] for p in predictions)
    assert results["reports"] == len(studies)
    assert results["source"]["max_new_tokens"] == 4
    assert (tmp_path / "out" / "report.html").exists()
