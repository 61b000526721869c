"""The API served over real HTTP in a thread (uvicorn on a free port), for clients that need a
socket: dicomweb-client, Orthanc's DICOMweb client.

    with LiveAPI(settings) as api:
        DICOMwebClient(f"{api.url}/dicomweb", headers=...)
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import httpx
import uvicorn

from service.core.config import Settings
from service.dev.system import free_port


class LiveAPI:
    """`create_app(settings)` (no reconciler) under uvicorn in a daemon thread; its
    DICOMWEB_PUBLIC_URL is its own address unless `settings` name one (dicomweb-client sends
    `Host` without the port, so URLs built from the Host header would miss it)."""

    def __init__(self, settings: Settings) -> None:
        from service.app import create_app

        self.port = free_port()
        if settings.dicomweb_public_url is None:
            settings = settings.model_copy(update={"dicomweb_public_url": f"{self.url}/dicomweb"})
        config = uvicorn.Config(create_app(settings, run_reconciler=False), host="127.0.0.1",
                                port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="live-api")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveAPI:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the API did not start within 30 s")

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(10)
