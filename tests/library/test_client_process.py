"""The Python API as a library: it leaves its caller's process alone and closes what it opens.

Each check runs in a fresh interpreter, so nothing another test imported or configured can
hide a change (or cause one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PRELUDE = r"""
import json, logging, os, signal, sys, threading, warnings

import kombu.transport

import celery._state


def snapshot():
    loggers = {"": logging.getLogger()}
    loggers.update(
        (name, logger) for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    )
    signals = {}
    for number in sorted(signal.valid_signals()):
        try:
            signals[str(number)] = repr(signal.getsignal(number))
        except (OSError, ValueError):
            pass
    return {
        "transport_aliases": dict(kombu.transport.TRANSPORT_ALIASES),
        "loggers": {
            name: [
                logger.level,
                logger.disabled,
                logger.propagate,
                sorted(type(handler).__name__ for handler in logger.handlers),
            ]
            for name, logger in loggers.items()
        },
        "logging_disable": logging.root.manager.disable,
        "signals": signals,
        "environ": dict(os.environ),
        "warning_filters": repr(warnings.filters),
        "excepthooks": repr((sys.excepthook, threading.excepthook)),
        "current_celery_app": repr(celery._state._tls.current_app),
    }


def changes(before, after):
    found = []
    for key, old in before.items():
        new = after[key]
        if key == "loggers":
            for name, state in new.items():
                # a logger created meanwhile is fine while nobody configured it: libraries
                # give theirs a NullHandler, as the logging HOWTO asks
                untouched = [logging.NOTSET, False, True, ["NullHandler"] * len(state[3])]
                if state != old.get(name, untouched):
                    found.append(f"logger {name!r}: {old.get(name)} -> {state}")
        elif new != old:
            found.append(f"{key}: {old!r} -> {new!r}")
    return found


before_import = snapshot()
from producer import Client, Settings  # noqa: E402

report = {"import": changes(before_import, snapshot())}
settings = Settings(redis_url=sys.argv[1], assistant_id="asst_test")
"""

SCRIPT = (
    PRELUDE
    + r"""
calls = [
    ("Client()", lambda: Client(settings)),
    ("ask", lambda: client.ask("What is 2 + 2?")),
    ("submit_batch", lambda: client.submit_batch(["a", "b"], name="n")),
    ("submit", lambda: client.submit(["c"])),
    ("status (job)", lambda: client.status(job_id)),
    ("status (batch)", lambda: client.status(batch_id)),
    ("finished", lambda: client.finished(batch_id)),
    ("wait", lambda: client.wait(job_id, timeout=0.05)),
    ("results", lambda: list(client.results(batch_id))),
    ("cancel (job)", lambda: client.cancel(job_id)),
    ("cancel (batch)", lambda: client.cancel(batch_id)),
    ("close", lambda: client.close()),
]
client = job_id = batch_id = None
for name, call in calls:
    before = snapshot()
    try:
        value = call()
    except TimeoutError:
        value = None
    after = snapshot()
    if name == "Client()":
        client = value
    elif name == "ask":
        job_id = value
    elif name == "submit_batch":
        batch_id = value
    report[name] = changes(before, after)
print(json.dumps(report))
"""
)

ASYNC_SCRIPT = (
    PRELUDE
    + r"""
import asyncio

from producer import AsyncClient


async def use_async_client():
    async with AsyncClient(settings) as client:
        job_id = await client.ask("What is 2 + 2?")
        batch_id = await client.submit_batch(["a", "b"], name="n")
        await client.status(job_id)
        await client.status(batch_id)
        await client.batches()
        try:
            await client.wait(job_id, timeout=0.05)
        except TimeoutError:
            pass
        [r async for r in client.results(batch_id)]
        [r async for r in client.iter_results(batch_id)]
        await client.cancel(job_id)
        await client.cancel(batch_id)


before = snapshot()
asyncio.run(use_async_client())
report["AsyncClient"] = changes(before, snapshot())
print(json.dumps(report))
"""
)

CONNECTIONS_SCRIPT = r"""
import sys
import time

import redis

from producer import Client, Settings

url, db = sys.argv[1], sys.argv[2]
watcher = redis.Redis.from_url(url)
mine = watcher.client_id()


def open_connections():
    return [c for c in watcher.client_list() if c["db"] == db and int(c["id"]) != mine]


with Client(Settings(redis_url=url, assistant_id="asst_test")) as client:
    client.cancel(client.ask("What is 2 + 2?"))
    while_open = len(open_connections())
deadline = time.monotonic() + 10  # the server drops a closed client on its next loop
while open_connections() and time.monotonic() < deadline:
    time.sleep(0.05)
print(while_open, len(open_connections()))
"""


ASYNC_CONNECTIONS_SCRIPT = r"""
import asyncio
import sys
import time

import redis

from producer import AsyncClient, Settings

url, db = sys.argv[1], sys.argv[2]
watcher = redis.Redis.from_url(url)
mine = watcher.client_id()


def open_connections():
    return [c for c in watcher.client_list() if c["db"] == db and int(c["id"]) != mine]


async def use():
    async with AsyncClient(Settings(redis_url=url, assistant_id="asst_test")) as client:
        await client.cancel(await client.ask("What is 2 + 2?"))
        return len(open_connections())


while_open = asyncio.run(use())
deadline = time.monotonic() + 10  # the server drops a closed client on its next loop
while open_connections() and time.monotonic() < deadline:
    time.sleep(0.05)
print(while_open, len(open_connections()))
"""


def run_fresh(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_using_the_client_changes_nothing_global_in_the_callers_process(redis_url: str) -> None:
    report = json.loads(run_fresh(SCRIPT, redis_url))
    assert set(report) >= {"import", "ask", "cancel (job)", "cancel (batch)", "close"}
    assert {step: found for step, found in report.items() if found} == {}


def test_using_the_async_client_changes_nothing_global_either(redis_url: str) -> None:
    report = json.loads(run_fresh(ASYNC_SCRIPT, redis_url))
    assert set(report) == {"import", "AsyncClient"}
    assert {step: found for step, found in report.items() if found} == {}


@pytest.mark.parametrize("script", [CONNECTIONS_SCRIPT, ASYNC_CONNECTIONS_SCRIPT])
def test_close_and_the_with_block_close_redis_and_broker_connections(
    redis_url: str, script: str
) -> None:
    db = redis_url.rsplit("/", 1)[1]
    while_open, after_close = map(int, run_fresh(script, redis_url, db).split())
    assert while_open >= 2  # the job store's and the broker's, at least
    assert after_close == 0


def test_producer_exports_what_a_user_of_the_api_handles() -> None:
    import producer

    for name in producer.__all__:
        assert getattr(producer, name) is not None
    handled = {"Client", "JobRequest", "JobResult", "BatchStatus", "BatchRecord", "NotFound"}
    assert handled | {"AskqError", "InputError", "StoreError", "JobStatus"} <= set(producer.__all__)
    for package in ("producer", "worker", "emulator"):
        assert (Path(ROOT) / package / "py.typed").is_file()
