"""The Celery workers: the app (built from the settings on first use), one module per stage (ingest,
generate, score, evaluate, deliver: the outbox), the heartbeat, the generate worker's model, and
test-only fault injection."""
