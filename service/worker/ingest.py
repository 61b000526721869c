"""The ingest stage (queue `ingest`, CPU): decode a study's instances, keep its images, choose the
frontal view, then enqueue generate."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Instance, Study, StudyState
from service.core.storage import BlobStore
from service.studies import pipeline
from service.studies.imaging import ImageDecodeError, choose_frontal, decode
from service.studies.intake import read_policy
from service.studies.reconcile import enqueue_and_mark
from service.worker.stage import run_stage


def ingest_claimed(settings: Settings, study_id: str, worker: str) -> None:
    """Ingest a study this worker has claimed; ImageDecodeError when no image can be reported on."""
    store = BlobStore(settings.storage_dir)
    with session_scope(settings.database_url) as session:
        instances = [(i.id, i.sha256) for i in session.scalars(
            select(Instance).where(Instance.study_id == study_id).order_by(Instance.id))]
    decoded: dict[int, Any] = {}
    policy = read_policy(settings)  # the limits intake applied: a bomb is refused the same way
    errors: list[ImageDecodeError] = []
    for instance_id, sha in instances:
        try:
            decoded[instance_id] = decode(store.get(sha), max_side=settings.image_cache_size,
                                          policy=policy)
        except ImageDecodeError as error:
            errors.append(error)
    if not decoded:
        if errors:
            raise errors[0]
        raise ImageDecodeError("no_instances", "the study has no instances")
    ids = list(decoded)
    frontal = choose_frontal([decoded[i] for i in ids])
    if frontal is None:
        raise ImageDecodeError("no_frontal_view",
                               "the study has no frontal (PA or AP) image to report on")
    image_shas = {i: store.put_array(decoded[i].pixels) for i in ids}
    with session_scope(settings.database_url) as session:
        study = session.get(Study, study_id)
        if study.state != StudyState.received or study.lease_owner != worker:
            return  # someone else finished or retook it
        for instance in study.instances:
            if instance.id in decoded:
                image = decoded[instance.id].image
                instance.view, instance.laterality = _short(image.view), _short(image.laterality)
                instance.modality = _short(image.modality)
                instance.rows, instance.columns = image.rows, image.columns
                instance.image_sha256 = image_shas[instance.id]
                instance.selected = instance.id == ids[frontal]
        study.frontal_sha256 = image_shas[ids[frontal]]
        pipeline.transition(session, study, StudyState.ingested, actor=f"worker:{worker}",
                            details={"images": len(decoded), "undecodable": len(errors)})
    enqueue_and_mark(settings, "generate", study_id)


def _short(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))[:16] or None


def ingest_study(self: Any, study_id: str) -> None:
    """Decode a study's instances, keep its images, pick the frontal view; then enqueue generate."""
    run_stage(self, "ingest", study_id, ingest_claimed)
