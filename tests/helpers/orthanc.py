"""A real PACS for the tests: Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) on free ports.

Each `Orthanc` runs its own server process with its own configuration file, storage and index in
a folder of the test's, so tests share no state with each other or with a system Orthanc. It can
be stopped and started again on the same ports and storage (a PACS that goes down for a while).

    with Orthanc(tmp_path, modalities={"radreport": ("RADREPORT", "127.0.0.1", 11112)}) as pacs:
        pacs.upload(dicom_bytes)                        # REST POST /instances
        pacs.send_to_modality("radreport", [study_id])  # C-STORE from the PACS to us
        pacs.stow_to_server("radreport", [study_id])    # STOW-RS from the PACS's DICOMweb client

`scripts/ensure_pacs.sh` installs Orthanc, its DICOMweb plugin and dcmtk when they are missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_installed() -> bool:
    """Whether the Orthanc server and its DICOMweb plugin are installed."""
    return Path(ORTHANC).exists() and DICOMWEB_PLUGIN.exists()


class Orthanc:
    """One Orthanc server (see the module docstring). `modalities` are DICOM peers it may
    C-STORE to ({name: (AE title, host, port)}); `dicomweb_servers` are DICOMweb servers its
    client may STOW to / pull from ({name: {"Url": ..., "HttpHeaders": {...}}})."""

    def __init__(self, workdir: Path, *, aet: str = "ORTHANC",
                 modalities: Mapping[str, tuple[str, str, int]] | None = None,
                 dicomweb_servers: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = dict(modalities or {})
        self.dicomweb_servers = dict(dicomweb_servers or {})
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "orthanc.log"

    @property
    def url(self) -> str:
        """The REST root, e.g. http://127.0.0.1:8042."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS / WADO-RS / STOW-RS)."""
        return f"{self.url}/dicom-web"

    def _config(self) -> dict[str, Any]:
        return {
            "Name": "radreport-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "HttpTimeout": 30,
            "DicomScuTimeout": 30,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomModalities": {name: list(peer) for name, peer in self.modalities.items()},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                         "Servers": {name: dict(server) for name, server in
                                     self.dicomweb_servers.items()}},
        }

    def start(self, timeout_s: float = 60.0) -> Orthanc:
        """Start the server (again, on the same ports and storage) and wait until it answers."""
        if not orthanc_installed():
            raise RuntimeError("Orthanc is not installed: run scripts/ensure_pacs.sh")
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([ORTHANC, str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s:.0f} s")

    def stop(self) -> None:
        """Stop the server (its storage stays for a later `start`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET a REST resource as JSON."""
        response = httpx.get(f"{self.url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        """POST JSON (or bytes with `content=`) to a REST resource; the JSON answer."""
        if body is not None:
            kwargs["json"] = body
        response = httpx.post(f"{self.url}{path}", timeout=120, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, dicom: bytes) -> dict[str, Any]:
        """Store one Part 10 instance (REST); Orthanc's answer (ID, ParentStudy, ...)."""
        return self.post("/instances", content=dicom,
                         headers={"Content-Type": "application/dicom"})

    def send_to_modality(self, modality: str, resources: Sequence[str]) -> Any:
        """C-STORE the given Orthanc resources (study/series/instance IDs) to a modality."""
        return self.post(f"/modalities/{modality}/store",
                         {"Resources": list(resources), "Synchronous": True})

    def stow_to_server(self, server: str, resources: Sequence[str]) -> Any:
        """STOW-RS the given resources to a configured DICOMweb server."""
        return self.post(f"/dicom-web/servers/{server}/stow",
                         {"Resources": list(resources), "Synchronous": True})

    def study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """The instances of a study (by StudyInstanceUID) with their main DICOM tags."""
        found = self.post("/tools/find", {"Level": "Instance", "Expand": True,
                                          "Query": {"StudyInstanceUID": study_uid}})
        return list(found)

    def instance_file(self, instance_id: str) -> bytes:
        """The Part 10 bytes of an instance."""
        response = httpx.get(f"{self.url}/instances/{instance_id}/file", timeout=60)
        response.raise_for_status()
        return response.content
