"""Quality numbers after signing synthetic studies with known edits equal what `evaluation`
computes on the pairs."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from evaluation import score
from evaluation.clinical import clinical_f1, finding_names, label_many
from tests.helpers.review import store_draft

pytest_plugins = ["tests.helpers.review_fixtures"]

NORMAL = ("FINDINGS: Heart size is normal. The lungs are clear. No pleural effusion. "
          "IMPRESSION: No acute disease.")
EFFUSION = ("FINDINGS: Small right pleural effusion. Heart size is normal. "
            "IMPRESSION: Small right pleural effusion.")
APPENDED = " No pneumothorax."
#: (draft, signed) pairs of bundle A: accepted unchanged, one sentence appended, a finding
#: corrected, a finding added; bundle B: one appended, one unchanged.
PAIRS_A = [
    (NORMAL, NORMAL),
    (EFFUSION, EFFUSION + APPENDED),
    ("FINDINGS: Mild cardiomegaly. Lungs are clear. IMPRESSION: Mild cardiomegaly.",
     "FINDINGS: Heart size is normal. Lungs are clear. IMPRESSION: No acute disease."),
    ("FINDINGS: The lungs are clear. IMPRESSION: Normal chest.",
     "FINDINGS: Left lower lobe consolidation. IMPRESSION: Left lower lobe pneumonia."),
]
PAIRS_B = [(EFFUSION, EFFUSION + APPENDED), (NORMAL, NORMAL)]


def sign_pairs(env, pairs, bundle_id: str) -> list[str]:
    """Draft each pair's first text as `bundle_id`, edit it to the second, sign; the report ids."""
    ada = env.headers["dr-ada"]
    report_ids = []
    for draft, signed in pairs:
        _, report_id = store_draft(env.settings, draft, bundle_id=bundle_id)
        env.client.post(f"/v1/reports/{report_id}/claim", headers=ada)
        version = 1
        if signed != draft:
            edited = env.client.put(f"/v1/reports/{report_id}",
                                    json={"text": signed, "version": 1}, headers=ada)
            assert edited.status_code == 200
            version = 2
        response = env.client.post(f"/v1/reports/{report_id}/sign", headers=ada,
                                   json={"password": "ada-correct-horse-1", "version": version})
        assert response.status_code == 200, response.text
        report_ids.append(report_id)
    return report_ids


@pytest.fixture(scope="module")
def signed(review_env):
    """Bundles A and B (names unique to this module run) with their signed reports; A also has one
    rejected draft and one still open."""
    tag = uuid.uuid4().hex[:8]
    bundles = {f"quality-a-{tag}@1": PAIRS_A, f"quality-b-{tag}@1": PAIRS_B}
    started = dt.datetime.now(dt.UTC)
    reports = {bundle: sign_pairs(review_env, pairs, bundle) for bundle, pairs in bundles.items()}
    bundle_a = next(iter(bundles))
    for action in ("reject", "leave open"):
        _, report_id = store_draft(review_env.settings, NORMAL, bundle_id=bundle_a)
        if action == "reject":
            ada = review_env.headers["dr-ada"]
            review_env.client.post(f"/v1/reports/{report_id}/claim", headers=ada)
            review_env.client.post(f"/v1/reports/{report_id}/reject",
                                   json={"reason": "wrong study"}, headers=ada)
    return bundles, reports, started


def quality(env, **params) -> dict:
    response = env.client.get("/v1/quality", params=params, headers=env.headers["ops-admin"])
    assert response.status_code == 200, response.text
    return response.json()


def test_group_metrics_equal_evaluation_score_on_the_same_pairs(review_env, signed):
    bundles, _, _ = signed
    for bundle, pairs in bundles.items():
        overall = quality(review_env, bundle_id=bundle)["overall"]
        expected = score([d for d, _ in pairs], [s for _, s in pairs])
        expected.pop("conventions")
        assert overall["signed"] == len(pairs)
        assert overall["metrics"] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_per_finding_agreement_equals_clinical_f1_of_draft_against_signed_labels(
    review_env, signed
):
    bundles, _, _ = signed
    bundle = next(iter(bundles))
    drafts, signed_texts = [d for d, _ in PAIRS_A], [s for _, s in PAIRS_A]
    names, _ = finding_names()
    expected = clinical_f1(label_many(drafts), label_many(signed_texts), names,
                           "negative").per_finding
    per_finding = quality(review_env, bundle_id=bundle)["per_finding"]
    for name in names:
        assert {k: per_finding[name][k] for k in expected[name]} == pytest.approx(expected[name])
    cardiomegaly = per_finding["Cardiomegaly"]
    assert cardiomegaly["draft_positive"] == 1 and cardiomegaly["signed_positive"] == 0


def test_accepted_unchanged_rate_and_edit_distance_follow_the_known_edits(review_env, signed):
    bundles, reports, _ = signed
    bundle_a, bundle_b = bundles
    assert quality(review_env, bundle_id=bundle_a)["overall"]["accepted_unchanged_rate"] == 0.25
    assert quality(review_env, bundle_id=bundle_b)["overall"]["accepted_unchanged_rate"] == 0.5
    admin = review_env.headers["ops-admin"]
    unchanged, appended = (review_env.client.get(f"/v1/quality/reports/{r}", headers=admin).json()
                           for r in reports[bundle_a][:2])
    def edits(row: dict) -> tuple:
        return row["unchanged"], row["edit_distance"], row["edit_distance_words"]

    assert edits(unchanged) == (True, 0, 0)
    assert edits(appended) == (False, len(APPENDED), len(APPENDED.split()))
    expected_bleu1 = score([EFFUSION], [EFFUSION + APPENDED])["bleu1"]
    assert appended["metrics"]["bleu1"] == pytest.approx(expected_bleu1)


def test_draft_to_sign_time_and_the_time_series_cover_the_signed_reports(review_env, signed):
    bundles, _, started = signed
    bundle = next(iter(bundles))
    summary = quality(review_env, bundle_id=bundle, since=started.isoformat())
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    assert 0 < summary["overall"]["draft_to_sign_s_median"] <= elapsed
    assert sum(point["signed"] for point in summary["over_time"]) == len(PAIRS_A)
    assert summary["series"]["over_time"]["x"] == [p["period_start"] for p in summary["over_time"]]
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    future = quality(review_env, bundle_id=bundle, since=tomorrow.isoformat())
    assert future["overall"] is None


def test_the_quality_page_shows_the_numbers_and_plots(review_env, signed):
    bundles, _, _ = signed
    bundle = next(iter(bundles))
    response = review_env.client.get("/v1/quality/html", params={"bundle_id": bundle},
                                     headers=review_env.headers["dr-bob"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.text.count("<img alt=") == 3 and "data:image/png;base64," in response.text
    assert bundle in response.text and "25.0%" in response.text  # accepted unchanged


def test_rejected_and_open_drafts_are_counted_per_bundle_but_not_scored(review_env, signed):
    bundles, _, _ = signed
    bundle_a, bundle_b = bundles
    summary = quality(review_env, bundle_id=bundle_a)
    counts = (summary["rejected"], summary["open_reports"], summary["overall"]["signed"])
    assert counts == (1, 1, len(PAIRS_A))
    assert summary["per_bundle"][bundle_a]["rejected_rate"] == 1 / (len(PAIRS_A) + 1)
    assert summary["assessment"] == {"accepted": 1, "modified": 3, "rejected": 1}
    assert quality(review_env, bundle_id=bundle_b)["rejected"] == 0
