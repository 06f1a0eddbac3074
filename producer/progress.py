"""Watching a batch: a live bar on a terminal, plain periodic lines otherwise (logs, CI).

Everything goes to stderr, so `askq batch f.jsonl --wait > out` keeps stdout for data.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from producer.client import BatchStatus, Client
from worker.states import JobStatus

REFRESH_S = 0.25
PLAIN_EVERY_S = 5.0


def describe(status: BatchStatus) -> str:
    failed = status.finished - status.completed
    return (
        f"{status.finished}/{status.size} done ({status.completed} completed, {failed} not), "
        f"{status.in_flight} in flight, {status.counts.get(JobStatus.PENDING, 0)} pending"
    )


def watch_batch(
    client: Client, batch_id: str, timeout: float | None = None, stream: TextIO | None = None
) -> BatchStatus:
    """Block until the batch is done; raises `TimeoutError` after `timeout` seconds."""
    stream = stream or sys.stderr
    deadline = None if timeout is None else time.monotonic() + timeout
    if stream.isatty():
        return _watch_bar(client, batch_id, deadline, stream)
    return _watch_plain(client, batch_id, deadline, stream)


def _status(client: Client, batch_id: str) -> BatchStatus:
    status = client.status(batch_id)
    assert isinstance(status, BatchStatus)
    return status


def _check_deadline(deadline: float | None, batch_id: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"{batch_id} is not finished yet")


def _watch_bar(
    client: Client, batch_id: str, deadline: float | None, stream: TextIO
) -> BatchStatus:
    console = Console(file=stream)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[bad]} not[/]"),
        TextColumn("{task.fields[flight]} in flight"),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=console, transient=False) as bar:
        status = _status(client, batch_id)
        task = bar.add_task("askq", total=status.size, ok=0, bad=0, flight=0, rate=0.0)
        while True:
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(
                task,
                completed=status.finished,
                ok=status.completed,
                bad=status.finished - status.completed,
                flight=status.in_flight,
                rate=status.finished / elapsed,
            )
            if status.done:
                return status
            _check_deadline(deadline, batch_id)
            time.sleep(REFRESH_S)
            status = _status(client, batch_id)


def _watch_plain(
    client: Client, batch_id: str, deadline: float | None, stream: TextIO
) -> BatchStatus:
    last = 0.0
    while True:
        status = _status(client, batch_id)
        now = time.monotonic()
        if status.done or now - last >= PLAIN_EVERY_S:
            print(f"askq: {batch_id}: {describe(status)}", file=stream, flush=True)
            last = now
        if status.done:
            return status
        _check_deadline(deadline, batch_id)
        time.sleep(REFRESH_S)
