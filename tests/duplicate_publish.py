"""Loaded into a test worker as a tool module: publishes every askq task message twice.

This is how the fault tests deliver duplicates on purpose without a hook in askq itself:
Celery's `after_task_publish` signal fires for each message the pump publishes, and this
module sends the same task with the same job id once more, from its own thread (publishing
from inside the signal handler re-enters kombu's producer and can block the pump).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from celery.signals import after_task_publish

DUPLICATE_HEADER = "askq_test_duplicate"
_pending: queue.Queue[tuple[str, list[Any], str | None]] = queue.Queue()


def _republish() -> None:
    from worker.application import app

    while True:
        name, args, routing_key = _pending.get()
        app.send_task(
            name,
            args=args,
            queue=routing_key,
            routing_key=routing_key,
            headers={DUPLICATE_HEADER: True},
        )


@after_task_publish.connect
def publish_again(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    body: Any = None,
    routing_key: str | None = None,
    **_: Any,
) -> None:
    if not sender or not sender.startswith("askq.") or (headers or {}).get(DUPLICATE_HEADER):
        return
    args = list(body[0]) if isinstance(body, tuple | list) else []
    _pending.put((sender, args, routing_key))


threading.Thread(target=_republish, name="duplicate-publisher", daemon=True).start()
