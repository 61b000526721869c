"""Offline evaluation runs: predictions or a model bundle -> results.json, per_report.csv and
report.html.

- :func:`evaluate_predictions` scores a JSONL or CSV file of ``id, hypothesis, reference`` rows.
- :func:`evaluate_bundle` generates the reports of a MIMIC-CXR-layout split with a model bundle
  (batched, with a progress bar), then scores them the same way.
- :func:`evaluate_texts` is the common core: every metric of :func:`evaluation.score` with its
  bootstrap CI (:mod:`evaluation.stats`), per-finding CheXpert F1, the conventions and library
  versions, and the three output files. With `baseline` texts it adds a paired test.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation import registry
from evaluation.clinical import clinical_f1, finding_names, label_many
from evaluation.radgraph import extract_many
from evaluation.scoring import conventions, report_statistics, score_per_report
from evaluation.stats import NOTES, bootstrap, paired_test

__all__ = [
    "PredictionsFileError",
    "evaluate_bundle",
    "evaluate_predictions",
    "evaluate_texts",
    "read_predictions",
]

REQUIRED_COLUMNS = ("id", "hypothesis", "reference")


class PredictionsFileError(ValueError):
    """A predictions file cannot be read as id / hypothesis / reference rows."""


def read_predictions(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """Read ids, hypotheses and references from a `.jsonl` or `.csv` file (UTF-8).

    JSONL: one object per line with string fields `id`, `hypothesis`, `reference`.
    CSV: a header row naming at least those three columns.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsFileError(f"predictions file {path} does not exist")
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PredictionsFileError(
                        f"{path.name} line {number} is not valid JSON ({error.msg}); expected one "
                        "object per line with id, hypothesis, reference"
                    ) from None
                if not isinstance(row, dict):
                    raise PredictionsFileError(f"{path.name} line {number} is not a JSON object")
                row["_line"] = number
                rows.append(row)
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise PredictionsFileError(
                    f"{path.name} lacks the column(s) {missing}; "
                    f"the header must name {list(REQUIRED_COLUMNS)}"
                )
            for number, row in enumerate(reader, start=2):
                row["_line"] = number
                rows.append(row)
    else:
        raise PredictionsFileError(
            f"{path.name}: use a .jsonl or .csv file of {list(REQUIRED_COLUMNS)}"
        )
    ids, hypotheses, references = [], [], []
    for row in rows:
        for column in REQUIRED_COLUMNS:
            value = row.get(column)
            if value is None:
                raise PredictionsFileError(f"{path.name} line {row['_line']} has no {column!r}")
        if not isinstance(row["hypothesis"], str) or not isinstance(row["reference"], str):
            raise PredictionsFileError(
                f"{path.name} line {row['_line']}: hypothesis and reference must be text"
            )
        ids.append(str(row["id"]))
        hypotheses.append(row["hypothesis"])
        references.append(row["reference"])
    if not ids:
        raise PredictionsFileError(f"{path.name} holds no predictions")
    if len(set(ids)) != len(ids):
        raise PredictionsFileError(f"{path.name} repeats ids; each study must appear once")
    return ids, hypotheses, references


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers."""
    versions = {"python": platform.python_version()}
    for name in ("radreport", "numpy", "matplotlib", "pycocoevalcap", "radgraph"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def evaluate_texts(
    ids: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    out_dir: str | Path,
    *,
    source: dict[str, Any] | None = None,
    baseline: Sequence[str] | None = None,
    resamples: int = 500,
    seed: int = 0,
    worst: int = 10,
    **options: Any,
) -> dict[str, Any]:
    """Score paired texts, write results.json, per_report.csv and report.html; return the results.

    Every metric of :func:`evaluation.report_statistics` gets its bootstrap CI, its family and
    the description of its variant (:mod:`evaluation.registry`); headline metrics come first.
    """
    if not (len(ids) == len(hypotheses) == len(references)):
        raise ValueError("ids, hypotheses and references must have the same length")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    statistics = report_statistics(hypotheses, references, **options)
    intervals = bootstrap(statistics, resamples=resamples, seed=seed)
    used = conventions(**options)
    chosen = registry.resolve_options(options)
    headline = [k for k in registry.headline_keys() if k in intervals]
    metrics = {
        name: {**intervals[name], "family": registry.family_of(name).name,
               "variant": registry.metric(name).describe(chosen)}
        for name in [*headline, *(k for k in intervals if k not in headline)]
    }
    names_14, names_5 = finding_names()
    hyp_labels, ref_labels = label_many(hypotheses), label_many(references)
    per_finding = {
        policy: clinical_f1(hyp_labels, ref_labels, names_14, policy).per_finding
        for policy in ("negative", "positive")
    }
    per_report = score_per_report(hypotheses, references, **options)
    results: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": source or {},
        "reports": len(ids),
        "conventions": used,
        "statistics": {**NOTES, "resamples": resamples, "seed": seed, "level": 0.95},
        "metrics": metrics,
        "per_finding_f1": per_finding,
        "findings_5": names_5,
        "versions": library_versions(),
    }
    if baseline is not None:
        if len(baseline) != len(hypotheses):
            raise ValueError("the baseline must hold one report per study, in the same order")
        results["paired_test"] = {
            "note": "system A = baseline, system B = this run",
            "metrics": paired_test(
                report_statistics(baseline, references, **options), statistics,
                resamples=resamples, seed=seed,
            ),
        }
    _write_per_report(out / "per_report.csv", ids, hypotheses, references, per_report)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_report(out / "report.html", results, ids, hypotheses, references, per_report,
                 worst=worst, extractor=options.get("extractor"))
    return results


def _write_per_report(
    path: Path, ids: Sequence[str], hypotheses: Sequence[str], references: Sequence[str],
    per_report: dict[str, list[float]],
) -> None:
    columns = list(per_report)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "hypothesis", "reference", "hypothesis_words", "reference_words",
                         *columns])
        for i, study in enumerate(ids):
            writer.writerow([
                study, hypotheses[i], references[i],
                len(hypotheses[i].split()), len(references[i].split()),
                *(f"{per_report[c][i]:.6f}" for c in columns),
            ])


def evaluate_predictions(
    path: str | Path, out_dir: str | Path, *, baseline: str | Path | None = None, **options: Any
) -> dict[str, Any]:
    """Score a predictions file (JSONL or CSV: id, hypothesis, reference) into `out_dir`.

    `baseline`: a second predictions file for the same studies (matched by id) to compare against.
    Other keyword options go to :func:`evaluate_texts` (resamples, seed, tokenizer, uncertain, ...).
    """
    ids, hypotheses, references = read_predictions(path)
    baseline_texts = None
    if baseline is not None:
        base_ids, base_hyps, _ = read_predictions(baseline)
        by_id = dict(zip(base_ids, base_hyps, strict=True))
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise PredictionsFileError(
                f"the baseline lacks {len(missing)} of the studies (e.g. {missing[0]!r}); a paired "
                "test needs both systems on the same studies"
            )
        baseline_texts = [by_id[i] for i in ids]
    source = {"predictions": Path(path).name}
    if baseline is not None:
        source["baseline"] = Path(baseline).name
    return evaluate_texts(ids, hypotheses, references, out_dir, source=source,
                          baseline=baseline_texts, **options)


def evaluate_bundle(
    bundle_dir: str | Path,
    data_dir: str | Path,
    split: str | None = "test",
    out_dir: str | Path = "evaluation-run",
    batch_size: int = 8,
    *,
    max_studies: int | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Generate the reports of a MIMIC-CXR-layout split with a model bundle, then score them.

    Writes `predictions.jsonl` (id, hypothesis, reference) beside the other outputs, so the run
    can be re-scored later with :func:`evaluate_predictions`.
    """
    ids, hypotheses, references, info = generate_split(
        bundle_dir, data_dir, split, batch_size=batch_size, max_studies=max_studies,
        max_new_tokens=max_new_tokens, progress=progress,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for study, hypothesis, reference in zip(ids, hypotheses, references, strict=True):
            row = {"id": study, "hypothesis": hypothesis, "reference": reference}
            handle.write(json.dumps(row) + "\n")
    return evaluate_texts(ids, hypotheses, references, out, source=info, **options)


# ---------------------------------------------------------------------------------------------
# Generation from a model bundle


DEFAULT_PROMPT = "describe en\n"


def generate_split(
    bundle_dir: str | Path,
    data_dir: str | Path,
    split: str | None = "test",
    *,
    batch_size: int = 8,
    max_studies: int | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> tuple[list[str], list[str], list[str], dict[str, Any]]:
    """Generate one report per study of the split: (ids, hypotheses, references, run info).

    Studies come from :func:`radiology.mimic.read_dataset` (frontal image, target text); images
    go through :func:`modeling.preprocess.preprocess_batch`; the bundle's prompt and generation
    defaults (`config.json`) are used unless `max_new_tokens` is given.
    """
    from tqdm import tqdm  # noqa: PLC0415

    from modeling import load_pretrained  # noqa: PLC0415
    from modeling.preprocess import preprocess_batch  # noqa: PLC0415
    from radiology.mimic import read_dataset  # noqa: PLC0415

    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    bundle = Path(bundle_dir)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    generation = config.get("generation") or {}
    prompt = config.get("prompt") or DEFAULT_PROMPT
    new_tokens = int(max_new_tokens or generation.get("max_new_tokens", 256))
    strategy = str(generation.get("strategy", "greedy"))
    studies = list(read_dataset(data_dir, split=split, limit=max_studies))
    if not studies:
        raise ValueError(f"split {split!r} of {data_dir} holds no usable studies")
    model = load_pretrained(bundle)
    size = model.config.image_size
    ids: list[str] = []
    hypotheses: list[str] = []
    references: list[str] = []
    with tqdm(total=len(studies), unit="study", desc="generating reports",
              disable=not progress) as bar:
        for start in range(0, len(studies), batch_size):
            batch = studies[start : start + batch_size]
            pixels = preprocess_batch([example.load_image() for example in batch], size)
            texts = model.generate_text(pixels, [prompt] * len(batch), new_tokens, strategy)
            for example, text in zip(batch, texts, strict=True):
                ids.append(str(example.study_id))
                hypotheses.append(text.strip())
                references.append(example.target)
            bar.update(len(batch))
    info = {"bundle": bundle.name, "data": Path(data_dir).name, "split": split, "prompt": prompt,
            "max_new_tokens": new_tokens, "strategy": strategy, "batch_size": batch_size,
            "studies": len(ids)}
    return ids, hypotheses, references, info


# ---------------------------------------------------------------------------------------------
# report.html

#: report.html shows the worst reports by this per-report metric, ties broken by the second.
WORST_BY = ("radgraph_partial", "rougeL")

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1180px;
  color:#1d2330}
h1{font-size:1.6rem;margin-bottom:.2rem}
h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde}
.meta{color:#5a6170;font-size:.9rem} table{border-collapse:collapse;font-size:.88rem}
td,th{padding:.25rem .6rem;border-bottom:1px solid #eef;text-align:left;vertical-align:top}
th{background:#f4f6fb} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:1rem}.plots figure{margin:0}
.plots img{max-width:100%;border:1px solid #eef}
.plots figcaption{font-weight:600;font-size:.95rem;margin-bottom:.3rem}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8rem;margin:.6rem 0 1.2rem}
.pair div{background:#fafbfe;border:1px solid #e4e7f0;border-radius:6px;padding:.6rem;
  line-height:1.6}
.pair h4{margin:0 0 .3rem;font-size:.8rem;color:#5a6170;text-transform:uppercase;
  letter-spacing:.04em}
mark{border-radius:3px;padding:0 2px} mark.present{background:#c9f0d1}
mark.absent{background:#f8d0d0;text-decoration:line-through}
mark.uncertain{background:#fde9b0} mark.anatomy{background:#dce6fb}
.legend mark{margin-right:.6rem} .conv td:first-child{white-space:nowrap;color:#5a6170}
"""


def _entity_kind(label: str) -> str:
    lower = label.lower()
    if "anat" in lower:
        return "anatomy"
    if "absent" in lower or lower.endswith("-da"):
        return "absent"
    if "uncertain" in lower or lower.endswith("-u"):
        return "uncertain"
    return "present"


def _token_spans(text: str, graph: dict[str, Any]) -> list[tuple[int, int]] | None:
    """Character spans of the extractor's tokens, found by the tokenization its entities fit."""
    import re  # noqa: PLC0415

    entities = graph.get("entities", {}).values()
    for pattern in (r"\w+|[^\w\s]", r"\S+"):
        spans = [m.span() for m in re.finditer(pattern, text)]
        try:
            if all(
                " ".join(text[a:b] for a, b in spans[e["start_ix"] : e["end_ix"] + 1])
                == e["tokens"]
                for e in entities
            ):
                return spans
        except (KeyError, TypeError):
            return None
    return None


def highlight(text: str, graph: dict[str, Any]) -> str:
    """HTML of `text` (escaped) with each extracted entity marked present / absent / uncertain /
    anatomy."""
    import html  # noqa: PLC0415

    if not text.strip():
        return "<em>(empty)</em>"
    spans = _token_spans(text, graph)
    if spans is None:
        return html.escape(text)
    marks: dict[int, tuple[int, str, str]] = {}
    for entity in graph.get("entities", {}).values():
        start, end = spans[entity["start_ix"]][0], spans[entity["end_ix"]][1]
        marks[start] = (end, _entity_kind(str(entity["label"])), str(entity["label"]))
    parts, position = [], 0
    for start in sorted(marks):
        if start < position:
            continue
        end, kind, label = marks[start]
        parts.append(html.escape(text[position:start]))
        parts.append(f'<mark class="{kind}" title="{html.escape(label)}">'
                     f"{html.escape(text[start:end])}</mark>")
        position = end
    parts.append(html.escape(text[position:]))
    return "".join(parts)


def _png(figure: Any) -> str:
    import base64  # noqa: PLC0415
    import io  # noqa: PLC0415

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(
    results: dict[str, Any], hypotheses: Sequence[str], references: Sequence[str]
) -> list[tuple[str, str]]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plots = []
    metrics = results["metrics"]
    scale = [n for n in metrics if registry.metric(n).headline and registry.metric(n).bounded]
    figure, axis = plt.subplots(figsize=(9, 0.32 * len(scale) + 1))
    for row, name in enumerate(scale[::-1]):
        ci = metrics[name]
        # A percentile interval need not contain the estimate (e.g. macro F1 of rare findings).
        below, above = max(ci["value"] - ci["low"], 0.0), max(ci["high"] - ci["value"], 0.0)
        axis.errorbar(ci["value"], row, xerr=[[below], [above]],
                      fmt="o", color=registry.family(ci["family"]).colour, capsize=3)
    axis.set_yticks(range(len(scale)), scale[::-1])
    axis.set_xlim(0, 1)
    axis.set_xlabel(f"score with {int(results['statistics']['level'] * 100)} % bootstrap CI "
                    f"({results['statistics']['resamples']} resamples)")
    axis.grid(axis="x", alpha=0.3)
    plots.append(("Metrics with confidence intervals", _png(figure)))
    plt.close(figure)

    policy = results["conventions"]["chexpert_uncertain"]
    findings = results["per_finding_f1"][policy]
    names = list(findings)
    figure, axis = plt.subplots(figsize=(9, 4))
    values = [findings[n]["f1"] for n in names]
    colours = ["#d79b00" if n in results["findings_5"] else "#f0c78a" for n in names]
    bars = axis.bar(range(len(names)), values, color=colours)
    for bar, name in zip(bars, names, strict=True):
        axis.annotate(f"n={findings[name]['support']}",
                      (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=7)
    axis.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    axis.set_ylim(0, 1.08)
    axis.set_ylabel(f"F1 (uncertain as {policy})")
    axis.set_title("CheXpert-style F1 per finding (dark: the 5; n = positive references)",
                   fontsize=9)
    plots.append(("F1 per finding", _png(figure)))
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(9, 3.2))
    hyp_len = [len(t.split()) for t in hypotheses]
    ref_len = [len(t.split()) for t in references]
    top = max([*hyp_len, *ref_len, 1])
    bins = range(0, top + 5, max(1, top // 40))
    axis.hist(ref_len, bins=bins, alpha=0.55, label="reference", color="#6c8ebf")
    axis.hist(hyp_len, bins=bins, alpha=0.55, label="generated", color="#d79b00")
    axis.set_xlabel("words per report")
    axis.set_ylabel("reports")
    axis.legend()
    plots.append(("Report length distributions", _png(figure)))
    plt.close(figure)
    return plots


def write_report(
    path: str | Path,
    results: dict[str, Any],
    ids: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    per_report: dict[str, list[float]],
    *,
    worst: int = 10,
    extractor: str | None = None,
) -> Path:
    """Write a self-contained report.html (plots as embedded PNG, every text escaped)."""
    import html  # noqa: PLC0415

    esc = html.escape
    rows = []
    for name, ci in results["metrics"].items():
        rows.append(
            f"<tr><td>{esc(name)}</td><td class=num>{ci['value']:.4f}</td>"
            f"<td class=num>[{ci['low']:.4f}, {ci['high']:.4f}]</td>"
            f"<td>{esc(ci['variant'])}</td></tr>"
        )
    paired = ""
    if "paired_test" in results:
        paired_rows = "".join(
            f"<tr><td>{esc(n)}</td><td class=num>{r['a']:.4f}</td><td class=num>{r['b']:.4f}</td>"
            f"<td class=num>{r['delta']:+.4f}</td>"
            f"<td class=num>[{r['low']:+.4f}, {r['high']:+.4f}]</td>"
            f"<td class=num>{r['p_value']:.4f}</td></tr>"
            for n, r in results["paired_test"]["metrics"].items()
        )
        paired = (
            "<h2>Paired comparison with the baseline</h2>"
            "<table><tr><th>metric</th><th>baseline</th><th>this run</th><th>delta</th>"
            f"<th>95 % CI</th><th>p</th></tr>{paired_rows}</table>"
        )
    conventions = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{esc(str(v))}</td></tr>"
        for k, v in {**results["conventions"], **results["statistics"]}.items()
    )
    versions = ", ".join(f"{esc(k)} {esc(v)}" for k, v in results["versions"].items())
    plots = "".join(
        f'<figure><figcaption>{esc(title)}</figcaption>'
        f'<img alt="{esc(title)}" src="data:image/png;base64,{data}"></figure>'
        for title, data in _plots(results, hypotheses, references)
    )
    order_key, tie_key = WORST_BY
    order = sorted(range(len(ids)),
                   key=lambda i: (per_report[order_key][i], per_report[tie_key][i]))
    chosen = order[:worst]
    texts = [hypotheses[i] for i in chosen] + [references[i] for i in chosen]
    graphs = extract_many(texts, extractor)
    shown = [key for family in registry.families() for key in family.examples if key in per_report]
    examples = []
    for k, i in enumerate(chosen):
        scores = ", ".join(f"{esc(n)} {per_report[n][i]:.3f}" for n in shown)
        examples.append(
            f"<h3>{esc(ids[i])}</h3><p class=meta>{scores}</p><div class=pair>"
            f"<div><h4>generated</h4>{highlight(hypotheses[i], graphs[k])}</div>"
            f"<div><h4>reference</h4>{highlight(references[i], graphs[len(chosen) + k])}</div>"
            "</div>"
        )
    source = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in results["source"].items())
    run_line = (f"<p class=meta>{results['reports']} reports &middot; {esc(results['created'])} "
                f"&middot; {source}<br>{versions}</p>")
    metrics_table = ("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>95 % CI</th>"
                     f"<th>variant</th></tr>{''.join(rows)}</table>")
    extractor_name = esc(results["conventions"]["radgraph_extractor"])
    legend_marks = ("<mark class=present>present</mark><mark class=absent>absent</mark>"
                    "<mark class=uncertain>uncertain</mark>")
    document = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Report generation evaluation</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body><h1>Report generation evaluation</h1>
{run_line}
{metrics_table}
{paired}
<h2>Plots</h2><div class=plots>{plots}</div>
<h2>Worst {len(chosen)} reports by {esc(order_key)}</h2>
<p class="legend meta">Extracted entities ({extractor_name} extractor):
{legend_marks}
<mark class=anatomy>anatomy</mark></p>
{''.join(examples)}
<h2>Conventions</h2><table class=conv>{conventions}</table>
</body></html>
"""
    path = Path(path)
    path.write_text(document, encoding="utf-8")
    return path
