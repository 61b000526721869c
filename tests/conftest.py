"""Shared test fixtures: where the repository and the optional development data live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
IU_XRAY = REPO_ROOT.parent / "shared" / "data" / "iu-xray" / "reports.jsonl"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def iu_xray_reports() -> Path:
    """The real IU X-ray reports (development data beside the checkout); skips when absent."""
    if not IU_XRAY.exists():
        pytest.skip("../shared/data/iu-xray/reports.jsonl is not beside this checkout")
    return IU_XRAY
