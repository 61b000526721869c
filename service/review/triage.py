"""Triage: an AI draft that reports a critical finding raises its report's worklist priority.

`TRIAGE_FINDINGS` names CheXpert findings (e.g. `Pneumothorax`); when the CheXpert-style labeler
(`evaluation.chexpert.label`, the one the quality scores use) finds one of them positive in a new
draft (or uncertain, with `TRIAGE_UNCERTAIN`), the report gets `TRIAGE_PRIORITY` (never lowered)
and remembers the findings (`Report.triage`), shown in the worklist. The draft is a machine's
reading: triage orders the worklist, it never replaces a radiologist's reading.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.models import AuditEvent, Report

log = logging.getLogger(__name__)


def flagged(settings: Settings, text: str) -> list[str]:
    """The TRIAGE_FINDINGS the labeler finds in `text` (positive, or uncertain too)."""
    wanted = settings.triage_finding_names
    if not wanted:
        return []
    from evaluation.chexpert import label

    labels = label(text)
    hits = {1.0, -1.0} if settings.triage_uncertain else {1.0}
    return [name for name in wanted if labels.get(name) in hits]


def apply(session: Session, settings: Settings, report: Report, text: str, actor: str) -> None:
    """Flag the new report of draft `text` and raise its priority (audited as `report.triage`)."""
    try:
        findings = flagged(settings, text)
    except Exception as error:  # the labeler failing must not cost the draft: no triage
        log.warning("triage of report %s failed (%s); its priority is unchanged", report.id,
                    type(error).__name__)
        return
    if not findings:
        return
    before = report.priority
    report.triage = findings
    report.priority = max(report.priority, settings.triage_priority)
    session.add(AuditEvent(actor=actor, action="report.triage", study_id=report.study_id,
                           report_id=report.id,
                           details={"findings": findings, "priority": report.priority,
                                    "previous_priority": before}))
