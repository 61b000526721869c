"""The DICOM C-STORE listener (`radreport scp`): a modality or a PACS router pushes studies to us.

Every instance received over DIMSE enters the same intake as STOW-RS and HTTP uploads
(`service.studies.intake`): the same structural checks, the same grouping into studies by
StudyInstanceUID, the same idempotent storage. A refused instance is answered with the DIMSE status
of its failure reason, never dropped silently:

    0xA700  Refused: out of resources (too large, too many pixels, or could not be stored now)
    0xA900  Error: data set does not match the SOP class (bad UIDs, no pixel data)
    0xC000  Error: cannot understand (not parseable)
    0x0122  Refused: SOP class not supported (not an image storage class we read)
    0xB000  Warning: stored, but this SOPInstanceUID was already stored in another study

Which peers may connect: only calling AE titles listed in SCP_CALLING_AETS; with an empty list every
association is refused ("calling AE title not recognised"). Presentation contexts: CR, DX (for
presentation and for processing) and secondary capture image storage, in every transfer syntax
pynetdicom knows, plus Verification (C-ECHO).

When is a study complete: a study received over an association is sent to ingest when that
association ends (released or aborted), or earlier when SCP_STUDY_IDLE_S pass without a new instance
of it (a router that keeps one association open for hours). Instances that arrive after that are
kept and audited, as for any upload; the reconciler would also pick up a study that stays `received`
(for example if this process dies before the association ends).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification

from service.auth.users import get_or_create_user
from service.core.config import Settings
from service.core.db import session_scope
from service.core.models import Role, User
from service.core.storage import BlobStore
from service.studies import intake
from service.studies.reconcile import enqueue_and_mark

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
WARNING_COERCED = 0xB000
#: A SOP Instance UID already stored with other bytes (as STOW-RS: service.dicomweb.routes).
CONFLICT = 0xA900

#: Status of each intake failure reason (PS3.18 I.2.2 reasons are PS3.7 C-STORE statuses).
STATUS_OF_REASON = {0xA700: 0xA700, 0xA900: 0xA900, 0xC000: 0xC000, 0x0122: 0x0122}


def calling_aets(value: str) -> list[str]:
    """The allow-listed calling AE titles of SCP_CALLING_AETS (comma-separated, blanks ignored)."""
    titles = [title.strip() for title in value.split(",") if title.strip()]
    for title in titles:
        if len(title) > 16 or "\\" in title:
            raise ValueError(f"SCP_CALLING_AETS: {title!r} is not an AE title (1-16 characters, "
                             "no backslash)")
    return titles


@dataclass
class PendingStudy:
    """A study that received instances and waits to be complete (association end or idle time)."""

    study_id: str
    last_instance_at: float
    associations: set[int] = field(default_factory=set)


class StoreSCP:
    """The C-STORE SCP: an application entity bound to intake, plus the study-completion timer.

    `start()` listens in background threads and returns; `stop()` ends it. Tests run it in-process;
    `radreport scp` runs it in the foreground.
    """

    def __init__(self, settings: Settings, *, ae_title: str = "RADREPORT") -> None:
        self.settings = settings
        self.store = BlobStore(settings.storage_dir)
        self.allowed = calling_aets(settings.scp_calling_aets)
        self.ae = AE(ae_title=ae_title)
        for sop_class in intake.IMAGE_SOP_CLASSES:
            self.ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        # pynetdicom checks nothing when the list is empty; an unguessable title refuses everyone.
        self.ae.require_calling_aet = self.allowed or [secrets.token_hex(8).upper()]
        self.ae.maximum_pdu_size = 1 << 20
        self.pending: dict[str, PendingStudy] = {}
        self._users: dict[str, User] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._timer: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str, port: int) -> StoreSCP:
        """Listen on (host, port) in the background; returns at once."""
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo),
                    (evt.EVT_RELEASED, self.on_association_end),
                    (evt.EVT_ABORTED, self.on_association_end),
                    (evt.EVT_CONN_CLOSE, self.on_association_end)]
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)
        self._timer = threading.Thread(target=self._complete_idle_studies, daemon=True,
                                       name="scp-idle-studies")
        self._timer.start()
        if not self.allowed:
            log.warning("SCP_CALLING_AETS is empty: every association will be refused")
        return self

    @property
    def port(self) -> int:
        """The TCP port listened on (useful after binding port 0)."""
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening, then send every study still waiting to ingest."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._timer is not None:
            self._timer.join(5)
        with self._lock:
            waiting = list(self.pending)
            self.pending.clear()
        self._complete(waiting)

    # ------------------------------------------------------------------ DIMSE handlers

    def on_echo(self, event: evt.Event) -> int:
        """C-ECHO: the association was accepted, so the peer may talk to us."""
        return SUCCESS

    def on_store(self, event: evt.Event) -> int:
        """C-STORE: run one instance through intake; the DIMSE status says what became of it."""
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            data = event.encoded_dataset(include_meta=True)
            header = intake.inspect_instance(data, self.settings)
        except intake.InstanceRejected as error:
            log.info("C-STORE from %s refused: %s", calling, error.code)
            return STATUS_OF_REASON.get(error.failure_reason, 0xC000)
        try:
            with session_scope(self.settings.database_url) as session:
                user = session.merge(self._user(calling))
                registration = intake.register_instances(session, self.store, [header], user)
                if registration.conflicts:  # stored before with other bytes: refused, audited
                    log.info("C-STORE from %s refused: instance_conflict", calling)
                    return CONFLICT
                [stored] = registration.stored
                study_id = stored.study.id
                to_ingest = study_id in registration.studies_to_ingest
                warning = stored.warning
        except Exception:  # the database or the store failed: the sender should retry later
            log.exception("C-STORE from %s could not be stored", calling)
            return OUT_OF_RESOURCES
        if to_ingest:
            with self._lock:
                pending = self.pending.setdefault(study_id,
                                                  PendingStudy(study_id, time.monotonic()))
                pending.last_instance_at = time.monotonic()
                pending.associations.add(id(event.assoc))
        return WARNING_COERCED if warning else SUCCESS

    def on_association_end(self, event: evt.Event) -> None:
        """Release, abort or a dropped connection: the studies of this association are complete."""
        key = id(event.assoc)
        with self._lock:
            done = [sid for sid, p in self.pending.items() if key in p.associations]
            for study_id in done:
                self.pending[study_id].associations.discard(key)
                if not self.pending[study_id].associations:
                    del self.pending[study_id]
        self._complete([sid for sid in done if sid not in self.pending])

    # ------------------------------------------------------------------ completion

    def _complete_idle_studies(self) -> None:
        idle_s = self.settings.scp_study_idle_s
        while not self._stop.wait(min(1.0, max(idle_s / 4, 0.05))):
            now = time.monotonic()
            with self._lock:
                idle = [sid for sid, p in self.pending.items()
                        if now - p.last_instance_at >= idle_s]
                for study_id in idle:
                    del self.pending[study_id]
            self._complete(idle)

    def _complete(self, study_ids: list[str]) -> None:
        for study_id in study_ids:
            if not enqueue_and_mark(self.settings, "ingest", study_id):
                log.warning("study %s is complete but the ingest queue is unreachable; the "
                            "reconciler will send it", study_id)

    def _user(self, calling: str) -> User:
        """The machine user of a calling AE title (`aet:<title>`, role uploader), made once."""
        with self._lock:  # two first associations of one AE must not both create its user
            if calling not in self._users:
                self._users[calling] = self._new_user(calling)
            return self._users[calling]

    def _new_user(self, calling: str) -> User:
        with session_scope(self.settings.database_url) as session:
            user = get_or_create_user(session, name=f"aet:{calling}", role=Role.uploader,
                                      actor="scp")
            session.flush()
            session.expunge(user)
        return user
