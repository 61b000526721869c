"""CLI contract: `radreport admin create-key` prints the token alone; `radreport serve` answers."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from service.dev.system import free_port, wait_for
from tests.helpers.service import bearer


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radreport", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_create_key_prints_only_the_token_and_the_token_authenticates(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "STORAGE_DIR": str(tmp_path / "store"), "REDIS_URL": "redis://127.0.0.1:9/0"}
    created = run_cli("admin", "create-key", "--role", "admin", "--name", "ops", env=env)
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rr_") and len(lines[0]) > 40
    refused = run_cli("admin", "create-key", "--role", "wizard", "--name", "x", env=env)
    assert refused.returncode != 0 and refused.stdout == ""
    expiring = run_cli("admin", "create-key", "--role", "uploader", "--name", "pacs",
                       "--expires-days", "30", env=env)
    assert expiring.returncode == 0 and expiring.stdout.startswith("rr_")
    never = run_cli("admin", "create-key", "--role", "uploader", "--name", "pacs",
                    "--expires-days", "0", env=env)
    assert never.returncode != 0 and "positive" in never.stderr
    listed = run_cli("admin", "list-keys", env=env)
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows[0][:3] == ["user", "role", "prefix"]
    assert expiring.stdout.strip() not in listed.stdout
    assert [(r[0], r[4] != "-") for r in rows[1:]] == [("ops", False), ("pacs", True)]

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "radreport", "serve", "--host", "127.0.0.1",
                               "--port", str(port)],
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, 60,
                 what="serve")
        assert httpx.get(base + "/metrics", headers=bearer(lines[0])).status_code == 200
        assert httpx.get(base + "/metrics", headers=bearer(lines[0] + "x")).status_code == 401
    finally:
        server.terminate()
        server.wait(20)
