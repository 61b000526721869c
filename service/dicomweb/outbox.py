"""The outbox: reports leave for the PACS (DICOM SR by STOW-RS or C-STORE) and FHIR, with retries.

A message (`OutboxMessage`) is one document for one destination, written in the transaction of
the change that causes it, so nothing is lost when a process dies; its payload is in the file
store. Destinations come from the settings: `stow` (PACS_STOW_URL, STOW-RS to `{root}/studies`),
`cstore` (PACS_CSTORE=AET@host:port), `fhir` (FHIR_URL, PUT of a DiagnosticReport) and `hl7`
(HL7_MLLP=host:port, an ORU^R01 over MLLP, answered by an ACK); none configured, nothing is
queued.

Delivery (the `outbox` queue's task, `deliver`):
- In order: the messages of one study and destination form a lane delivered in id order; only a
  lane's oldest open message (its head) is ever sent, so a signed report never reaches the PACS
  before its draft.
- Claims: sending takes the head with a conditional UPDATE (state `sending`, one more attempt,
  a lease in `next_attempt_at`), so duplicate or redelivered task messages send nothing twice; a
  worker lost mid-send leaves a lease that expires, and the message is retaken.
- Outcomes: delivered (a PACS that already holds the instance counts too: SOP Instance UIDs are
  deterministic, so a resent SR is the same instance); unavailable (unreachable, timeout, 5xx,
  credentials or address refused: retried with exponential backoff, OUTBOX_BACKOFF_S doubling up
  to OUTBOX_BACKOFF_MAX_S, without end: a PACS down for hours loses nothing); rejected (the
  destination refuses this document: retried the same way, `failed` after OUTBOX_MAX_REJECTIONS).
- Every attempt and its outcome is an audit event of the study (`outbox.attempt`,
  `outbox.delivered`, `outbox.retry`, `outbox.failed`); errors name what failed, never patient data.
- The API's reconciler (`resend_due`) sends a task message for every lane head that is due and
  not enqueued since, so retries and messages Redis lost need no Celery countdowns.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from service.core import queues
from service.core.config import CSTORE_ADDRESS, MLLP_ADDRESS, Settings
from service.core.db import session_scope
from service.core.models import AuditEvent, OutboxMessage, OutboxState, utcnow
from service.core.storage import BlobStore

log = logging.getLogger(__name__)

STOW, CSTORE, FHIR, HL7 = "stow", "cstore", "fhir", "hl7"
#: Destinations that take DICOM (the SR); FHIR takes the DiagnosticReport.
DICOM_DESTINATIONS = (STOW, CSTORE)
DICOM_MEDIA_TYPE = "application/dicom"
FHIR_MEDIA_TYPE = "application/fhir+json"
HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
OPEN = (OutboxState.pending, OutboxState.sending)
#: DIMSE statuses that store the instance: success, warnings (coercion, elements discarded), and
#: "duplicate SOP instance" (the PACS has it already).
CSTORE_STORED = frozenset({0x0000, 0x0001, 0x0111, 0xB000, 0xB006, 0xB007})
#: HTTP statuses by which a destination refuses the document itself (anything else that is not
#: 2xx is about the destination: down, overloaded, wrong address or credentials).
REFUSES_DOCUMENT = frozenset({400, 409, 413, 415, 422})
DUPLICATE_SOP_INSTANCE = 0x0111


def destinations(settings: Settings) -> list[str]:
    """The configured destinations, in a fixed order (`stow`, `cstore`, `fhir`, `hl7`)."""
    configured = {STOW: settings.pacs_stow_url, CSTORE: settings.pacs_cstore,
                  FHIR: settings.fhir_url, HL7: settings.hl7_mllp}
    return [name for name, value in configured.items() if value]


# --------------------------------------------------------------------------- queueing


def queue(session: Session, *, study_id: str, report_id: str | None, kind: str, report_version: int,
          document_key: str, media_type: str, payload_sha256: str, to: Sequence[str], actor: str,
          user_id: int | None = None) -> list[OutboxMessage]:
    """Add one message per destination in `to` (one already queued for the same document and
    destination is not added again) and the study's `outbox.queue` audit event; commits nothing."""
    rows = []
    for destination in to:
        known = session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.destination == destination, OutboxMessage.document_key == document_key))
        if known is None:
            rows.append(OutboxMessage(
                study_id=study_id, report_id=report_id, kind=kind, report_version=report_version,
                destination=destination, document_key=document_key, media_type=media_type,
                payload_sha256=payload_sha256, state=OutboxState.pending, next_attempt_at=utcnow()))
    if not rows:
        return []
    session.add_all(rows)
    session.flush()
    session.add(AuditEvent(actor=actor, user_id=user_id, action="outbox.queue", study_id=study_id,
                           report_id=report_id,
                           details={"kind": kind, "version": report_version,
                                    "document": document_key,
                                    "messages": {row.destination: row.id for row in rows}}))
    return rows


def _due_heads(now: dt.datetime):  # noqa: ANN202 - a SQLAlchemy select
    """Lane heads that may be sent now: open, due, and no older open message in their lane."""
    older = aliased(OutboxMessage)
    blocked = exists().where(older.study_id == OutboxMessage.study_id,
                             older.destination == OutboxMessage.destination,
                             older.state.in_(OPEN), older.id < OutboxMessage.id)
    return (select(OutboxMessage)
            .where(OutboxMessage.state.in_(OPEN), OutboxMessage.next_attempt_at <= now, ~blocked)
            .order_by(OutboxMessage.id))


def _send_messages(settings: Settings, ids: list[int]) -> int:
    sent = 0
    for message_id in ids:
        if queues.send(settings, queues.OUTBOX, str(message_id)):
            sent += 1
            with session_scope(settings.database_url) as session:
                session.execute(update(OutboxMessage).where(OutboxMessage.id == message_id)
                                .values(enqueued_at=utcnow())
                                .execution_options(synchronize_session=False))
    return sent


def kick(settings: Settings, study_id: str) -> int:
    """Send a delivery task for each due lane head of a study (call after the transaction that
    queued its messages committed); the number sent. Missed ones are the reconciler's."""
    if not destinations(settings):
        return 0
    with session_scope(settings.database_url) as session:
        ids = list(session.scalars(_due_heads(utcnow()).where(OutboxMessage.study_id == study_id)
                                   .with_only_columns(OutboxMessage.id)))
    return _send_messages(settings, ids)


def resend_due(settings: Settings, *, limit: int = 500) -> int:
    """The reconciler's part: a task for every due lane head not enqueued since it became due (or
    enqueued longer than RECONCILE_AFTER_S ago: that message was lost); the number sent."""
    now = utcnow()
    lost = now - dt.timedelta(seconds=settings.reconcile_after_s)
    with session_scope(settings.database_url) as session:
        ids = list(session.scalars(
            _due_heads(now).where(or_(OutboxMessage.enqueued_at.is_(None),
                                      OutboxMessage.enqueued_at < OutboxMessage.next_attempt_at,
                                      OutboxMessage.enqueued_at < lost))
            .with_only_columns(OutboxMessage.id).limit(limit)))
    sent = _send_messages(settings, ids)
    if sent:
        log.info("outbox: %d deliveries sent to the workers", sent)
    return sent


# --------------------------------------------------------------------------- delivering


@dataclass(frozen=True)
class Claimed:
    """A message this worker is sending (a snapshot: the row may change after the claim)."""

    id: int
    study_id: str
    report_id: str | None
    kind: str
    destination: str
    document_key: str
    media_type: str
    payload_sha256: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to: `delivered`, `unavailable` or `rejected`, and a detail
    without patient data."""

    status: str
    detail: str


def lease_s(settings: Settings) -> float:
    """How long a claimed message is left to its worker before another may retake it."""
    return 4 * settings.outbox_timeout_s + 30.0


def backoff_s(settings: Settings, attempt: int) -> float:
    """The wait after the `attempt`-th failed attempt: OUTBOX_BACKOFF_S doubling, capped."""
    return min(settings.outbox_backoff_s * 2 ** max(attempt - 1, 0), settings.outbox_backoff_max_s)


def claim_head(settings: Settings, study_id: str, destination: str, worker: str) -> Claimed | None:
    """Take the head of a lane if it is due (an audit event `outbox.attempt`); None otherwise."""
    now = utcnow()
    with session_scope(settings.database_url) as session:
        head = session.scalars(
            select(OutboxMessage).where(OutboxMessage.study_id == study_id,
                                        OutboxMessage.destination == destination,
                                        OutboxMessage.state.in_(OPEN))
            .order_by(OutboxMessage.id).limit(1)).first()
        if head is None or head.next_attempt_at > now:
            return None
        taken = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == head.id, OutboxMessage.state.in_(OPEN),
                   OutboxMessage.attempts == head.attempts, OutboxMessage.next_attempt_at <= now)
            .values(state=OutboxState.sending, attempts=head.attempts + 1,
                    next_attempt_at=now + dt.timedelta(seconds=lease_s(settings)))
            .execution_options(synchronize_session=False))
        if taken.rowcount != 1:
            return None
        claimed = Claimed(head.id, head.study_id, head.report_id, head.kind, head.destination,
                          head.document_key, head.media_type, head.payload_sha256,
                          head.attempts + 1)
        session.add(AuditEvent(actor=f"worker:{worker}", action="outbox.attempt",
                               study_id=study_id, report_id=head.report_id,
                               details=_details(claimed)))
    return claimed


def _details(claimed: Claimed, **more: object) -> dict[str, object]:
    return {"message": claimed.id, "destination": claimed.destination, "kind": claimed.kind,
            "document": claimed.document_key, "attempt": claimed.attempt, **more}


def record(settings: Settings, claimed: Claimed, outcome: Outcome, worker: str
           ) -> OutboxState | None:
    """Write an attempt's outcome and its audit event; None when the message was retaken by
    another worker meanwhile (its lease ran out), which then owns the outcome."""
    now = utcnow()
    with session_scope(settings.database_url) as session:
        row = session.get(OutboxMessage, claimed.id)
        if row is None or row.state != OutboxState.sending or row.attempts != claimed.attempt:
            return None
        if outcome.status == "delivered":
            row.state, row.delivered_at, row.last_error = OutboxState.delivered, now, None
            action, more = "outbox.delivered", {"detail": outcome.detail}
        else:
            row.last_error = outcome.detail[:500]
            if outcome.status == "rejected":
                row.rejections += 1
            if outcome.status == "rejected" and row.rejections >= settings.outbox_max_rejections:
                row.state = OutboxState.failed
                action, more = "outbox.failed", {"error": row.last_error,
                                                 "rejections": row.rejections}
            else:
                wait = backoff_s(settings, claimed.attempt)
                row.state = OutboxState.pending
                row.next_attempt_at = now + dt.timedelta(seconds=wait)
                action, more = "outbox.retry", {"error": row.last_error, "retry_in_s": wait}
        session.add(AuditEvent(actor=f"worker:{worker}", action=action, study_id=claimed.study_id,
                               report_id=claimed.report_id, details=_details(claimed, **more)))
        return row.state


def deliver(settings: Settings, message_id: int, *, worker: str) -> int:
    """Deliver the lane (study and destination) of a message from its head, in order, while heads
    are due and the destination takes them; the number delivered (0 for a message already
    delivered, a lane that is not due, or a head another worker holds)."""
    with session_scope(settings.database_url) as session:
        row = session.get(OutboxMessage, message_id)
        if row is None:
            return 0
        lane = (row.study_id, row.destination)
    store = BlobStore(settings.storage_dir)
    delivered = 0
    while (claimed := claim_head(settings, *lane, worker)) is not None:
        outcome = send(settings, store, claimed)
        state = record(settings, claimed, outcome, worker)
        log.info("outbox message %d (%s %s) attempt %d: %s", claimed.id, claimed.destination,
                 claimed.kind, claimed.attempt, outcome.detail)
        if state == OutboxState.delivered:
            delivered += 1
        elif state != OutboxState.failed:
            break  # retried later; the lane waits behind its head
    return delivered


def send(settings: Settings, store: BlobStore, claimed: Claimed) -> Outcome:
    """One attempt to hand a message to its destination; never raises."""
    try:
        payload = store.get(claimed.payload_sha256)
    except OSError as error:
        return Outcome("unavailable",
                       f"the payload is not in the file store ({type(error).__name__})")
    try:
        if claimed.destination == STOW and settings.pacs_stow_url:
            return send_stow(settings, payload)
        if claimed.destination == CSTORE and settings.pacs_cstore:
            return send_cstore(settings, payload)
        if claimed.destination == FHIR and settings.fhir_url:
            return send_fhir(settings, payload, claimed.report_id or "")
        if claimed.destination == HL7 and settings.hl7_mllp:
            return send_hl7(settings, payload)
    except Exception as error:  # a fault of ours or of a client library: logged, retried
        log.exception("outbox message %d: delivery to %s failed unexpectedly", claimed.id,
                      claimed.destination)
        return Outcome("unavailable", f"{claimed.destination}: internal error "
                                      f"({type(error).__name__}); see the worker log")
    setting = {STOW: "PACS_STOW_URL", CSTORE: "PACS_CSTORE", FHIR: "FHIR_URL",
               HL7: "HL7_MLLP"}[claimed.destination]
    return Outcome("unavailable", f"{setting} is not set on this worker; the message waits for it")


def send_stow(settings: Settings, payload: bytes) -> Outcome:
    """STOW-RS of one SR to `{PACS_STOW_URL}/studies` (dicomweb-client; its own retries off)."""
    import requests
    from dicomweb_client import DICOMwebClient

    token = settings.pacs_stow_token
    headers = {"Authorization": f"Bearer {token}"} if token else None
    client = DICOMwebClient(url=str(settings.pacs_stow_url).rstrip("/"), headers=headers,
                            timeout=settings.outbox_timeout_s)
    client.set_http_retry_params(retry=False)
    ds = pydicom.dcmread(io.BytesIO(payload))
    try:
        answer = client.store_instances([ds])
    except requests.HTTPError as error:
        response = error.response
        status = response.status_code if response is not None else 0
        reasons = _failure_reasons(response)
        if reasons and set(reasons) == {DUPLICATE_SOP_INSTANCE}:
            return Outcome("delivered",
                           f"STOW-RS: HTTP {status}, the PACS has the instance already")
        detail = f"STOW-RS: HTTP {status}" + (
            f", FailureReason {', '.join(f'0x{r:04X}' for r in reasons)}" if reasons else "")
        return Outcome("rejected" if status in REFUSES_DOCUMENT else "unavailable", detail)
    except requests.RequestException as error:
        return Outcome("unavailable",
                       f"STOW-RS: the PACS cannot be reached ({type(error).__name__})")
    reasons = [int(item.get("FailureReason", 0)) for item in answer.get("FailedSOPSequence", [])]
    if reasons and set(reasons) != {DUPLICATE_SOP_INSTANCE}:
        return Outcome("rejected", "STOW-RS: stored with failures, FailureReason "
                       + ", ".join(f"0x{r:04X}" for r in reasons))
    return Outcome("delivered", "STOW-RS: stored")


def _failure_reasons(response: Any) -> list[int]:
    """The FailureReason values of a Store Instances Response body (JSON), if it has one."""
    try:
        body = pydicom.Dataset.from_json(response.json())
        return [int(item.FailureReason) for item in body.get("FailedSOPSequence", [])
                if "FailureReason" in item]
    except Exception:
        return []


def send_cstore(settings: Settings, payload: bytes) -> Outcome:
    """C-STORE of one SR to PACS_CSTORE (pynetdicom, calling AE title PACS_CALLING_AET)."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    address = CSTORE_ADDRESS.fullmatch(str(settings.pacs_cstore))
    assert address is not None  # Settings validated it
    ds = pydicom.dcmread(io.BytesIO(payload))
    ae = AE(ae_title=settings.pacs_calling_aet)
    for name in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, name, settings.outbox_timeout_s)
    ae.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(address["host"], int(address["port"]), ae_title=address["aet"])
    if not association.is_established:
        why = ("rejected" if association.is_rejected else
               "aborted" if association.is_aborted else "not established (no answer)")
        return Outcome("unavailable", f"C-STORE: the association was {why}")
    try:
        status = association.send_c_store(ds)
    finally:
        association.release()
    if not status or "Status" not in status:
        return Outcome("unavailable", "C-STORE: no answer (connection lost or timed out)")
    code = int(status.Status)
    if code in CSTORE_STORED:
        return Outcome("delivered", f"C-STORE: status 0x{code:04X}")
    if 0xA700 <= code <= 0xA7FF:
        return Outcome("unavailable", f"C-STORE: status 0x{code:04X} (out of resources)")
    return Outcome("rejected", f"C-STORE: status 0x{code:04X}")


def send_fhir(settings: Settings, payload: bytes, report_id: str) -> Outcome:
    """PUT of a DiagnosticReport to `{FHIR_URL}/DiagnosticReport/{report id}` (update as create)."""
    import requests

    headers = {"Content-Type": FHIR_MEDIA_TYPE, "Accept": FHIR_MEDIA_TYPE}
    if settings.fhir_token:
        headers["Authorization"] = f"Bearer {settings.fhir_token}"
    url = f"{str(settings.fhir_url).rstrip('/')}/DiagnosticReport/{report_id}"
    try:
        response = requests.put(url, data=payload, headers=headers,
                                timeout=settings.outbox_timeout_s)
    except requests.RequestException as error:
        return Outcome("unavailable",
                       f"FHIR: the server cannot be reached ({type(error).__name__})")
    if response.ok:
        return Outcome("delivered", f"FHIR: HTTP {response.status_code}")
    status = response.status_code
    return Outcome("rejected" if status in REFUSES_DOCUMENT else "unavailable",
                   f"FHIR: HTTP {status}")


def send_hl7(settings: Settings, payload: bytes) -> Outcome:
    """One ORU^R01 over MLLP to HL7_MLLP (python-hl7's stream client), read back its ACK: AA / CA
    delivered; AE / CE (an error in the message) rejected; AR / CR (refused for a reason that
    is not the message: down, busy) and no answer unavailable."""
    import asyncio

    from hl7.mllp import open_hl7_connection

    address = MLLP_ADDRESS.fullmatch(str(settings.hl7_mllp))
    host, port = address["host"], int(address["port"])

    async def exchange():  # noqa: ANN202 - an hl7.Message
        reader, writer = await open_hl7_connection(host, port, encoding="utf-8")
        try:
            writer.writeblock(payload)
            await writer.drain()
            return await reader.readmessage()
        finally:
            writer.close()

    try:
        ack = asyncio.run(asyncio.wait_for(exchange(), settings.outbox_timeout_s))
        code = str(ack.segment("MSA")[1]).upper()
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError) as error:
        return Outcome("unavailable",
                       f"HL7: the receiver cannot be reached ({type(error).__name__})")
    except (KeyError, IndexError, ValueError) as error:  # an answer that is no ACK
        return Outcome("unavailable", f"HL7: the answer is not an ACK ({type(error).__name__})")
    if code in ("AA", "CA"):
        return Outcome("delivered", f"HL7: ACK {code}")
    if code in ("AE", "CE"):
        return Outcome("rejected", f"HL7: ACK {code}")
    return Outcome("unavailable", f"HL7: ACK {code}")


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class LaneStats:
    """Messages of one destination in one state, with their attempts and the oldest one's age."""

    destination: str
    state: OutboxState
    count: int
    attempts: int
    oldest: dt.datetime | None


def retry_failed(session: Session, *, actor: str, study_id: str | None = None) -> int:
    """Give failed messages (of one study, or all) a new round of attempts, e.g. after the PACS
    was set up to accept them; an `outbox.requeue` audit event per message. Commits nothing."""
    query = select(OutboxMessage).where(OutboxMessage.state == OutboxState.failed)
    if study_id is not None:
        query = query.where(OutboxMessage.study_id == study_id)
    rows = list(session.scalars(query.order_by(OutboxMessage.id)))
    for row in rows:
        row.state, row.rejections, row.next_attempt_at = OutboxState.pending, 0, utcnow()
        session.add(AuditEvent(actor=actor, action="outbox.requeue", study_id=row.study_id,
                               report_id=row.report_id,
                               details={"message": row.id, "destination": row.destination,
                                        "kind": row.kind, "document": row.document_key,
                                        "last_error": row.last_error}))
    return len(rows)


def statistics(session: Session) -> list[LaneStats]:
    """Counts per destination and state (for /metrics)."""
    rows = session.execute(
        select(OutboxMessage.destination, OutboxMessage.state, func.count(),
               func.coalesce(func.sum(OutboxMessage.attempts), 0),
               func.min(OutboxMessage.created_at))
        .group_by(OutboxMessage.destination, OutboxMessage.state)).all()
    return [LaneStats(d, OutboxState(s), int(c), int(a), o) for d, s, c, a, o in rows]
