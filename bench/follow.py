"""`python -m bench.follow`: what following a batch costs Redis, against re-reading it.

A private Redis holds one batch; jobs are ended one by one at a steady pace by the transition
script (as workers end them), while a reader prints each record once its job has ended:
- `follow`: `Client.iter_results(batch_id, follow=True)` (`askq results --follow`);
- `reread`: what a script does without it: `Client.results` every 0.2 s (the interval of
  `Client.wait`), keeping the records that newly ended.
Each run counts the Redis commands the reader caused (commandstats, minus a run with no
reader) and how long after its end each record reached the reader.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from producer.client import Client
from producer.local_redis import LocalRedis
from worker.batches import BatchStore
from worker.models import JobRequest
from worker.redis_store import connect
from worker.settings import Settings, load_settings
from worker.states import JobStatus
from worker.store import JobStore

REREAD_INTERVAL_S = 0.2


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def follow(settings: Settings, batch_id: str, seen: dict[str, float], size: int) -> None:
    with Client(settings) as client:
        for result in client.iter_results(batch_id, follow=True):
            seen[result.job_id] = time.monotonic()


def reread(settings: Settings, batch_id: str, seen: dict[str, float], size: int) -> None:
    with Client(settings) as client:
        while len(seen) < size:
            for result in client.results(batch_id):
                if result.status.terminal and result.job_id not in seen:
                    seen[result.job_id] = time.monotonic()
            time.sleep(REREAD_INTERVAL_S)


Reader = Callable[[Settings, str, dict[str, float], int], None]


def run(server: LocalRedis, db: int, reader: Reader | None, jobs: int, gap_s: float) -> Any:
    settings = load_settings(redis_url=server.url_for(db), assistant_id="a")
    redis_client = connect(settings)
    redis_client.flushdb()
    store, batches = JobStore(redis_client, settings), BatchStore(redis_client, settings)
    submitted = batches.submit([JobRequest(question=f"q{i}") for i in range(jobs)], batch=True)
    assert submitted.batch_id is not None
    seen: dict[str, float] = {}
    ended: dict[str, float] = {}
    thread = None
    if reader is not None:
        thread = threading.Thread(target=reader, args=(settings, submitted.batch_id, seen, jobs))
        thread.start()
        time.sleep(0.5)  # the reader is waiting before the first end
    before = commands(redis_client)
    for job_id in submitted.job_ids:
        loaded = store.load(job_id)
        record = loaded.record.model_copy(update={"status": JobStatus.COMPLETED})
        store.transition(loaded, record, next_task=None, due_at=None, now=store.server_time())
        ended[job_id] = time.monotonic()
        time.sleep(gap_s)
    if thread is not None:
        thread.join(timeout=120)
        assert not thread.is_alive() and len(seen) == jobs, "the reader did not get every record"
    total = commands(redis_client) - before
    redis_client.close()
    delays = sorted(seen[j] - ended[j] for j in seen)
    return {
        "commands": total,
        "delay_ms": {
            "p50": round(statistics.median(delays) * 1000, 1) if delays else None,
            "max": round(delays[-1] * 1000, 1) if delays else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between two ends")
    args = parser.parse_args()
    gap = args.gap_ms / 1000
    with LocalRedis(databases=4) as server:
        baseline = run(server, 1, None, args.jobs, gap)["commands"]
        figures = {}
        for db, (name, reader) in enumerate((("follow", follow), ("reread", reread)), 2):
            measured = run(server, db, reader, args.jobs, gap)
            measured["commands"] -= baseline
            measured["commands_per_job"] = round(measured["commands"] / args.jobs, 2)
            figures[name] = measured
    print(json.dumps({"jobs": args.jobs, "gap_ms": args.gap_ms, **figures}, indent=2))


if __name__ == "__main__":
    main()
