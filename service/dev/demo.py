"""The service half of `radreport demo`: start the system, upload synthetic studies, show drafts."""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from service.auth.api_keys import create_api_key
from service.core.db import session_scope
from service.core.models import Role
from service.dev.system import LocalSystem


def find_studies(data_dir: Path, limit: int) -> list[list[Path]]:
    """Up to `limit` studies (lists of DICOM files, one folder each) in a MIMIC-CXR-style tree."""
    folders: dict[Path, list[Path]] = defaultdict(list)
    for path in sorted(data_dir.rglob("*.dcm")):
        folders[path.parent].append(path)
    return [files for _, files in sorted(folders.items())][:limit]


def _stow_body(files: list[Path], boundary: str = "radreportDemoBoundary") -> tuple[bytes, str]:
    part_head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(part_head + f.read_bytes() + b"\r\n" for f in files)
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def upload_study(client: httpx.Client, files: list[Path], *, stow: bool) -> str:
    """Upload one study's files (multipart form or STOW-RS); returns the study id."""
    if stow:
        body, content_type = _stow_body(files)
        response = client.post("/dicomweb/studies", content=body,
                               headers={"Content-Type": content_type})
        response.raise_for_status()
        return response.headers["X-Study-Status"].split(",")[0].strip().rsplit("/", 1)[-1]
    parts = [("files", (f.name, f.read_bytes(), "application/dicom")) for f in files]
    response = client.post("/v1/studies", files=parts)
    response.raise_for_status()
    return response.json()["study_id"]


def wait_terminal(
    client: httpx.Client, study_ids: list[str], timeout: float, *, findings: bool = True
) -> dict[str, dict]:
    """Poll until every study is draft_ready (with findings extracted) or failed."""
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while len(done) < len(study_ids) and time.monotonic() < deadline:
        for study_id in study_ids:
            if study_id in done:
                continue
            status = client.get(f"/v1/studies/{study_id}").json()
            if status["state"] == "failed":
                done[study_id] = {"status": status}
            elif status["state"] == "draft_ready":
                report = client.get(f"/v1/studies/{study_id}/report").json()
                if report.get("findings") is not None or not findings:
                    done[study_id] = {"status": status, "report": report}
        time.sleep(0.3)
    return done


def _positive_findings(findings: dict[str, Any] | None) -> str:
    labels = (findings or {}).get("chexpert") or {}
    positive = [name for name, value in labels.items() if value == 1 or value == 1.0]
    uncertain = [name for name, value in labels.items() if value == -1 or value == -1.0]
    text = ", ".join(positive) or "none"
    return text + (f" (uncertain: {', '.join(uncertain)})" if uncertain else "")


def run_service_demo(
    *, data_dir: Path, bundle_dir: Path, studies: int, keep_serving: bool, console: Any
) -> None:
    """Start Redis/API/workers, upload `studies` studies (half by STOW-RS), print drafts, stop."""
    workdir = Path(data_dir).parent / "service"
    shutil.rmtree(workdir, ignore_errors=True)
    chosen = find_studies(Path(data_dir), studies)
    if not chosen:
        raise SystemExit(f"no DICOM studies under {data_dir}")
    system = LocalSystem(workdir, model_bundle=Path(bundle_dir), env={"RECONCILE_INTERVAL_S": "5"})
    try:
        with console.status(
            "starting redis, the API and the workers (the generate worker compiles first)"
        ):
            system.start(workers=["ingest,score,outbox", "generate"])
            system.wait_workers_ready(timeout=900)
        with session_scope(system.database_url) as session:
            uploader = create_api_key(session, name="demo-uploader", role=Role.uploader)
            reader = create_api_key(session, name="demo-radiologist", role=Role.radiologist)
        console.print(f"API at {system.api_url} (OpenAPI: {system.api_url}/docs)")
        with httpx.Client(base_url=system.api_url, timeout=60,
                          headers={"Authorization": f"Bearer {uploader}"}) as up:
            ids = [upload_study(up, files, stow=i % 2 == 1) for i, files in enumerate(chosen)]
        console.print(f"uploaded {len(ids)} studies ({(len(ids) + 1) // 2} multipart, "
                      f"{len(ids) // 2} STOW-RS)")
        with httpx.Client(base_url=system.api_url, timeout=60,
                          headers={"Authorization": f"Bearer {reader}"}) as rd:
            results = wait_terminal(rd, ids, timeout=600)
        drafted = 0
        for n, study_id in enumerate(ids, 1):
            result = results.get(study_id)
            if result is None:
                console.print(f"[red]study {n}: not finished in time[/red]")
                continue
            status = result["status"]
            if status["state"] == "failed":
                console.print(f"[red]study {n}: failed ({status['failure_code']}): "
                              f"{status['failure_reason']}[/red]")
                continue
            drafted += 1
            report = result["report"]
            timings = status["timings"]
            console.rule(f"study {n} · {report['bundle_id']} · {timings['total_s']:.1f} s to draft "
                         f"(batch of {timings['generate_batch_size']})")
            for section in ("findings", "impression"):
                if report["sections"].get(section):
                    console.print(f"[bold]{section.upper()}:[/bold] {report['sections'][section]}")
            if not any(report["sections"].get(s) for s in ("findings", "impression")):
                console.print(report["text"])
            positive = _positive_findings(report["findings"])
            console.print(f"[dim]findings (CheXpert-style positive): {positive}[/dim]")
        console.print(f"{drafted}/{len(ids)} studies drafted")
        if keep_serving:
            console.print(f"serving at {system.api_url}; uploader token {uploader}; "
                          f"radiologist token {reader}")
            console.print("Ctrl-C stops")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        if drafted == 0:
            raise SystemExit("no study was drafted; see the logs under " + str(workdir / "logs"))
    finally:
        system.stop()
