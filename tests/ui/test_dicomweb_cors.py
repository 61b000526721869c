"""A browser viewer on another origin (OHIF, say) reads frames over /dicomweb with its bearer
token when DICOMWEB_CORS_ORIGINS names that origin, and only then; Chromium enforces CORS, not
a hand-written check.
"""

from __future__ import annotations

import functools
import http.server
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom

from service.auth.api_keys import create_api_key
from service.core.db import migrate, session_scope
from service.core.models import Role
from service.dev.system import free_port
from tests.helpers.dicom_factory import base_dataset, chest_like, encode
from tests.helpers.live_api import LiveAPI
from tests.helpers.service import api_settings, bearer, multipart_related

pytest_plugins = ["tests.helpers.ui_fixtures"]

FETCH = """async ([url, token]) => {
  try {
    const answer = await fetch(url, {headers: {Authorization: `Bearer ${token}`,
      Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}});
    return [answer.status, answer.headers.get("content-type") || "",
            (await answer.arrayBuffer()).byteLength];
  } catch (error) {
    return ["blocked", String(error), 0];
  }
}"""


@contextmanager
def viewer_site(root: Path) -> Iterator[str]:
    """A static page on its own origin (another port), like a viewer's web server."""
    (root / "index.html").write_text("<!doctype html><title>viewer</title>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_a_viewer_on_an_allowed_origin_reads_frames_and_nothing_else(browser, tmp_path):
    site_root = tmp_path / "site"
    site_root.mkdir()
    with viewer_site(site_root) as origin:
        url = f"sqlite:///{tmp_path / 'radreport.db'}"
        migrate(url)
        settings = api_settings(url, tmp_path, dicomweb_cors_origins=f"{origin}, https://x.test")
        with session_scope(url) as session:
            uploader = create_api_key(session, name="up", role=Role.uploader)
            viewer = create_api_key(session, name="ohif", role=Role.viewer)
        data = encode(base_dataset(chest_like(48, 40)), "1.2.840.10008.1.2.5")  # RLE
        instance = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        with LiveAPI(settings) as api:
            body, content_type = multipart_related([data])
            stored = httpx.post(f"{api.url}/dicomweb/studies", content=body, headers={
                "Content-Type": content_type, **bearer(uploader)})
            assert stored.status_code == 200, stored.text
            frames = (f"{api.url}/dicomweb/studies/{instance.StudyInstanceUID}/series/"
                      f"{instance.SeriesInstanceUID}/instances/{instance.SOPInstanceUID}/frames/1")
            context = browser.new_context()
            page = context.new_page()
            page.goto(origin + "/")
            status, media, size = page.evaluate(FETCH, [frames, viewer])
            assert (status, media.split(";")[0], size > 0) == (200, "multipart/related", True)
            refused = page.evaluate(FETCH, [frames.replace("frames/1", "frames/9"), viewer])
            assert refused[0] == 404  # errors are readable by the viewer too
            assert page.evaluate(FETCH, [f"{api.url}/v1/me", viewer])[0] == "blocked"
            # the same page on another origin (localhost is not 127.0.0.1) is not allowed
            page.goto(origin.replace("127.0.0.1", "localhost") + "/")
            assert page.evaluate(FETCH, [frames, viewer])[0] == "blocked"
            context.close()
        without = api_settings(url, tmp_path)
        with LiveAPI(without) as api:
            context = browser.new_context()
            page = context.new_page()
            page.goto(origin + "/")
            assert page.evaluate(FETCH, [frames.replace(frames.split("/dicomweb")[0], api.url),
                                         viewer])[0] == "blocked"
            context.close()
