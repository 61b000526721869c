"""Operating the service: liveness, readiness (database, Redis, a live worker per queue), Prometheus
metrics, and scoring report pairs on demand."""
