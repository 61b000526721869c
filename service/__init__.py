"""The report service: DICOM in over HTTP and DICOMweb, Celery workers on Redis, drafts out.

Layout (one concern per module, domain logic in plain functions that take a session):
  config      one pydantic-settings `Settings`, every knob an environment variable
  db, models  SQLAlchemy 2 engine/session and the schema (migrations in `migrations/`)
  storage     the content-addressed file store
  security    API keys and roles
  intake      DICOM upload validation and idempotent study/instance registration
  stow        DICOMweb STOW-RS: multipart/related parser and the PS3.18 response
  pipeline    the study state machine, audit trail, leases and the reconciler
  tasks       Celery app and tasks (ingest, generate, score)
  api         the FastAPI application
  system      start and stop a whole local system (redis, API, workers)
"""
