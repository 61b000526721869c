"""Offline evaluations of a model bundle: which folders a run may read, where it writes, sending it.

`POST /v1/evaluations` writes an `Evaluation` row (queued) and sends its id to queue `evaluate`; a
worker started with `radreport worker --queues evaluate` runs it (`service.worker.evaluate`).
"""

from __future__ import annotations

from pathlib import Path

from service.core import queues
from service.core.config import Settings
from service.core.errors import ServiceError


class EvaluationRequestError(ServiceError):
    """An evaluation cannot be started as asked (the message names the folder or option)."""

    status = 422


def evaluation_dir(settings: Settings) -> Path:
    """Where runs write their output."""
    return Path(settings.evaluation_dir or Path(settings.storage_dir) / "evaluations")


def check_paths(settings: Settings, bundle_dir: str, data_dir: str) -> tuple[Path, Path]:
    """Resolve and check the bundle and data folders: inside EVALUATION_ROOTS, or inside
    STORAGE_DIR when that is not set (never any folder the server can read)."""
    try:
        bundle, data = Path(bundle_dir).resolve(), Path(data_dir).resolve()
    except (ValueError, OSError) as error:
        raise EvaluationRequestError(f"the folder names cannot be used ({error})") from None
    roots = [Path(r.strip()).resolve() for r in settings.evaluation_roots.split(",") if r.strip()]
    roots = roots or [Path(settings.storage_dir).resolve()]
    for path, what in ((bundle, "bundle"), (data, "data")):
        if not any(path.is_relative_to(root) for root in roots):
            raise EvaluationRequestError(f"the {what} folder is outside the folders this service "
                                         "may read (EVALUATION_ROOTS, by default STORAGE_DIR)")
    if "\x00" in bundle_dir or "\x00" in data_dir:
        raise EvaluationRequestError("folder names cannot contain NUL characters")
    try:
        is_bundle, is_data = (bundle / "config.json").is_file(), data.is_dir()
    except OSError as error:  # e.g. a name too long for the file system
        raise EvaluationRequestError(
            f"the folder names cannot be used ({error.strerror})"
        ) from None
    if not is_bundle:
        raise EvaluationRequestError(
            f"{bundle_dir[:200]} is not a model bundle (no config.json there)"
        )
    if not is_data:
        raise EvaluationRequestError(
            f"{data_dir[:200]} is not a folder (expected a MIMIC-CXR-layout dataset)"
        )
    return bundle, data


def enqueue_evaluation(settings: Settings, evaluation_id: str) -> bool:
    """Send the run to queue `evaluate` of `settings.redis_url`; False if Redis is unreachable."""
    return queues.send(settings, queues.EVALUATE, evaluation_id)
