"""Vision warm-up labels, the learning-curve plot and the multi-host greedy decoder."""

from __future__ import annotations

import json
import time

import jax
import numpy as np
import pytest

from finetune import decode
from finetune.plot import plot_learning_curve, plotted_metrics
from finetune.vision_warmup import label_matrix, warm_up_vision


class _Study:
    def __init__(self, labels: dict) -> None:
        self.labels = labels


def test_warmup_targets_count_positive_and_uncertain_labels_only() -> None:
    studies = [_Study({"Edema": 1.0, "Cardiomegaly": 0.0}),
               _Study({"Edema": -1.0, "Cardiomegaly": None}),
               _Study({"Edema": None, "Cardiomegaly": 1.0})]
    matrix, names = label_matrix(studies)
    assert names == ["Cardiomegaly", "Edema"]
    np.testing.assert_array_equal(matrix, [[0, 1], [0, 1], [1, 0]])


def _bright_or_dark(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8 random uint8 images and one label: is the image brighter than mid-grey."""
    images = np.random.default_rng(seed).integers(0, 255, (8, size, size), dtype=np.uint8)
    return images, (images.mean(axis=(1, 2)) > 127).astype(np.float32)[:, None]


def test_warmup_trains_the_vision_tower_and_keeps_its_structure(tiny_model) -> None:
    config, params, _ = tiny_model
    images, labels = _bright_or_dark(config.image_size, 0)
    warm, history = warm_up_vision(config, params["img"], images, labels, steps=20, lr=1e-2,
                                   batch_size=4, seed=0, augment=False)
    assert jax.tree.structure(warm) == jax.tree.structure(params["img"])
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                         warm, params["img"]))
    assert any(moved) and history[-1]["step"] == 20


def test_warmup_reports_held_out_label_f1(tiny_model) -> None:
    config, params, _ = tiny_model
    images, labels = _bright_or_dark(config.image_size, 1)
    logged: list[str] = []
    _, history = warm_up_vision(config, params["img"], images, labels, steps=80, lr=1e-2,
                                batch_size=4, seed=0, augment=False, log=logged.append,
                                validation=(images, labels))
    assert history[-1]["step"] == 80
    # Brightness is learnt within ~40 steps; the held-out F1 must show it (here on the same images).
    assert history[-1]["val_label_micro_f1"] >= 0.9
    assert "held-out label micro-F1" in logged[-1]


def test_warmup_stops_at_its_deadline(tiny_model) -> None:
    config, params, _ = tiny_model
    images, labels = _bright_or_dark(config.image_size, 1)
    logged: list[str] = []
    _, history = warm_up_vision(config, params["img"], images, labels, steps=1_000_000, lr=1e-2,
                                batch_size=4, seed=0, augment=False, log=logged.append,
                                validation=(images, labels), deadline=time.time() + 2.0)
    assert history and history[-1]["step"] < 1_000_000
    assert "stopped at the time budget, of 1000000 planned" in logged[-1]
    assert "held-out label micro-F1" in logged[-1]


def test_the_learning_curve_is_drawn_from_metrics_jsonl(tmp_path) -> None:
    rows = [{"step": s, "kind": "train", "loss": 3.0 / s} for s in range(1, 30)]
    rows += [{"step": 10, "kind": "val", "chexpert_micro_f1_5": 0.4, "radgraph_partial": 0.3,
              "bleu4": 0.1},
             {"step": 29, "kind": "test", "chexpert_micro_f1_5": 0.8, "radgraph_partial": 0.6}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = plot_learning_curve(tmp_path, tmp_path / "curve.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_the_learning_curve_shows_the_bounded_summary_metrics_of_the_registry() -> None:
    import evaluation

    def same(hypotheses: list[str], references: list[str], options: dict) -> list[bool]:
        return [h == r for h, r in zip(hypotheses, references, strict=True)]

    metric = evaluation.Metric("exact_match", "exact match", "identical texts", summary=True)
    exact = evaluation.MetricFamily.mean_of("exact", metric, same)
    evaluation.register(exact)
    try:
        plotted = plotted_metrics()
    finally:
        evaluation.unregister("exact")
    assert [key for key, _, _ in plotted] == [
        "bleu4", "rougeL", "radgraph_partial", "chexpert_micro_f1_5", "exact_match",
    ]  # CIDEr-D is not in [0, 1]
    assert ("radgraph_partial", "RadGraph-style F1 (partial)", 0.5) in plotted


@pytest.mark.slow
def test_the_fixed_shape_decoder_matches_the_cached_decoder(tiny_model) -> None:
    from modeling.runtime import PaliGemma

    config, params, forward = tiny_model
    rng = np.random.default_rng(1)
    pixels = rng.uniform(-1, 1, (2, config.image_size, config.image_size, 3)).astype(np.float32)
    prompts = [[2, 5, 6, 7, 9], [2, 8, 9]]
    cached = PaliGemma(config, params, None, eos_id=1).generate(pixels, prompts, 6)
    ids = np.zeros((2, 5), np.int32)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    greedy = jax.jit(decode.make_greedy_decoder(forward, eos_id=1, max_new_tokens=6))
    out = np.asarray(greedy(params, pixels, ids, np.asarray([5, 3], np.int32)))
    for row in range(2):
        tokens = out[row].tolist()
        tokens = tokens[: tokens.index(1)] if 1 in tokens else tokens
        assert tokens == cached[row]
