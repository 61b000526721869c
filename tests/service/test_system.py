"""The whole system with real processes: private Redis, the API, Celery workers, SQLite or
PostgreSQL.

One system per database serves several scenarios in order; every scenario checks only its own
studies. The generate worker runs a tiny random bundle, so drafts are noise but the pipeline is
real.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import AuditEvent, Draft, Role, Study, StudyState
from service.dev.system import LocalSystem, wait_for
from tests.helpers.service import bearer, build_tiny_bundle, make_dicom, multipart_related

pytestmark = pytest.mark.slow

KILL_MARKER = "CHAOS-KILL"
PAUSE_MARKER = "CHAOS-PAUSE"
PATIENTS = [(f"Testpatient^Name{i}", f"MRN-SECRET-{1000 + i}") for i in range(40)]
TERMINAL = {"draft_ready", "failed"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle"))


class Harness:
    """A running system plus API clients for each role."""

    def __init__(self, system: LocalSystem) -> None:
        self.system = system
        with session_scope(system.database_url) as session:
            self.tokens = {role.value: create_api_key(session, name=f"sys-{role.value}", role=role)
                           for role in Role}
        self.patient = 0

    def client(self, role: str) -> httpx.Client:
        return httpx.Client(base_url=self.system.api_url, headers=bearer(self.tokens[role]),
                            timeout=30)

    def study_files(self, count: int = 1, description: str = "CHEST PA AND LATERAL") -> list[bytes]:
        name, pid = PATIENTS[self.patient % len(PATIENTS)]
        self.patient += 1
        study_uid = generate_uid()
        views = ["PA", "LL"]
        return [make_dicom(study_uid=study_uid, patient_name=name, patient_id=pid,
                           view=views[i % 2], description=description,
                           seed=self.patient * 10 + i, size=96)
                for i in range(count)]

    def upload(self, files: list[bytes], *, stow: bool = False) -> str:
        with self.client("uploader") as client:
            if stow:
                body, content_type = multipart_related(files)
                response = client.post("/dicomweb/studies", content=body,
                                       headers={"Content-Type": content_type})
                assert response.status_code == 200, response.text
                return response.headers["X-Study-Status"].rsplit("/", 1)[-1]
            parts = [("files", (f"{i}.dcm", f)) for i, f in enumerate(files)]
            response = client.post("/v1/studies", files=parts)
            assert response.status_code == 202, response.text
            return response.json()["study_id"]

    def status(self, study_id: str) -> dict:
        with self.client("admin") as client:
            return client.get(f"/v1/studies/{study_id}").json()

    def wait_terminal(self, study_ids: list[str], timeout: float = 120) -> dict[str, dict]:
        wait_for(lambda: all(self.status(s)["state"] in TERMINAL for s in study_ids), timeout,
                 interval=0.3, what="studies to reach a terminal state")
        return {s: self.status(s) for s in study_ids}

    def drafts(self, study_id: str) -> int:
        with session_scope(self.system.database_url) as session:
            return session.scalar(select(func.count()).select_from(Draft)
                                  .where(Draft.study_id == study_id))

    def terminal_transitions(self, study_id: str) -> int:
        with session_scope(self.system.database_url) as session:
            return session.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.study_id == study_id, AuditEvent.to_state.in_(list(TERMINAL))))


def start_system(workdir: Path, bundle: Path, database_url: str | None) -> LocalSystem:
    env = {
        "RECONCILE_INTERVAL_S": "1", "RECONCILE_AFTER_S": "2", "LEASE_S": "3",
        "WORKER_HEARTBEAT_S": "1", "MAX_ATTEMPTS": "2", "BATCH_SIZE": "2", "BATCH_WAIT_MS": "300",
        "MAX_NEW_TOKENS": "8",
        "FAULT_KILL_MARKER": KILL_MARKER, "FAULT_PAUSE_MARKER": PAUSE_MARKER, "FAULT_PAUSE_S": "30",
        "WORKER_CONCURRENCY": "1", "VISIBILITY_TIMEOUT_S": "3600",
        # Compiled programs persist across runs under var/ (ignored by git): repeated runs skip
        # compiling.
        "JAX_CACHE_DIR": str(Path(__file__).resolve().parents[2] / "var" / "test-jax-cache"),
    }
    system = LocalSystem(workdir, database_url=database_url, model_bundle=bundle, env=env,
                         redis_url="")
    system.start(workers=["ingest,score", "generate"])
    system.wait_workers_ready(timeout=240)
    return system


@pytest.fixture(scope="module")
def sqlite_system(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[Harness]:
    system = start_system(tmp_path_factory.mktemp("sqlite-system"), bundle, None)
    try:
        yield Harness(system)
    finally:
        system.stop()


@pytest.fixture(scope="module")
def postgres_system(
    tmp_path_factory: pytest.TempPathFactory, bundle: Path, request
) -> Iterator[Harness]:
    url = request.getfixturevalue("postgres_module_url")
    system = start_system(tmp_path_factory.mktemp("pg-system"), bundle, url)
    try:
        yield Harness(system)
    finally:
        system.stop()


def test_uploads_by_form_and_stow_reach_draft_ready_on_sqlite(sqlite_system):
    h = sqlite_system
    ids = [h.upload(h.study_files(2)), h.upload(h.study_files(2), stow=True)]
    results = h.wait_terminal(ids)
    assert {r["state"] for r in results.values()} == {"draft_ready"}
    with h.client("radiologist") as client:
        for study_id in ids:
            report = client.get(f"/v1/studies/{study_id}/report").json()
            assert report["bundle_id"].startswith("bundle")
            assert report["generation"]["max_new_tokens"] == 8
            png = client.get(f"/v1/studies/{study_id}/images/1.png", params={"window": "bone"})
            assert png.content[:4] == b"\x89PNG"
            assert h.drafts(study_id) == 1


def test_readiness_and_metrics_reflect_the_running_system(sqlite_system):
    h = sqlite_system
    study_id = h.upload(h.study_files(1))
    h.wait_terminal([study_id])
    ready = httpx.get(h.system.api_url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["workers"] == {"ingest": 1, "generate": 1, "score": 1}
    with h.client("admin") as client:
        metrics = client.get("/metrics").text
    drafted = [line for line in metrics.splitlines()
               if line.startswith('radreport_studies{state="draft_ready"}')]
    assert float(drafted[0].split()[-1]) >= 1
    assert 'radreport_stage_seconds_count{stage="total"}' in metrics
    assert 'radreport_queue_depth{queue="generate"}' in metrics
    assert not any(name in metrics or pid in metrics for name, pid in PATIENTS)


def test_uploads_by_form_and_stow_reach_draft_ready_on_postgres(postgres_system):
    h = postgres_system
    ids = [h.upload(h.study_files(1)), h.upload(h.study_files(2), stow=True)]
    results = h.wait_terminal(ids)
    assert {r["state"] for r in results.values()} == {"draft_ready"}
    assert all(h.drafts(s) == 1 for s in ids)


def test_a_repeated_upload_does_not_make_a_second_draft(sqlite_system):
    h = sqlite_system
    files = h.study_files(1)
    first = h.upload(files)
    h.wait_terminal([first])
    assert h.upload(files) == first and h.upload(files, stow=True) == first
    time.sleep(2)
    assert h.drafts(first) == 1


def test_studies_waiting_together_are_drafted_in_one_batch(sqlite_system):
    h = sqlite_system
    worker = next(p for p in h.system.processes if p.name.startswith("worker-generate"))
    worker.stop()  # studies pile up in the generate queue while no generate worker runs
    try:
        ids = [h.upload(h.study_files(1)) for _ in range(4)]
        wait_for(lambda: all(h.status(s)["state"] == "ingested" for s in ids), 60, what="ingest")
    finally:
        worker.start()
        worker.restart = True
    results = h.wait_terminal(ids)
    assert [r["timings"]["generate_batch_size"] for r in results.values()] == [2, 2, 2, 2]


def test_findings_are_extracted_by_the_score_worker(sqlite_system):
    h = sqlite_system
    study_id = h.upload(h.study_files(1))
    h.wait_terminal([study_id])
    with h.client("radiologist") as client:
        wait_for(lambda: client.get(f"/v1/studies/{study_id}/report").json()["findings"]
                 is not None, 60, what="findings")
        findings = client.get(f"/v1/studies/{study_id}/report").json()["findings"]
    assert set(findings) == {"chexpert", "radgraph"}


def test_hostile_uploads_are_refused_or_failed_and_workers_keep_serving(sqlite_system):
    h = sqlite_system
    with h.client("uploader") as client:
        not_dicom = client.post("/v1/studies", files=[("files", ("x.dcm", b"not dicom" * 50))])
        assert not_dicom.status_code == 422
        plain = client.post("/v1/studies", content=b"x", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
    good = h.study_files(1)[0]
    truncated = good[: len(good) - 4000]  # header intact, pixel data cut short: refused at upload
    with h.client("uploader") as client:
        refused = client.post("/v1/studies", files=[("files", ("cut.dcm", truncated))])
    assert refused.status_code == 422 and refused.json()["code"] == "truncated"
    served = h.upload([good])  # the whole instance sent afterwards is stored and served
    results = h.wait_terminal([served])
    assert results[served]["state"] == "draft_ready"


def test_killing_the_generate_worker_mid_generation_still_gives_exactly_one_draft(sqlite_system):
    h = sqlite_system
    study_id = h.upload(h.study_files(1, description=f"CHEST {PAUSE_MARKER}"))
    wait_for(lambda: h.status(study_id)["state"] == "generating", 60, what="generation to start")
    time.sleep(1.0)  # the worker is now inside the (paused) generation
    worker = next(p for p in h.system.processes if p.name.startswith("worker-generate"))
    worker.signal(signal.SIGKILL)  # the supervisor restarts it, like a container restart policy
    results = h.wait_terminal([study_id], timeout=180)
    assert results[study_id]["state"] == "draft_ready"
    assert results[study_id]["attempts"]["generate"] == 2
    assert h.drafts(study_id) == 1 and h.terminal_transitions(study_id) == 1


def test_a_study_that_kills_its_worker_every_time_fails_after_the_cap_and_others_are_served(
    sqlite_system,
):
    h = sqlite_system
    poison = h.upload(h.study_files(1, description=f"CHEST {KILL_MARKER}"))
    others = [h.upload(h.study_files(1)) for _ in range(3)]
    results = h.wait_terminal([poison, *others], timeout=240)
    assert results[poison]["state"] == "failed"
    assert results[poison]["failure_code"] == "generate_worker_lost"
    assert all(results[s]["state"] == "draft_ready" for s in others)
    assert h.drafts(poison) == 0


def test_a_redis_restart_mid_pipeline_leaves_every_study_in_exactly_one_terminal_state(
    sqlite_system,
):
    h = sqlite_system
    ids = [h.upload(h.study_files(1)) for _ in range(4)]
    h.system.redis.stop()
    # Accepted while Redis is down: the database is the truth.
    ids += [h.upload(h.study_files(1)) for _ in range(2)]
    time.sleep(2)
    h.system.redis.start()
    results = h.wait_terminal(ids, timeout=180)
    assert {r["state"] for r in results.values()} == {"draft_ready"}
    assert all(h.drafts(s) == 1 and h.terminal_transitions(s) == 1 for s in ids)


def test_logs_of_the_run_hold_no_patient_names_or_ids(sqlite_system):
    h = sqlite_system
    logs = h.system.logs_text()
    assert "study" in logs.lower() and len(logs) > 1000
    used = PATIENTS[: h.patient]
    for name, pid in used:
        assert name not in logs and name.replace("^", " ") not in logs and pid not in logs
    with session_scope(h.system.database_url) as session:
        received = (select(func.count()).select_from(Study)
                    .where(Study.state == StudyState.received))
        assert session.scalar(received) == 0
