"""Radiologist review: worklist, claims, versioned edits, e-signatures, amendments, rejection,
history, the FHIR DiagnosticReport, and their `/v1` routes."""
