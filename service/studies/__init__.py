"""Studies: DICOM intake (upload checks, idempotent registration), images, the study state machine
and its reconciler, and the `/v1/studies` routes."""
