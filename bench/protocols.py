"""The three protocols, polling vs provider webhooks: requests per job and latency overhead
for the same batch (`python -m bench protocols`).

For each style the same paced batch runs twice on a fresh Redis DB: once polled (askq's
defaults: back-off 0.5 → 8 s and learned run durations; and once with back-off only), once
with webhooks (the emulator signs and delivers `response.*` / `agent.session.*` events to an
`askq webhooks` receiver in its own process; polls only every ASKQ_WEBHOOK_POLL_S). Assistants
runs have no webhooks: that cell is empty by design.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from bench.askq_run import run_askq
from bench.infra import ROOT, Stack

SECRET = "whsec_" + base64.b64encode(b"askq-bench-webhook-secret-32byt").decode()
STYLES = ("assistants", "responses", "agents")
STYLE_ENV = {"ASKQ_AGENT_ID": "agent_bench", "ASKQ_MODEL": "bench-model"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def receiver(redis_url: str, style: str) -> Iterator[str]:
    """`askq webhooks` in its own process; yields its /webhooks URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
    env |= {
        "ASKQ_REDIS_URL": redis_url,
        "ASKQ_API_STYLE": style,
        "ASKQ_WEBHOOK_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "webhooks", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.1)
        yield f"{base}/webhooks"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_protocols(
    stack: Stack,
    run_times: list[float],
    *,
    concurrency: int,
    rate: float,
    timeout_s: float,
    webhook_poll_s: float,
    poll_after_ms: int | None = None,
) -> list[dict[str, Any]]:
    runs = []
    inflight = {"ASKQ_MAX_INFLIGHT": str(len(run_times) + 10)}
    for style in STYLES:
        base = {"ASKQ_API_STYLE": style, **STYLE_ENV, **inflight}
        modes: list[tuple[str, dict[str, str]]] = [
            ("polling", base),
            ("polling, back-off only", {**base, "ASKQ_POLL_PREDICT": "false"}),
        ]
        if style != "assistants":
            hooked = {
                **base,
                "ASKQ_WEBHOOK_SECRET": SECRET,
                "ASKQ_WEBHOOK_POLL_S": str(webhook_poll_s),
            }
            modes.append(("webhooks", hooked))
        for mode, env in modes:
            url = stack.fresh_db()
            with contextlib.ExitStack() as scope:
                if "ASKQ_WEBHOOK_SECRET" in env:
                    hook = scope.enter_context(receiver(url, style))
                    stack.control.configure(webhook_url=hook, webhook_secret=SECRET)
                else:
                    stack.control.configure(webhook_url=None, webhook_secret=None)
                r = run_askq(
                    stack,
                    run_times,
                    concurrency=concurrency,
                    env=env,
                    timeout_s=timeout_s,
                    label=f"{style}: {mode}",
                    rate=rate,
                    redis_url=url,
                    poll_after_ms=poll_after_ms,
                )
            r["style"], r["mode"], r["hint_ms"] = style, mode, poll_after_ms
            r["webhooks_sent"] = stack.control.stats().get("webhooks", {})
            runs.append(r)
            line = (
                f"{r['system']:<34} {r['completed']}/{r['jobs']} "
                f"req/job={r['total_requests_per_job']:.2f} "
                f"overhead p50={r['overhead_s']['p50']:.2f} p95={r['overhead_s']['p95']:.2f}"
            )
            print(line, file=sys.stderr)
    stack.control.configure(webhook_url=None, webhook_secret=None)
    return runs


def table(runs: list[dict[str, Any]]) -> str:
    """The markdown table of docs/benchmarks.md."""
    lines = [
        "| style | mode | completed | requests / job | by route | overhead p50 | p95 | p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        o = r["overhead_s"]
        routes = ", ".join(
            f"{route.removeprefix('/v1')} {n:.2f}" for route, n in r["requests_per_job"].items()
        )
        lines.append(
            f"| {r['style']} | {r['mode']} | {r['completed']}/{r['jobs']} "
            f"| {r['total_requests_per_job']:.2f} | {routes} "
            f"| {o['p50']:.2f} s | {o['p95']:.2f} s | {o['p99']:.2f} s |"
        )
    return "\n".join(lines)
