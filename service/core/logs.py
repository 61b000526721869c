"""Logging for API and workers: one format, to stderr; libraries that may print headers muted."""

from __future__ import annotations

import logging
import sys
import warnings


def configure(level: str = "INFO") -> None:
    """Set up logging; pydicom's element-level warnings (which may quote header values) muted."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
    try:
        from pydicom import config

        config.settings.reading_validation_mode = config.IGNORE
    except Exception:
        pass
