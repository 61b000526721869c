"""Service settings: one pydantic-settings `Settings`, every knob an environment variable."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: PACS_CSTORE: called AE title (1-16 characters, no backslash) @ host : port.
CSTORE_ADDRESS = re.compile(r"(?P<aet>[^\\@]{1,16})@(?P<host>[^@:\s]+):(?P<port>\d{1,5})")
#: HL7_MLLP: host : port.
MLLP_ADDRESS = re.compile(r"(?P<host>[^@:\s]+):(?P<port>\d{1,5})")


class Settings(BaseSettings):
    """Every setting of the service; each field reads the environment variable of the same name.

    Defaults are safe for a single machine: a SQLite file and a file store under ./var, Redis on
    localhost, conservative upload limits.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", case_sensitive=False)

    # Where things live.
    database_url: str = Field(
        "sqlite:///var/radreport.db", description="SQLAlchemy URL (SQLite or PostgreSQL).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis).")
    storage_dir: Path = Field(
        Path("var/store"), description="Root of the content-addressed file store.")
    model_bundle: Path | None = Field(
        None, description="Model bundle directory used by generate workers.")

    # Upload limits (bytes / counts).
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest request body accepted.")
    max_instance_bytes: int = Field(128 * 1024 * 1024, description="Largest single DICOM instance.")
    max_instances_per_upload: int = Field(64, description="Most instances in one upload.")
    max_zip_ratio: float = Field(
        200.0, description="Largest uncompressed/compressed ratio of a zip member.")
    max_image_pixels: int = Field(
        64_000_000, description="Largest Rows*Columns*Frames accepted at ingest.")
    max_json_bytes: int = Field(16 * 1024 * 1024, description="Largest JSON request body (report "
                                "text, score pairs); larger ones are answered 413.")
    max_concurrent_uploads: int = Field(
        8, description="Uploads (HTTP and STOW-RS) one API process handles at once; more are "
        "answered 503 with Retry-After.")
    max_concurrent_uploads_per_key: int = Field(
        2, description="Uploads one API key may have in progress at once; more are answered 429 "
        "with Retry-After.")

    # Pipeline reliability.
    max_attempts: int = Field(
        3, description="Deliveries of a stage before the study fails (poison cap).")
    transient_retries: int = Field(5, description="Retries with backoff for transient faults.")
    retry_backoff_s: float = Field(2.0, description="First backoff delay for transient faults.")
    lease_s: float = Field(
        600.0, description="How long a worker owns a claimed study before others may retake it.")
    visibility_timeout_s: int = Field(
        3600, description="Redis visibility timeout for unacknowledged tasks.")
    reconcile_interval_s: float = Field(
        30.0, description="Period of the reconciler (0 disables it).")
    reconcile_after_s: float = Field(
        120.0, description="Age after which unfinished work is re-enqueued.")
    broker_timeout_s: float = Field(
        3.0, description="Timeout when publishing to / pinging Redis from the API.")
    worker_heartbeat_s: float = Field(
        5.0, description="Period of worker heartbeats written to the database.")
    worker_alive_s: float = Field(
        30.0, description="A worker counts as alive this long after its last heartbeat.")

    # Generation.
    batch_size: int = Field(4, description="Most studies gathered into one generate call.")
    generate_device_memory: str | None = Field(
        None, description="Memory of one generate worker's accelerator (e.g. 80GB, 24GiB). When "
        "set, the worker compiles its generate program at start and lowers BATCH_SIZE to the "
        "largest batch (1, 2, 4, ...) that fits 90% of it (modeling.memory).")
    batch_wait_ms: int = Field(200, description="How long a generate worker waits to fill a batch.")
    max_new_tokens: int | None = Field(
        None, description="Override of the bundle's generation length.")
    image_cache_size: int = Field(
        1024, description="Longest side of the decoded image kept for renders.")

    # Operations.
    worker_concurrency: int = Field(2, description="Processes of a CPU-only (ingest/score) worker.")
    log_level: str = Field("INFO", description="Log level of API and workers.")
    jax_cache_dir: Path | None = Field(
        None, description="Persistent JAX compilation cache (private to the worker).")
    fault_kill_marker: str | None = Field(
        None,
        description="Test hook (service.worker.faults): a generate worker SIGKILLs itself while "
        "generating a study whose StudyDescription contains this marker. Never set in production.",
    )
    fault_pause_marker: str | None = Field(
        None, description="Test hook: a generate worker sleeps FAULT_PAUSE_S while generating a "
        "marked study.")
    fault_pause_s: float = Field(0.0, description="Seconds of the FAULT_PAUSE_MARKER pause.")

    dicomweb_public_url: str | None = Field(
        None, description="The /dicomweb root as viewers reach it, e.g. behind a reverse proxy "
        "(https://pacs-gw.example/radreport/dicomweb); QIDO-RS RetrieveURLs and WADO-RS "
        "BulkDataURIs are built on it (unset: on each request's own address and Host header).")

    dicomweb_cors_origins: str = Field(
        "", description="Comma-separated origins (scheme://host[:port]) of browser viewers, e.g. "
        "OHIF at https://viewer.example, allowed to call /dicomweb with their bearer token (CORS; "
        "other paths never answer cross-origin). Empty: none.")

    # Reports back to the PACS (issue 18, service.dicomweb.outbox): DICOM SR through the outbox.
    pacs_stow_url: str | None = Field(
        None, description="DICOMweb root of the PACS; draft and signed reports are sent as DICOM "
        "SR by STOW-RS to {root}/studies (unset: no STOW-RS delivery).")
    pacs_stow_token: str | None = Field(
        None, description="Bearer token sent with STOW-RS to PACS_STOW_URL (unset: none).")
    pacs_cstore: str | None = Field(
        None, description="AET@host:port of the PACS's DICOM port; reports are sent as DICOM SR by "
        "C-STORE (unset: no C-STORE delivery).")
    pacs_calling_aet: str = Field(
        "RADREPORT", description="Calling AE title of the C-STORE deliveries to PACS_CSTORE.")
    fhir_url: str | None = Field(
        None, description="FHIR R4 base URL; each report state is also PUT as a DiagnosticReport "
        "through the outbox (unset: no FHIR push).")
    fhir_token: str | None = Field(None, description="Bearer token sent to FHIR_URL (unset: none).")
    hl7_mllp: str | None = Field(
        None, description="host:port of an HL7 v2 receiver (RIS, EHR interface engine); each "
        "report state is also sent as ORU^R01 over MLLP through the outbox (unset: no HL7).")
    hl7_sending_application: str = Field("RADREPORT", description="MSH-3 of the HL7 messages.")
    hl7_sending_facility: str = Field("", description="MSH-4 of the HL7 messages.")
    hl7_receiving_application: str = Field("", description="MSH-5 of the HL7 messages.")
    hl7_receiving_facility: str = Field("", description="MSH-6 of the HL7 messages.")
    sr_organization: str = Field(
        "radreport", description="VerifyingOrganization of signed SRs: the hospital or department.")
    outbox_backoff_s: float = Field(
        10.0, description="Wait before the first retry of a failed delivery; doubles per attempt.")
    outbox_backoff_max_s: float = Field(
        600.0, description="Longest wait between delivery attempts (an unreachable PACS is retried "
        "this often, without end, until it is back).")
    outbox_max_rejections: int = Field(
        5, description="Times the destination may refuse a message (HTTP 4xx, a DIMSE failure "
        "status) before the message is marked failed.")
    outbox_timeout_s: float = Field(
        30.0, description="Network timeout of one delivery (HTTP request, DICOM association).")

    @model_validator(mode="after")
    def _deid_secret(self) -> Settings:
        if self.deid_on_ingest and len(self.radreport_deid_secret or "") < 16:
            raise ValueError("DEID_ON_INGEST=1 needs RADREPORT_DEID_SECRET: a random value of at "
                             "least 16 characters, the same for the API, the SCP and the workers "
                             "(python -c 'import secrets; print(secrets.token_hex(32))')")
        return self

    @field_validator("generate_device_memory")
    @classmethod
    def _device_memory(cls, value: str | None) -> str | None:
        if value is not None:
            from modeling.memory import parse_bytes

            parse_bytes(value)  # a ValueError naming the accepted forms (80GB, 16GiB)
        return value

    @field_validator("hl7_mllp")
    @classmethod
    def _mllp_address(cls, value: str | None) -> str | None:
        if value is not None and MLLP_ADDRESS.fullmatch(value) is None:
            raise ValueError("HL7_MLLP must be host:port (e.g. ris.example.org:2575)")
        return value

    @field_validator("pacs_cstore")
    @classmethod
    def _cstore_address(cls, value: str | None) -> str | None:
        if value is not None and CSTORE_ADDRESS.fullmatch(value) is None:
            raise ValueError("PACS_CSTORE must be AET@host:port (an AE title of 1-16 characters "
                             "without backslash, e.g. ORTHANC@pacs.example.org:4242)")
        return value

    # Studies in over DICOM (issue 18, service.dicomweb.scp): the C-STORE listener `radreport scp`.
    scp_calling_aets: str = Field(
        "", description="Comma-separated calling AE titles allowed to C-STORE to `radreport scp` "
        "(e.g. ORTHANC,CR_ROOM_2). Empty: every association is refused.")
    scp_study_idle_s: float = Field(
        30.0, description="A study received over C-STORE is complete (sent to ingest) when its "
        "association ends, or after this many seconds without a new instance of it.")

    # Research deployments (issue 18, radiology.deid): a de-identified copy is what is stored.
    deid_on_ingest: bool = Field(
        False, description="Store and serve a PS3.15 Basic Profile de-identified copy of every "
        "instance received (STOW-RS, C-STORE, upload); UIDs are replaced consistently with "
        "RADREPORT_DEID_SECRET, so the studies, QIDO-RS, WADO-RS and reports use the new UIDs.")
    deid_keep_original: bool = Field(
        False, description="With DEID_ON_INGEST: also keep the identified original in the file "
        "store (never served). Off: the original is not written to disk.")
    deid_retain_uids: bool = Field(
        False, description="With DEID_ON_INGEST: the Retain UIDs Option (PS3.15 113110), UIDs "
        "kept as received.")
    radreport_deid_secret: str | None = Field(
        None, description="Secret key of the consistent UID and Patient ID mapping of "
        "DEID_ON_INGEST (at least 16 characters, the same on every process, kept out of the "
        "database and the repository).")

    # Review, sign-in and evaluations (issue 7; see service.auth, service.review, docs/review.md).
    login_ttl_s: int = Field(
        8 * 3600, description="Lifetime of a sign-in token from POST /v1/login (seconds).")
    login_idle_s: int = Field(
        30 * 60, description="A sign-in token unused this long expires (automatic logoff).")
    login_max_failures: int = Field(
        10, description="Failed password checks of one account (sign-ins, and re-authentications "
        "at signing or amending) within LOGIN_LOCKOUT_S before it is refused (429) until the "
        "window passes; reaching it at signing also signs the account out everywhere.")
    login_lockout_s: int = Field(15 * 60, description="Window of LOGIN_MAX_FAILURES (seconds).")
    auth_attempts_per_minute: int = Field(
        20, description="Password attempts (POST /v1/login, signing, amending) one client address "
        "and one token may make per minute; more are answered 429 with Retry-After.")
    password_checks: int = Field(
        4, description="argon2 password checks one API process runs at once (64 MiB each); more "
        "wait up to 10 s, then 503.")
    claim_ttl_s: int = Field(
        4 * 3600, description="A claim on a report older than this may be taken over by another "
        "radiologist (so a report is never stuck with someone who left).")
    signature_key: str | None = Field(
        None, description="Secret that seals e-signatures (HMAC-SHA256). Unset: a random key kept "
        "in STORAGE_DIR/keys/signature.key, created on first use. Keep it out of the database.")
    # Triage (service.review.triage): a draft naming a critical finding raises its priority.
    triage_findings: str = Field(
        "", description="Comma-separated CheXpert findings (e.g. Pneumothorax,Pleural Effusion) "
        "that, found positive in an AI draft by the CheXpert-style labeler, raise its report to "
        "TRIAGE_PRIORITY and flag it in the worklist. Empty: no triage.")
    triage_priority: int = Field(
        10, ge=-100, le=100, description="The priority triage gives (10 urgent, 20 STAT); a "
        "higher one already set is kept.")
    triage_uncertain: bool = Field(
        False, description="Triage on uncertain mentions too (\"possible pneumothorax\").")

    @property
    def triage_finding_names(self) -> list[str]:
        """TRIAGE_FINDINGS as a list of CheXpert names."""
        return [name.strip() for name in self.triage_findings.split(",") if name.strip()]

    @field_validator("triage_findings")
    @classmethod
    def _triage_findings(cls, value: str) -> str:
        from radiology.labels import CHEXPERT_14

        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in CHEXPERT_14]
        if unknown:
            raise ValueError(f"TRIAGE_FINDINGS: {', '.join(unknown)} not among the CheXpert "
                             f"findings ({', '.join(CHEXPERT_14)})")
        return value

    evaluation_dir: Path | None = Field(
        None, description="Where offline evaluation runs write (default STORAGE_DIR/evaluations).")
    evaluation_roots: str = Field(
        "", description="Comma-separated folders under which POST /v1/evaluations may name "
        "bundles and datasets (empty: STORAGE_DIR only).")

    def ensure_dirs(self) -> None:
        """Create the store (and the SQLite parent folder) if missing."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if self.database_url.startswith("sqlite:///"):
            database_file = Path(self.database_url.removeprefix("sqlite:///"))
            database_file.parent.mkdir(parents=True, exist_ok=True)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
