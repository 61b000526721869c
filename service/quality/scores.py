"""Quality monitoring: every signed report's AI draft scored against the signed text, and
aggregates.

At signing (`score_report`) the draft and the text of the first signature are compared with every
metric of `evaluation.score` (NLG, RadGraph-style, CheXpert-style), per-report values of
`evaluation.score_per_report`, CheXpert-style labels of both texts, the character and word edit
distances (Levenshtein, rapidfuzz), whether the draft was accepted unchanged, and the time from
draft to signature. Aggregates (`summarize`) recompute corpus metrics with `evaluation.score` over
the stored pairs of each group (overall, per model bundle, per day or week), so a group's numbers
are exactly what `evaluation` gives on those pairs; per finding they compare the draft's and the
signed text's labels (precision, recall, F1, agreement). `render_html` draws the plots.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rapidfuzz.distance import Levenshtein
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.models import (
    Draft,
    DraftScore,
    Report,
    ReportStatus,
    ReportVersion,
    Signature,
    utcnow,
)

log = logging.getLogger(__name__)

HEADLINE = ("bleu4", "rougeL", "cider", "radgraph_partial", "radgraph_combined",
            "chexpert_micro_f1_14", "chexpert_macro_f1_14", "chexpert_micro_f1_5")


def edit_distances(draft: str, signed: str) -> tuple[int, int, float]:
    """(character Levenshtein distance, word Levenshtein distance, characters / longer length)."""
    chars = Levenshtein.distance(draft, signed)
    words = Levenshtein.distance(draft.split(), signed.split())
    return chars, words, chars / max(len(draft), len(signed), 1)


def pair_scores(draft: str, signed: str) -> dict[str, Any]:
    """Every `evaluation` metric of a (draft, signed) pair, per-report values, the texts' labels."""
    from evaluation import score, score_per_report
    from evaluation.clinical import label_many

    corpus = score([draft], [signed])
    per_report = score_per_report([draft], [signed])
    draft_labels, signed_labels = label_many([draft, signed])
    return {
        "metrics": {k: v for k, v in corpus.items() if k != "conventions"},
        "per_report": {k: v[0] for k, v in per_report.items()},
        "conventions": corpus["conventions"],
        "draft_labels": draft_labels,
        "signed_labels": signed_labels,
    }


def score_report(session: Session, report_id: str) -> DraftScore | None:
    """Score a signed report's AI draft against its first signed text (once; None if unsigned)."""
    existing = session.scalar(select(DraftScore).where(DraftScore.report_id == report_id))
    if existing is not None:
        return existing
    first = session.scalars(
        select(Signature).where(Signature.report_id == report_id, Signature.kind == "sign")
        .order_by(Signature.id)
    ).first()
    if first is None:
        return None
    report = session.get(Report, report_id)
    draft = session.get(Draft, report.draft_id)
    signed = session.scalars(
        select(ReportVersion).where(ReportVersion.report_id == report_id,
                                    ReportVersion.version == first.version)
    ).one()
    scores = pair_scores(draft.text, signed.text)
    chars, words, normalized = edit_distances(draft.text, signed.text)
    row = DraftScore(
        report_id=report_id, draft_id=draft.id, bundle_id=draft.bundle_id, signature_id=first.id,
        signed_version=first.version, draft_created_at=draft.created_at, signed_at=first.signed_at,
        draft_to_sign_s=(first.signed_at - draft.created_at).total_seconds(),
        unchanged=draft.text == signed.text,
        edit_distance=chars, edit_distance_words=words, normalized_edit_distance=normalized,
        metrics={**scores["metrics"], "per_report": scores["per_report"],
                 "conventions": scores["conventions"]},
        draft_labels=scores["draft_labels"], signed_labels=scores["signed_labels"],
        scored_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def backfill(session: Session, limit: int = 200) -> int:
    """Score signed reports without a score (e.g. scoring failed at signing); returns how many."""
    scored = select(DraftScore.id).where(DraftScore.report_id == Report.id).exists()
    missing = session.scalars(
        select(Report.id)
        .where(Report.status.in_([ReportStatus.final, ReportStatus.amended]), ~scored)
        .limit(limit)
    ).all()
    for report_id in missing:
        score_report(session, report_id)
    return len(missing)


# --------------------------------------------------------------------------- aggregates


def _pairs(session: Session, rows: Sequence[DraftScore]) -> tuple[list[str], list[str]]:
    draft_text: dict[str, str] = {}
    version_text: dict[tuple[str, int], str] = {}
    for start in range(0, len(rows), 500):  # bounded IN lists
        chunk = rows[start : start + 500]
        drafts = select(Draft.id, Draft.text).where(Draft.id.in_([r.draft_id for r in chunk]))
        draft_text.update(session.execute(drafts).tuples().all())
        versions = session.execute(
            select(ReportVersion.report_id, ReportVersion.version, ReportVersion.text)
            .where(ReportVersion.report_id.in_([r.report_id for r in chunk]))
        ).tuples().all()
        version_text.update({(report_id, version): text for report_id, version, text in versions})
    return ([draft_text[r.draft_id] for r in rows],
            [version_text[(r.report_id, r.signed_version)] for r in rows])


def _group(
    rows: Sequence[DraftScore], drafts: Sequence[str], signed: Sequence[str]
) -> dict[str, Any]:
    from evaluation import score

    times = [r.draft_to_sign_s for r in rows]
    edits = [r.edit_distance for r in rows]
    corpus = score(list(drafts), list(signed))
    return {
        "signed": len(rows),
        "accepted_unchanged": sum(r.unchanged for r in rows),
        "accepted_unchanged_rate": sum(r.unchanged for r in rows) / len(rows),
        "edit_distance_mean": statistics.fmean(edits),
        "edit_distance_median": statistics.median(edits),
        "edit_distance_words_mean": statistics.fmean(r.edit_distance_words for r in rows),
        "normalized_edit_distance_mean": statistics.fmean(r.normalized_edit_distance for r in rows),
        "draft_to_sign_s_median": statistics.median(times),
        "draft_to_sign_s_mean": statistics.fmean(times),
        "draft_to_sign_s_p90": _quantile(times, 0.9),
        "metrics": {k: v for k, v in corpus.items() if k != "conventions"},
    }


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _bucket(when: dt.datetime, period: str) -> str:
    day = when.astimezone(dt.UTC).date()
    if period == "week":
        day = day - dt.timedelta(days=day.weekday())
    return day.isoformat()


def per_finding(
    rows: Sequence[DraftScore], uncertain: str = "negative"
) -> dict[str, dict[str, float]]:
    """Per CheXpert finding: draft against signed labels (precision, recall, F1, agreement)."""
    from evaluation.clinical import clinical_f1, finding_names

    names, _ = finding_names()
    drafts = [r.draft_labels for r in rows]
    signed = [r.signed_labels for r in rows]
    result = clinical_f1(drafts, signed, names, uncertain).per_finding
    for name in names:
        same = sum(1 for d, s in zip(drafts, signed, strict=True) if d.get(name) == s.get(name))
        result[name]["agreement"] = same / len(rows)
        result[name]["draft_positive"] = sum(1 for d in drafts if d.get(name) == 1.0)
        result[name]["signed_positive"] = sum(1 for s in signed if s.get(name) == 1.0)
    return result


def summarize(
    session: Session,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    bundle_id: str | None = None,
    period: str = "day",
) -> dict[str, Any]:
    """Plot-ready quality numbers over signed reports in [since, until): overall, per bundle, over
    time, per finding."""
    from evaluation import conventions

    query = select(DraftScore).order_by(DraftScore.signed_at, DraftScore.id)
    if since is not None:
        query = query.where(DraftScore.signed_at >= since)
    if until is not None:
        query = query.where(DraftScore.signed_at < until)
    if bundle_id is not None:
        query = query.where(DraftScore.bundle_id == bundle_id)
    rows = list(session.scalars(query))
    rejected_query = (select(Report.id, Draft.bundle_id).join(Draft, Draft.id == Report.draft_id)
                      .where(Report.status == ReportStatus.rejected))
    if bundle_id is not None:
        rejected_query = rejected_query.where(Draft.bundle_id == bundle_id)
    rejected_by_bundle: dict[str, int] = defaultdict(int)
    for _, bundle in session.execute(rejected_query).all():
        rejected_by_bundle[bundle] += 1
    open_query = (select(func.count()).select_from(Report)
                  .join(Draft, Draft.id == Report.draft_id)
                  .where(Report.status == ReportStatus.preliminary))
    if bundle_id is not None:
        open_query = open_query.where(Draft.bundle_id == bundle_id)
    open_reports = session.scalar(open_query)
    summary: dict[str, Any] = {
        "window": {"since": since.isoformat() if since else None,
                   "until": until.isoformat() if until else None,
                   "bundle_id": bundle_id, "period": period},
        "conventions": {
            **conventions(),
            "pairs": "hypothesis = AI draft, reference = first signed text",
            "edit_distance": "Levenshtein distance in characters (and in words), rapidfuzz",
        },
        "open_reports": int(open_reports or 0),
        "rejected": sum(rejected_by_bundle.values()),
        "overall": None,
        "per_bundle": {},
        "over_time": [],
        "per_finding": {},
        "assessment": {"accepted": 0, "modified": 0, "rejected": sum(rejected_by_bundle.values())},
    }
    if not rows:
        return summary
    drafts, signed = _pairs(session, rows)
    index = {row.id: i for i, row in enumerate(rows)}

    def group(members: list[DraftScore]) -> dict[str, Any]:
        positions = [index[m.id] for m in members]
        return _group(members, [drafts[i] for i in positions], [signed[i] for i in positions])

    summary["overall"] = group(rows)
    accepted = summary["overall"]["accepted_unchanged"]
    summary["assessment"] = {"accepted": accepted, "modified": len(rows) - accepted,
                             "rejected": summary["rejected"]}
    by_bundle: dict[str, list[DraftScore]] = defaultdict(list)
    by_time: dict[str, list[DraftScore]] = defaultdict(list)
    for row in rows:
        by_bundle[row.bundle_id].append(row)
        by_time[_bucket(row.signed_at, period)].append(row)
    for bundle, members in sorted(by_bundle.items()):
        entry = group(members)
        entry["rejected"] = rejected_by_bundle.get(bundle, 0)
        entry["rejected_rate"] = entry["rejected"] / (entry["rejected"] + entry["signed"])
        summary["per_bundle"][bundle] = entry
    summary["over_time"] = [{"period_start": start, **group(members)}
                            for start, members in sorted(by_time.items())]
    summary["per_finding"] = per_finding(rows)
    summary["series"] = _series(summary)
    return summary


def _series(summary: dict[str, Any]) -> dict[str, Any]:
    """The same numbers as x/y arrays, ready for a plotting library."""
    over_time = summary["over_time"]
    x = [p["period_start"] for p in over_time]
    findings = summary["per_finding"]
    bundles = list(summary["per_bundle"].values())
    return {
        "over_time": {"x": x,
                      **{name: [p["metrics"][name] for p in over_time] for name in HEADLINE},
                      "accepted_unchanged_rate": [p["accepted_unchanged_rate"] for p in over_time],
                      "edit_distance_mean": [p["edit_distance_mean"] for p in over_time],
                      "draft_to_sign_s_median": [p["draft_to_sign_s_median"] for p in over_time],
                      "signed": [p["signed"] for p in over_time]},
        "per_finding": {"x": list(findings), "f1": [f["f1"] for f in findings.values()],
                        "agreement": [f["agreement"] for f in findings.values()]},
        "per_bundle": {"x": list(summary["per_bundle"]),
                       **{name: [b["metrics"][name] for b in bundles] for name in HEADLINE},
                       "accepted_unchanged_rate": [b["accepted_unchanged_rate"] for b in bundles]},
    }


# --------------------------------------------------------------------------- HTML


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(summary: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = summary["series"]
    out = []
    over_time = series["over_time"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for name in ("radgraph_partial", "chexpert_micro_f1_14", "rougeL", "bleu4"):
        axes[0].plot(over_time["x"], over_time[name], marker="o", label=name)
    axes[0].plot(over_time["x"], over_time["accepted_unchanged_rate"], marker="s", linestyle="--",
                 label="accepted unchanged")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("Agreement of drafts with signed reports")
    axes[0].legend(fontsize=7)
    axes[1].plot(over_time["x"], over_time["draft_to_sign_s_median"], marker="o",
                 color="tab:purple")
    axes[1].set_title("Median time from draft to signature (s)")
    for axis in axes:
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    out.append(("Over time", _png(figure)))
    plt.close(figure)
    findings = series["per_finding"]
    figure, axis = plt.subplots(figsize=(11, 3.4))
    positions = range(len(findings["x"]))
    axis.bar([p - 0.2 for p in positions], findings["f1"], width=0.4, label="F1 (draft vs signed)")
    axis.bar([p + 0.2 for p in positions], findings["agreement"], width=0.4,
             label="label agreement")
    axis.set_xticks(list(positions), findings["x"], rotation=40, ha="right", fontsize=7)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7)
    axis.set_title("Per CheXpert finding")
    out.append(("Per finding", _png(figure)))
    plt.close(figure)
    bundles = series["per_bundle"]
    figure, axis = plt.subplots(figsize=(11, 3.0))
    width = 0.8 / 4
    shown = ("radgraph_partial", "chexpert_micro_f1_14", "rougeL", "accepted_unchanged_rate")
    for k, name in enumerate(shown):
        offsets = [i + (k - 1.5) * width for i in range(len(bundles["x"]))]
        axis.bar(offsets, bundles[name], width=width, label=name)
    axis.set_xticks(range(len(bundles["x"])), bundles["x"], fontsize=7)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7)
    axis.set_title("Per model bundle")
    out.append(("Per model bundle", _png(figure)))
    plt.close(figure)
    return out


def render_html(summary: dict[str, Any]) -> str:
    """A small self-contained HTML page: headline numbers, plots, per-bundle/per-finding tables."""
    from html import escape

    head = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<title>Draft quality</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330}"
            "table{border-collapse:collapse;font-size:.85rem}"
            "td,th{padding:.2rem .5rem;border-bottom:1px solid #e6e8f0;text-align:left}"
            "td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}"
            ".meta{color:#5a6170;font-size:.85rem}</style></head><body>")
    parts = [head, "<h1>AI drafts against signed reports</h1>"]
    overall = summary["overall"]
    window = summary["window"]
    parts.append(f"<p class='meta'>window {escape(str(window['since']))} – "
                 f"{escape(str(window['until']))}; "
                 f"bundle {escape(str(window['bundle_id'] or 'all'))}; "
                 f"open reports {summary['open_reports']}; "
                 f"rejected drafts {summary['rejected']}</p>")
    if overall is None:
        parts.append("<p>No signed reports in this window yet.</p></body></html>")
        return "".join(parts)
    headline_heads = "".join(f"<th>{n}</th>" for n in HEADLINE)
    parts.append("<table><tr><th>signed</th><th>accepted unchanged</th>"
                 "<th>median draft→sign (s)</th><th>mean edit distance (chars)</th>"
                 + headline_heads + "</tr>")
    parts.append(f"<tr><td class='n'>{overall['signed']}</td>"
                 f"<td class='n'>{overall['accepted_unchanged_rate']:.1%}</td>"
                 f"<td class='n'>{overall['draft_to_sign_s_median']:.0f}</td>"
                 f"<td class='n'>{overall['edit_distance_mean']:.1f}</td>"
                 + "".join(f"<td class='n'>{overall['metrics'][n]:.3f}</td>" for n in HEADLINE)
                 + "</tr></table>")
    for title, png in _figures(summary):
        parts.append(f"<h2>{escape(title)}</h2>"
                     f"<img alt='{escape(title)}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Per model bundle</h2><table><tr><th>bundle</th><th>signed</th>"
                 "<th>rejected</th><th>accepted unchanged</th>" + headline_heads + "</tr>")
    for bundle, entry in summary["per_bundle"].items():
        parts.append(f"<tr><td>{escape(bundle)}</td><td class='n'>{entry['signed']}</td>"
                     f"<td class='n'>{entry['rejected']}</td>"
                     f"<td class='n'>{entry['accepted_unchanged_rate']:.1%}</td>"
                     + "".join(f"<td class='n'>{entry['metrics'][n]:.3f}</td>" for n in HEADLINE)
                     + "</tr>")
    parts.append("</table><h2>Per finding (draft labels vs signed labels)</h2><table><tr>"
                 "<th>finding</th><th>draft +</th><th>signed +</th><th>precision</th>"
                 "<th>recall</th><th>F1</th><th>agreement</th></tr>")
    for name, entry in summary["per_finding"].items():
        parts.append(f"<tr><td>{escape(name)}</td><td class='n'>{entry['draft_positive']}</td>"
                     f"<td class='n'>{entry['signed_positive']}</td>"
                     f"<td class='n'>{entry['precision']:.3f}</td>"
                     f"<td class='n'>{entry['recall']:.3f}</td><td class='n'>{entry['f1']:.3f}</td>"
                     f"<td class='n'>{entry['agreement']:.1%}</td></tr>")
    parts.append("</table><p class='meta'>Corpus metrics are `evaluation.score` over the "
                 "(draft, signed) pairs of each group; CheXpert uncertain labels count as "
                 "negative.</p></body></html>")
    return "".join(parts)
