"""The reference deployment's Orthanc (docker-compose.yml) is wired as the integration tests wire
theirs (tests/helpers/orthanc.py): the same DICOM and DICOMweb settings, a modality pointing at
the `scp` service, DICOMweb servers pointing at the API, and our SR destinations pointing at it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.orthanc import Orthanc

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def orthanc_config(env: dict[str, str]) -> dict[str, Any]:
    text = compose()["configs"]["orthanc-config"]["content"]
    for name, value in env.items():
        text = text.replace(f"${{{name}:-}}", value)
    return json.loads(text)


def test_the_compose_orthanc_has_the_settings_of_the_tests_orthanc(tmp_path):
    deployed = orthanc_config({"ORTHANC_UPLOADER_TOKEN": "u", "ORTHANC_VIEWER_TOKEN": "v"})
    tested = Orthanc(tmp_path)._config()
    for key in ("DicomAet", "DicomCheckCalledAet", "DicomAlwaysAllowStore",
                "DicomAlwaysAllowEcho", "AuthenticationEnabled"):
        assert deployed[key] == tested[key], key
    for key in ("Enable", "Root", "EnableWado"):
        assert deployed["DicomWeb"][key] == tested["DicomWeb"][key], key
    assert [Path(p).name for p in deployed["Plugins"]] == [Path(p).name for p in tested["Plugins"]]


def test_the_compose_orthanc_sends_to_our_scp_and_api_and_receives_our_reports():
    services = compose()["services"]
    config = orthanc_config({"ORTHANC_UPLOADER_TOKEN": "u", "ORTHANC_VIEWER_TOKEN": "v"})
    scp = services["scp"]["command"]
    assert config["DicomModalities"]["radreport"] == [
        scp[scp.index("--ae-title") + 1], "scp", int(scp[scp.index("--port") + 1])]
    assert services["scp"]["environment"]["SCP_CALLING_AETS"].endswith(
        f"-{config['DicomAet']}}}")
    servers = config["DicomWeb"]["Servers"]
    assert servers["radreport"] == {"Url": "http://api:8000/dicomweb",
                                    "HttpHeaders": {"Authorization": "Bearer u"}}
    assert servers["radreport-viewer"]["HttpHeaders"] == {"Authorization": "Bearer v"}
    env = services["api"]["environment"]
    root = config["DicomWeb"]["Root"].rstrip("/")
    assert env["PACS_STOW_URL"].endswith(f"-http://orthanc:{config['HttpPort']}{root}}}")
    assert env["PACS_CSTORE"].endswith(f"-{config['DicomAet']}@orthanc:{config['DicomPort']}}}")
