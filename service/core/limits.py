"""In-process limits on work in flight: concurrent uploads (in total and per API key), rates of
attempts per client (sign-in, re-authentication), and gates around costly work (argon2).

Counters live in the API process: with several API processes the totals multiply by their number
(service/README, "Threat model and limits"). A request over a limit is answered at once, never
queued: 503 when the process is full, 429 when one key has too many uploads running, both with
Retry-After.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
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


class RateLimit:
    """At most `limit` events per key within a sliding `window_s` (e.g. sign-in attempts per
    client address); `hit` records one or raises Busy(429) with the seconds until a slot frees."""

    def __init__(self, limit: int, window_s: float, *, what: str) -> None:
        self.limit, self.window_s, self.what = limit, window_s, what
        self.events: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def hit(self, *keys: str) -> None:
        """Count one event for each key; refused (nothing counted) when any key is at its limit."""
        now = time.monotonic()
        with self.lock:
            if len(self.events) > MAX_TRACKED_KEYS:
                self._forget(now)
            queues = [self.events.setdefault(key, deque()) for key in keys]
            for queue in queues:
                while queue and queue[0] <= now - self.window_s:
                    queue.popleft()
            full = [q for q in queues if len(q) >= self.limit]
            if full:
                wait = max(int(q[0] + self.window_s - now) + 1 for q in full)
                raise Busy(429, "too_many_requests", f"too many {self.what} from this client; "
                           f"try again in {wait} s", wait)
            for queue in queues:
                queue.append(now)

    def _forget(self, now: float) -> None:
        for key in [k for k, q in self.events.items() if not q or q[-1] <= now - self.window_s]:
            del self.events[key]


#: Keys a RateLimit tracks before it forgets the idle ones (bounds its memory under a flood).
MAX_TRACKED_KEYS = 100_000


class Gate:
    """At most `size` callers inside at once (e.g. argon2 checks, 64 MiB each); a caller waits
    up to `wait_s`, then gets Busy(503). `peak` records the most that were ever inside."""

    def __init__(self, size: int, *, wait_s: float, what: str) -> None:
        self.size, self.wait_s, self.what = size, wait_s, what
        self.semaphore = threading.BoundedSemaphore(size)
        self.inside = 0
        self.peak = 0
        self.lock = threading.Lock()

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Hold one place while the block runs."""
        if not self.semaphore.acquire(timeout=self.wait_s):
            raise Busy(503, "busy", f"too many {self.what} at once; try again shortly",
                       max(int(self.wait_s), 1))
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        try:
            yield
        finally:
            with self.lock:
                self.inside -= 1
            self.semaphore.release()
