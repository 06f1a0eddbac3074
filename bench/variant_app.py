"""`celery -A bench.variant_app worker`: the askq worker with experimental changes applied,
named in BENCH_VARIANT (comma-separated), to measure what a proposed patch would save
before proposing it. Nothing here is used by askq itself.

- `noevents`: Celery task events off (`worker_send_task_events`, `task_send_sent_event`).
- `nosent`: only the task-sent event off (the pump's publishes), worker task events kept.
- `nocount`: no per-request HINCRBY of `askq:api-requests` (Runtime.count_request).
"""

from __future__ import annotations

import os

from worker.application import app
from worker.runtime import Runtime

VARIANTS = {v.strip() for v in os.environ.get("BENCH_VARIANT", "").split(",") if v.strip()}

if "noevents" in VARIANTS:
    app.conf.worker_send_task_events = False
    app.conf.task_send_sent_event = False

if "nosent" in VARIANTS:
    # Flower still sees every task (received/started/succeeded come from the worker); only
    # the "sent" event the pump emits per published message goes
    app.conf.task_send_sent_event = False

if "nocount" in VARIANTS:

    def _no_count(self: Runtime, route: str, status: int) -> None:
        return None

    Runtime.count_request = _no_count  # type: ignore[method-assign]

__all__ = ["app"]
