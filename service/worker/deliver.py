"""The outbox stage (queue `outbox`, network-bound): deliver reports to the PACS and FHIR server.

One task message names an outbox message; the task delivers that message's lane (its study and
destination) from the oldest open message on, in order (`service.dicomweb.outbox.deliver`). The
database is the truth: a duplicate or redelivered message finds nothing due and sends nothing;
failed attempts are retried by the API's reconciler once their backoff has passed.
"""

from __future__ import annotations

from typing import Any

from service.core.config import get_settings
from service.dicomweb import outbox
from service.worker.heartbeat import worker_name


def deliver_message(self: Any, message_id: str) -> None:
    """Deliver the lane of one outbox message, in order, while the destination takes it."""
    outbox.deliver(get_settings(), int(message_id), worker=worker_name())
