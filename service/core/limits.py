"""In-process limits on work in flight: concurrent uploads (in total and per API key).

Counters live in the API process: with several API processes the totals multiply by their number
(service/README, "Threat model and limits"). A request over a limit is answered at once, never
queued: 503 when the process is full, 429 when one key has too many uploads running, both with
Retry-After.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from service.core.errors import ServiceError


class Busy(ServiceError):
    """Too much in flight: 429 (this client) or 503 (the service), with Retry-After."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Slots:
    """At most `total` holders at once, and at most `per_key` of them with the same key."""

    def __init__(self, total: int, per_key: int, *, what: str, retry_after_s: int) -> None:
        self.total, self.per_key, self.what = total, per_key, what
        self.retry_after_s = retry_after_s
        self.held: Counter[str] = Counter()
        self.lock = threading.Lock()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold one slot for `key` while the block runs; Busy when none is free."""
        with self.lock:
            if self.held[key] >= self.per_key:
                raise Busy(429, "too_many_requests", f"this API key already has {self.per_key} "
                           f"{self.what} in progress; wait for one to finish",
                           self.retry_after_s)
            if sum(self.held.values()) >= self.total:
                raise Busy(503, "busy", f"the service is handling {self.total} {self.what}; "
                           "try again shortly", self.retry_after_s)
            self.held[key] += 1
        try:
            yield
        finally:
            with self.lock:
                self.held[key] -= 1
                if self.held[key] <= 0:
                    del self.held[key]
