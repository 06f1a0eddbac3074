"""The Celery application: queues, reliability settings, and the due-poll pump bootstep.

Each choice below is explained in docs/reliability.md; in short: tasks are idempotent (a
ticket per published message, compare-and-set per change), so late acks and redelivery can
only help, and no delay ever lives in a worker's memory (no countdown/eta: celery#4400).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import task_received
from kombu.entity import Exchange, Queue

from worker.broker import use_guarded_redis_transport
from worker.settings import Settings

QUEUES = ("askq.start", "askq.poll", "askq.act", "askq.cancel", "askq.deliver")
"""One queue per task (the queue is named after its task), so slow tools never delay polls,
cancels never wait behind thousands of polls, webhooks to a slow receiver delay nothing else,
and each backlog is visible on its own."""

BROKER_TRANSPORT_OPTIONS = {
    # An unacked message of a dead worker comes back after this long; askq's own
    # leases recover the job sooner, so this only bounds message clean-up.
    "visibility_timeout": 300,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 15,
    "retry_on_timeout": True,
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 0.05,
}


def routing() -> dict[str, Any]:
    """Where each task goes; a worker and a producer that publishes must agree on it."""
    return {
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        "task_routes": {name: {"queue": name, "routing_key": name} for name in QUEUES},
        "task_create_missing_queues": False,
    }


def callback_queue(settings: Settings) -> Queue:
    """The user's queue for callbacks (ASKQ_CALLBACK_QUEUE), declared as Celery declares its
    default one (a direct exchange and routing key of the queue's name), so the user's plain
    `celery worker -Q NAME` consumes what askq sends there."""
    name = settings.callback_queue
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def create_publisher(settings: Settings) -> Celery:
    """A Celery app that only publishes, for a producer's `cancel`. Unlike `create_app` it
    changes nothing in the caller's process: not Celery's current app, kombu's transport
    aliases or a logger's level (a library must leave its caller's process alone)."""
    app = Celery("askq-producer", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=BROKER_TRANSPORT_OPTIONS,
        broker_connection_retry=False,
        task_serializer="json",
        task_send_sent_event=True,
        **routing(),
    )
    return app


def create_app(settings: Settings) -> Celery:
    use_guarded_redis_transport()
    # one INFO line per API request would drown the worker log; errors still show
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = Celery("askq", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=BROKER_TRANSPORT_OPTIONS,
        broker_heartbeat=0,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # askq tasks wait on HTTP, not the CPU: threads keep many in flight per process
        # at a fraction of prefork's memory (measured in docs/benchmarks.md). `--pool` and
        # `--concurrency` on the command line still win.
        worker_pool="threads",
        worker_concurrency=16,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_soft_shutdown_timeout=20.0,
        worker_enable_soft_shutdown_on_idle=False,
        worker_hijack_root_logger=False,
        task_default_queue="askq.start",
        **routing(),
    )
    from worker.heartbeat import reserve_on_receipt
    from worker.pump import PumpStep

    app.steps["worker"].add(PumpStep)
    task_received.connect(reserve_on_receipt, weak=False, dispatch_uid="askq-reserve")
    return app
