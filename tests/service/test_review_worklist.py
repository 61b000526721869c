"""The worklist filters by status, assignee, priority, age and bundle, sorts, and pages."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import update

from service.core.db import session_scope
from service.core.models import Draft, Report
from tests.helpers.review import store_draft

pytest_plugins = ["tests.helpers.review_fixtures"]

DRAFT = "FINDINGS: Lungs are clear. IMPRESSION: Normal chest."
#: name -> (priority, draft age in minutes)
REPORTS = {"oldest": (0, 180), "urgent": (10, 60), "middle": (0, 120), "recent": (5, 10)}


@pytest.fixture(scope="module")
def listed(review_env):
    """Four reports of a bundle unique to this module, with set priorities and draft ages."""
    bundle = f"worklist-{uuid.uuid4().hex[:8]}@1"
    ids = {}
    now = dt.datetime.now(dt.UTC)
    for name, (priority, age_min) in REPORTS.items():
        _, report_id = store_draft(review_env.settings, DRAFT, bundle_id=bundle)
        with session_scope(review_env.url) as session:
            report = session.get(Report, report_id)
            report.priority = priority
            session.execute(update(Draft).where(Draft.id == report.draft_id)
                            .values(created_at=now - dt.timedelta(minutes=age_min)))
        ids[name] = report_id
    client, ada, bob = review_env.client, review_env.headers["dr-ada"], review_env.headers["dr-bob"]
    assert client.post(f"/v1/reports/{ids['middle']}/claim", headers=ada).status_code == 200
    assert client.post(f"/v1/reports/{ids['recent']}/claim", headers=bob).status_code == 200
    rejected = client.post(f"/v1/reports/{ids['recent']}/reject", json={"reason": "artefact"},
                           headers=bob)
    assert rejected.status_code == 200
    return bundle, ids


def names(env, bundle, ids, **params) -> list[str]:
    response = env.client.get("/v1/worklist", params={"bundle_id": bundle, **params},
                              headers=env.headers["dr-ada"])
    assert response.status_code == 200, response.text
    by_id = {v: k for k, v in ids.items()}
    return [by_id[row["report_id"]] for row in response.json()["items"]]


def test_open_reports_come_highest_priority_first_then_oldest(review_env, listed):
    assert names(review_env, *listed) == ["urgent", "oldest", "middle"]


def test_sorting_by_age_status_and_assignee(review_env, listed):
    every = ["preliminary", "rejected"]
    assert names(review_env, *listed, sort="age") == ["oldest", "middle", "urgent"]
    assert names(review_env, *listed, sort="status", status=every) == [
        "urgent", "oldest", "middle", "recent"
    ]
    assert names(review_env, *listed, sort="assignee") == ["oldest", "urgent", "middle"]


def test_filters_by_status_assignee_priority_and_age(review_env, listed):
    assert names(review_env, *listed, status="rejected") == ["recent"]
    assert names(review_env, *listed, assignee="me") == ["middle"]
    assert names(review_env, *listed, assignee="dr-ada") == ["middle"]
    assert names(review_env, *listed, assignee="none") == ["urgent", "oldest"]
    assert names(review_env, *listed, min_priority=5) == ["urgent"]
    assert names(review_env, *listed, min_age_s=90 * 60) == ["oldest", "middle"]
    assert names(review_env, *listed, max_age_s=90 * 60) == ["urgent"]


def test_pages_cover_the_list_once_with_the_total(review_env, listed):
    bundle, ids = listed
    pages = [review_env.client.get("/v1/worklist",
                                   params={"bundle_id": bundle, "limit": 2, "offset": offset},
                                   headers=review_env.headers["ops-admin"]).json()
             for offset in (0, 2)]
    assert [p["total"] for p in pages] == [3, 3]
    by_id = {v: k for k, v in ids.items()}
    assert [by_id[row["report_id"]] for p in pages for row in p["items"]] == [
        "urgent", "oldest", "middle"
    ]
    row = pages[0]["items"][0]
    assert row["priority"] == 10 and 3600 <= row["age_s"] < 4200 and row["claimed_by"] is None
