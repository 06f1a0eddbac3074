"""Predictive polling after warm-up: `python -m bench.predict`.

The `policy` runs start every job within the first seconds of a fresh Redis, before any run
has finished, so nothing has been learned yet when most first looks are scheduled. This
measures the steady state a long-lived deployment is in: a warm-up batch of the same
workload first, then the measured batch, with ASKQ_POLL_PREDICT on and off.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.infra import Stack, latency_summary
from bench.workloads import durations, question
from producer.client import Client
from worker.settings import load_settings

WARM_UP = 60


def measure(stack: Stack, spec: str, jobs: int, predict: bool) -> dict[str, Any]:
    redis_url = stack.fresh_db()
    stack.reset_emulator(run_time_s=0.5, poll_after_ms=None)
    env = stack.worker_env(
        redis_url, ASKQ_POLL_PREDICT=str(predict).lower(), ASKQ_MAX_INFLIGHT=str(jobs + 10)
    )
    workers = stack.start_workers(1, redis_url, 16, env)
    client = Client(load_settings(redis_url=redis_url, assistant_id="asst_bench"))
    try:
        warm = client.submit_batch(
            [question(i, t) for i, t in enumerate(durations(spec, WARM_UP, seed=1))]
        )
        client.wait(warm, timeout=300)
        stack.control.reset()
        run_times = durations(spec, jobs, seed=2)
        batch = client.submit_batch([question(i, t) for i, t in enumerate(run_times)])
        client.wait(batch, timeout=600)
        stats = stack.control.stats()
        # from the run's creation (askq's started_at), so the queueing of 200 starts at once
        # is not counted: what polling adds after the run is done
        overheads = [
            r.finished_at.timestamp() - r.started_at.timestamp() - t
            for r, t in zip(client.batch_store.batch_records(batch), run_times, strict=True)
            if r.finished_at is not None and r.started_at is not None
        ]
        return {
            "workload": spec,
            "predict": predict,
            "jobs": jobs,
            "requests_per_job": sum(stats["requests"].values()) / jobs,
            "gets_per_job": sum(stats["gets_by_run"].values()) / jobs,
            "overhead_s": latency_summary(overheads),
        }
    finally:
        client.close()
        for worker in workers:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="5,mixed")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--out", default="bench/results/predict-warm.json")
    args = parser.parse_args()
    runs = []
    with Stack.start() as stack:
        for spec in args.workloads.split(","):
            for predict in (False, True):
                r = measure(stack, spec, args.jobs, predict)
                o = r["overhead_s"]
                print(
                    f"{spec:>6} predict={predict!s:5} req/job={r['requests_per_job']:.2f} "
                    f"GETs/job={r['gets_per_job']:.2f} overhead p50={o['p50']:.2f} "
                    f"p95={o['p95']:.2f}",
                    file=sys.stderr,
                )
                runs.append(r)
    with open(args.out, "w") as out:
        json.dump({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs}, out, indent=1)


if __name__ == "__main__":
    main()
