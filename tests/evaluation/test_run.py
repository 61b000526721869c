"""Offline evaluation runs: a predictions file in; results.json, per_report.csv and report.html
out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluation import score
from evaluation.run import PredictionsFileError, evaluate_predictions, highlight, read_predictions

REFERENCES = [
    "Mild cardiomegaly. Small left pleural effusion.",
    "No pneumothorax. The lungs are clear.",
    "Right lower lobe consolidation, likely pneumonia.",
    "Moderate pulmonary edema. Possible right basilar atelectasis.",
    "Endotracheal tube 4 cm above the carina. No focal consolidation.",
    "Heart size is normal. No pleural effusion or pneumothorax.",
]
HYPOTHESES = [
    "Mild cardiomegaly. No pleural effusion.",
    "No pneumothorax. Lungs are clear.",
    "Left lower lobe consolidation. <script>alert('x')</script>",
    "Mild pulmonary edema.",
    "ET tube above the carina. No consolidation.",
    "Normal heart size. Small right pleural effusion.",
]


def write_jsonl(path: Path, hypotheses: list[str], references: list[str] = REFERENCES) -> Path:
    with path.open("w") as handle:
        for i, (h, r) in enumerate(zip(hypotheses, references, strict=True)):
            handle.write(json.dumps({"id": f"s{i}", "hypothesis": h, "reference": r}) + "\n")
    return path


def test_predictions_run_writes_results_per_report_and_html(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", HYPOTHESES)
    results = evaluate_predictions(predictions, tmp_path / "out", resamples=50)
    stored = json.loads((tmp_path / "out" / "results.json").read_text())
    assert stored["reports"] == len(REFERENCES)
    assert stored["metrics"]["radgraph_partial"]["value"] == pytest.approx(
        score(HYPOTHESES, REFERENCES)["radgraph_partial"]
    )
    for ci in stored["metrics"].values():
        assert ci["low"] <= ci["high"] and ci["resamples"] == 50
        assert ci["variant"]
    assert stored["conventions"]["chexpert_uncertain"] == "negative"
    assert "numpy" in stored["versions"]
    assert set(stored["per_finding_f1"]) == {"negative", "positive"}
    assert results["metrics"].keys() == stored["metrics"].keys()
    with (tmp_path / "out" / "per_report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(len(REFERENCES))]
    assert {"bleu4", "rougeL", "radgraph_partial", "chexpert_example_f1_14"} <= set(rows[0])


def test_report_html_escapes_report_text_and_embeds_plots(tmp_path):
    predictions = write_jsonl(tmp_path / "p.jsonl", HYPOTHESES)
    evaluate_predictions(predictions, tmp_path / "out", resamples=20)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert page.count("data:image/png;base64,") >= 3
    assert '<mark class="present"' in page and '<mark class="absent"' in page


def test_csv_and_jsonl_inputs_read_the_same_rows(tmp_path):
    jsonl = write_jsonl(tmp_path / "p.jsonl", HYPOTHESES)
    table = tmp_path / "p.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "reference", "hypothesis"])
        for i, (h, r) in enumerate(zip(HYPOTHESES, REFERENCES, strict=True)):
            writer.writerow([f"s{i}", r, h])
    assert read_predictions(table) == read_predictions(jsonl) == (
        [f"s{i}" for i in range(len(REFERENCES))], HYPOTHESES, REFERENCES
    )


def test_baseline_adds_a_paired_test(tmp_path):
    run = write_jsonl(tmp_path / "run.jsonl", HYPOTHESES)
    base = write_jsonl(tmp_path / "base.jsonl", ["The lungs are clear."] * len(REFERENCES))
    results = evaluate_predictions(run, tmp_path / "out", baseline=base, resamples=50)
    paired = results["paired_test"]["metrics"]["bleu1"]
    assert paired["delta"] == pytest.approx(paired["b"] - paired["a"])
    assert 0 < paired["p_value"] <= 1


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ('{"id": 1, "hypothesis": "a"}\n', ".jsonl", "has no 'reference'"),
        ("not json\n", ".jsonl", "not valid JSON"),
        ("id,hypothesis\n1,a\n", ".csv", "lacks the column"),
        ('{"id": 1, "hypothesis": "a", "reference": "b"}\n' * 2, ".jsonl", "repeats ids"),
        ("", ".txt", "use a .jsonl or .csv"),
    ],
)
def test_bad_predictions_files_are_refused_with_the_reason(tmp_path, content, suffix, message):
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    with pytest.raises(PredictionsFileError, match=message):
        read_predictions(path)


def test_highlight_marks_entities_by_certainty_and_escapes():
    graph = {"entities": {
        "1": {"tokens": "effusion", "label": "OBS-DA", "start_ix": 2, "end_ix": 2, "relations": []},
        "2": {"tokens": "pneumonia", "label": "Observation::uncertain", "start_ix": 5,
              "end_ix": 5, "relations": []},
    }}
    marked = highlight("No pleural effusion. Possible pneumonia <b>", graph)
    assert '<mark class="absent" title="OBS-DA">effusion</mark>' in marked
    assert '<mark class="uncertain"' in marked and ">pneumonia</mark>" in marked
    assert marked.endswith("&lt;b&gt;")


def test_cli_evaluate_scores_a_predictions_file(tmp_path):
    from radreport.cli import app

    path = write_jsonl(tmp_path / "p.jsonl", HYPOTHESES)
    result = CliRunner().invoke(
        app, ["evaluate", str(path), "--out", str(tmp_path / "cli"), "--resamples", "20"]
    )
    assert result.exit_code == 0, result.output
    assert "radgraph_partial" in result.output
    assert (tmp_path / "cli" / "report.html").exists()


def test_cli_evaluate_reports_a_bad_file_without_a_traceback(tmp_path):
    from radreport.cli import app

    path = tmp_path / "p.csv"
    path.write_text("id,text\n1,a\n")
    result = CliRunner().invoke(app, ["evaluate", str(path), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2
    assert "lacks the column" in result.output
