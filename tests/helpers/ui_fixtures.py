"""Pytest plugin of the review page tests (`pytest_plugins = ["tests.helpers.ui_fixtures"]`): the
whole system with real workers, seeded studies, headless Chromium.

One system per test session (private Redis, `radreport serve`, an ingest+score worker and a
generate worker on a tiny random bundle, SQLite). Studies are synthetic chest X-rays
(`radiology.synth`), uploaded through the API and ingested by the real worker. A random bundle
writes noise, so the one study whose draft the tests read as a radiologist would is drafted like
this: its description carries the fault-injection pause marker, the generate worker claims it and
pauses, and meanwhile the test stores a realistic draft with the worker's own `_store_draft` (as
the review tests do); the worker's own store then finds the study drafted and writes nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers.review import PASSWORDS, create_people, store_draft
from tests.helpers.service import bearer, build_tiny_bundle

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAUSE_MARKER = "UI-PAUSE"
# IMAGE_CACHE_SIZE: the PNG route serves this side; full resolution is the 256 px original.
PREVIEW_SIDE = 128
HOSTILE = ("FINDINGS: <script>window.__pwned = 1</script>"
           "<img src=x onerror=\"window.__pwned = 2\"> "
           "Small left pleural effusion. <b>bold</b> &amp; more.\n\n"
           "IMPRESSION: <iframe src=\"/v1/me\"></iframe>Effusion.")


@dataclass
class Seeded:
    """The running system, people's API headers and the studies the tests use."""

    api_url: str
    database_url: str
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    realistic: dict = field(default_factory=dict)  # study_id, report_id, draft text
    noise: list[dict] = field(default_factory=list)
    hostile: dict = field(default_factory=dict)
    # Report id of the newest open draft, set to priority 20 (so priority and age orders differ).
    stat: str = ""
    routine: str = ""  # report id of an open draft nobody claims

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers=self.headers[who], timeout=30)


def _synthetic_files(seed: int, description_suffix: str = "") -> tuple[list[bytes], str]:
    """DICOM files (PA + lateral) of a synthetic study and its findings/impression as a draft
    text."""
    import pydicom

    from radiology import reports
    from radiology.synth.dataset import generate_study

    study = generate_study(seed, size=(256, 256), lateral=True)
    files = []
    for image in study.images:
        ds = pydicom.dcmread(io.BytesIO(image.dicom))
        if description_suffix:
            ds.StudyDescription = f"{ds.StudyDescription} {description_suffix}"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append(out.getvalue())
    parsed = reports.parse(study.report)
    return files, f"FINDINGS: {parsed.findings}\n\nIMPRESSION: {parsed.impression}"


def _upload(client: httpx.Client, files: list[bytes]) -> str:
    parts = [("files", (f"{i}.dcm", f, "application/dicom")) for i, f in enumerate(files)]
    response = client.post("/v1/studies", files=parts)
    assert response.status_code == 202, response.text
    return response.json()["study_id"]


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """The system with four drafted studies: one realistic, two from the tiny model, one hostile
    text."""
    from service.auth.api_keys import create_api_key
    from service.core.db import session_scope
    from service.core.models import Role
    from service.dev.system import LocalSystem, wait_for
    from service.worker.model import bundle_id_of

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/ensure_browser.sh (make test does)")
    work = tmp_path_factory.mktemp("ui-system")
    bundle = build_tiny_bundle(work / "bundle")
    env = {"RECONCILE_INTERVAL_S": "1", "RECONCILE_AFTER_S": "30", "MAX_NEW_TOKENS": "8",
           "BATCH_SIZE": "2", "BATCH_WAIT_MS": "200", "WORKER_CONCURRENCY": "1",
           "IMAGE_CACHE_SIZE": str(PREVIEW_SIDE),
           "FAULT_PAUSE_MARKER": PAUSE_MARKER, "FAULT_PAUSE_S": "6", "LOGIN_IDLE_S": "1800",
           "JAX_CACHE_DIR": str(work / "jax-cache"),
           "TRIAGE_FINDINGS": "Fracture"}  # the realistic draft reports a rib fracture
    system = LocalSystem(work / "system", model_bundle=bundle, env=env, redis_url="")
    system.start(workers=["ingest,score", "generate"])
    try:
        settings = system.settings()
        create_people(settings)
        with session_scope(system.database_url) as session:
            uploader = bearer(create_api_key(session, name="ui-pacs", role=Role.uploader))
        seeded = Seeded(system.api_url, system.database_url, {"uploader": uploader})
        for name in ("dr-ada", "dr-bob"):
            response = httpx.post(system.api_url + "/v1/login",
                                  data={"username": name, "password": PASSWORDS[name]})
            seeded.headers[name] = bearer(response.json()["access_token"])
        system.wait_workers_ready(timeout=240)
        with seeded.client("uploader") as up:
            files, draft_text = _synthetic_files(11, PAUSE_MARKER)
            realistic = _upload(up, files)
            noise = [_upload(up, _synthetic_files(seed)[0]) for seed in (12, 13, 14)]
        with seeded.client("dr-ada") as ada:
            def state(study_id: str) -> str:
                return ada.get(f"/v1/studies/{study_id}").json()["state"]

            wait_for(lambda: state(realistic) == "generating", 120, interval=0.1,
                     what="the paused generation")
            _, report_id = store_draft(settings, draft_text, study_id=realistic,
                                       bundle_id=bundle_id_of(bundle))
            seeded.realistic = {"study_id": realistic, "report_id": report_id, "draft": draft_text}
            wait_for(lambda: all(state(s) == "draft_ready" for s in noise), 180, interval=0.3,
                     what="drafts by the worker")
            for study_id in noise:
                report = ada.get(f"/v1/studies/{study_id}/report").json()
                seeded.noise.append({"study_id": study_id, "report_id": report["report_id"],
                                     "draft": report["text"]})
        # Worklist variety: priorities, and one study under review by dr-bob with a hostile text.
        with seeded.client("dr-bob") as bob:
            worklist = bob.get("/v1/worklist", params={"sort": "age"}).json()["items"]
            by_age = [r["report_id"] for r in worklist]
            seeded.noise.sort(key=lambda n: by_age.index(n["report_id"]))  # oldest first
            hostile = seeded.noise[0]
            seeded.routine, seeded.stat = seeded.noise[1]["report_id"], seeded.noise[2]["report_id"]
            for target, priority in ((report_id, 10), (seeded.stat, 20)):
                response = bob.post(f"/v1/reports/{target}/priority", json={"priority": priority})
                assert response.status_code == 200
            assert bob.post(f"/v1/reports/{hostile['report_id']}/claim").status_code == 200
            # The API commits after it answers, so the claim may need a moment to be visible to
            # the edit.
            wait_for(lambda: bob.put(f"/v1/reports/{hostile['report_id']}",
                                     json={"text": HOSTILE, "version": 1}).status_code == 200,
                     10, interval=0.1, what="the hostile edit")
            seeded.hostile = hostile
        yield seeded
    finally:
        system.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/ensure_browser.sh (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(page, api_url: str, name: str) -> None:  # noqa: ANN001 - playwright Page
    """Open the page and sign in through its form."""
    page.goto(api_url + "/ui/")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Worklist").wait_for()


def save_screenshot(page, path: Path, limit: int = 380_000, **options: object) -> int:  # noqa: ANN001 - Page
    """A screenshot for docs/: a full-colour PNG, or, when that is over `limit` bytes, 256 colours:
    128 grey levels (the images) and the 128 commonest other colours (the page's accents)."""
    import numpy as np
    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot(**options))).convert("RGB")
    shot.save(path, optimize=True)
    if path.stat().st_size > limit:
        pixels = np.asarray(shot).reshape(-1, 3).astype(np.int16)
        colourful = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 12].astype(np.uint8)
        accents = Image.fromarray(colourful.reshape(1, -1, 3)).quantize(
            colors=128, method=Image.Quantize.MEDIANCUT
        )
        greys = [v for g in range(0, 256, 2) for v in (g + 1, g + 1, g + 1)]
        palette = Image.new("P", (1, 1))
        palette.putpalette(greys + accents.getpalette()[: 128 * 3])
        shot.quantize(palette=palette, dither=Image.Dither.NONE).save(path, optimize=True)
    return path.stat().st_size
