"""Provider webhooks: the receiver (`askq webhooks`), the emulator's signed deliveries, and
jobs that end on a webhook instead of a poll, on a real Redis, worker and emulator."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from emulator import EmulatorConfig, serve_in_thread
from producer.local_redis import free_port
from producer.webhooks import create_app
from tests.conftest import Askq, wait_until
from tests.integration.test_metrics import exporter, scrape, value
from worker.keys import Keys
from worker.settings import Settings, load_settings
from worker.webhook_index import RunIndex

SECRET = "whsec_" + base64.b64encode(b"askq-test-webhook-secret-32bytes").decode()
ENDING_STYLES = pytest.mark.parametrize("style", ["responses", "agents"], indirect=True)
"""Webhooks exist for responses and sessions only; Assistants runs have none (askq refuses
ASKQ_WEBHOOK_SECRET with ASKQ_API_STYLE=assistants)."""


def sign(body: str, webhook_id: str, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    """Standard Webhooks signing written out here with hashlib, independently of the
    `standardwebhooks` package the receiver verifies with."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
        "content-type": "application/json",
    }


def event(kind: str, remote_id: str) -> str:
    return json.dumps(
        {"id": "evt_1", "object": "event", "created_at": 1, "type": kind, "data": {"id": remote_id}}
    )


@pytest.fixture
def receiver_settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, api_style="responses", webhook_secret=SECRET)


@pytest.fixture
def receiver(receiver_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(receiver_settings)) as client:
        yield client


def post(client: TestClient, body: str, **headers: str) -> httpx.Response:
    webhook_id = headers.pop("webhook_id", "wh_" + secrets.token_hex(8))
    signed = sign(body, webhook_id, int(headers.pop("timestamp", time.time())))  # type: ignore[arg-type]
    return client.post("/webhooks", content=body, headers={**signed, **headers})


def counts(settings: Settings) -> dict[str, int]:
    raw = redis.Redis.from_url(settings.redis_url).hgetall(Keys(settings.key_prefix).webhook_events)
    return {k.decode(): int(v) for k, v in raw.items()}


def waiting_job(settings: Settings, job_id: str, remote_id: str, due_at: float) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.key_prefix)
    client.hset(keys.job(job_id), mapping={"next": "askq.poll", "status": "running"})
    client.zadd(keys.due, {job_id: due_at})
    RunIndex(client, settings).record(job_id, [remote_id], time.time())
    return client


def test_a_verified_event_makes_its_job_due_now_once(
    receiver: TestClient, receiver_settings: Settings
) -> None:
    later = time.time() + 3600
    client = waiting_job(receiver_settings, "job_a", "resp_a", later)
    due = Keys(receiver_settings.key_prefix).due
    reply = post(receiver, event("response.completed", "resp_a"), webhook_id="wh_1")
    assert reply.status_code == 200 and reply.json()["message"] == "matched"
    assert float(client.zscore(due, "job_a") or later) <= time.time()
    client.zadd(due, {"job_a": later})
    again = post(receiver, event("response.completed", "resp_a"), webhook_id="wh_1")
    assert again.status_code == 200 and again.json()["message"] == "duplicate"
    assert client.zscore(due, "job_a") == later  # a repeated webhook-id changes nothing
    assert counts(receiver_settings) == {"received": 2, "matched": 1, "duplicate": 1}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"webhook-signature": "v1,AAAA"}, 400),
        ({"webhook-signature": "garbage"}, 400),
        ({"timestamp": str(int(time.time()) - 600)}, 400),
        ({"timestamp": str(int(time.time()) + 600)}, 400),
    ],
    ids=["wrong-signature", "malformed-signature", "too-old", "too-new"],
)
def test_bad_signatures_and_timestamps_are_rejected(
    receiver: TestClient, receiver_settings: Settings, change: dict[str, str], status: int
) -> None:
    client = waiting_job(receiver_settings, "job_b", "resp_b", time.time() + 3600)
    reply = post(receiver, event("response.completed", "resp_b"), **change)
    assert reply.status_code == status
    assert counts(receiver_settings) == {"rejected": 1}
    assert float(client.zscore(Keys(receiver_settings.key_prefix).due, "job_b") or 0) > time.time()


def test_unsigned_oversized_and_shapeless_bodies(
    receiver: TestClient, receiver_settings: Settings
) -> None:
    assert receiver.post("/webhooks", content=event("response.failed", "r")).status_code == 400
    huge = "x" * (2 << 20)
    assert post(receiver, huge).status_code == 413
    assert post(receiver, json.dumps({"type": "response.failed"})).status_code == 400
    assert counts(receiver_settings) == {"rejected": 3}


def test_events_without_news_are_ignored_and_strangers_unmatched(
    receiver: TestClient, receiver_settings: Settings
) -> None:
    ignored = post(receiver, event("agent.session.in_progress", "sess_x"))
    assert ignored.json()["message"] == "ignored"
    unmatched = post(receiver, event("response.completed", "resp_unknown"))
    assert unmatched.status_code == 200 and unmatched.json()["message"] == "unmatched"
    assert counts(receiver_settings) == {"received": 2, "ignored": 1, "unmatched": 1}
    assert receiver.get("/healthz").status_code == 200


def test_an_event_before_its_run_is_recorded_pokes_the_job_when_it_is(
    receiver: TestClient, receiver_settings: Settings
) -> None:
    assert post(receiver, event("response.completed", "resp_c")).json()["message"] == "unmatched"
    later = time.time() + 3600
    client = waiting_job(receiver_settings, "job_c", "resp_c", later)
    assert (
        float(client.zscore(Keys(receiver_settings.key_prefix).due, "job_c") or later)
        <= time.time()
    )


def test_receiver_answers_503_while_redis_is_away() -> None:
    settings = load_settings(
        redis_url="redis://127.0.0.1:1/0", api_style="agents", webhook_secret=SECRET
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 503
        assert post(client, event("agent.session.idle", "sess_1")).status_code == 503


def test_webhook_secret_needs_a_style_with_webhooks() -> None:
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="responses and agents"):
        load_settings(api_style="assistants", webhook_secret=SECRET)
    with pytest.raises(ConfigError, match="whsec_"):
        load_settings(api_style="responses", webhook_secret="whsec_!!")


# --- the emulator's deliveries ---------------------------------------------------------


def serve(app: Any, port: int | None = None) -> tuple[str, Callable[[], None]]:
    """Serve `app` from a thread (on `port`, else a free one); returns its URL and a stop."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, what="a server in a thread")

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def test_emulator_events_verify_with_the_openai_sdk() -> None:
    """The emulator signs with `standardwebhooks`; OpenAI's own verifier must accept it."""
    from openai import OpenAI

    captured: list[tuple[bytes, dict[str, str]]] = []

    async def capture(request: Request) -> Response:
        captured.append((await request.body(), dict(request.headers)))
        return Response(status_code=200)

    url, stop = serve(Starlette(routes=[Route("/hook", capture, methods=["POST"])]))
    config = EmulatorConfig(run_time_s=0.1, webhook_url=f"{url}/hook", webhook_secret=SECRET)
    try:
        with serve_in_thread(config) as emu:
            sdk = OpenAI(base_url=emu.url, api_key="k", webhook_secret=SECRET, max_retries=0)
            response = sdk.responses.create(model="m", input="hi", background=True)
            session = sdk.beta.agents.sessions.create(
                environment={"type": "none"}, agent={"model": "m"}, input="[tool:add {}]"
            )
            wait_until(lambda: len(captured) >= 3, 10, what="three deliveries")
            events = [sdk.webhooks.unwrap(body, headers) for body, headers in captured]
    finally:
        stop()
    kinds = {(e.type, e.data.id) for e in events}
    assert ("response.completed", response.id) in kinds
    assert ("agent.session.in_progress", session.id) in kinds
    assert ("agent.session.action_required", session.id) in kinds


# --- end to end ------------------------------------------------------------------------


@pytest.fixture
def hooked(make_askq: Callable[..., Askq]) -> Iterator[Callable[..., Askq]]:
    """An askq deployment with webhooks on, a receiver, and the emulator delivering to it."""
    stops: list[Callable[[], None]] = []

    def make(webhook_poll_s: float = 30.0, **faults: float) -> Askq:
        deployment = make_askq(
            webhook_secret=SECRET, webhook_poll_s=webhook_poll_s, tool_modules="tests.sample_tools"
        )
        url, stop = serve(create_app(deployment.settings))
        stops.append(stop)
        deployment.emulator.configure(
            webhook_url=f"{url}/webhooks", webhook_secret=SECRET, seed=3, **faults
        )
        deployment.start_worker()
        return deployment

    yield make
    for stop in stops:
        stop()


@ENDING_STYLES
def test_jobs_end_on_their_webhook_not_on_a_poll(hooked: Callable[..., Askq]) -> None:
    deployment = hooked(webhook_poll_s=30.0)
    questions = [f"What is {i} + 4?" for i in range(20)] + ['Add [tool:add {"a": 1, "b": 2}]']
    started = time.time()
    batch_id = deployment.client.submit_batch(questions)
    final = deployment.client.wait(batch_id, timeout=25)  # well before any 30 s safety poll
    assert final.completed == 21  # type: ignore[union-attr]
    print(f"\nwebhooks: 21 jobs in {time.time() - started:.1f} s")
    results = list(deployment.client.results(batch_id))
    assert results[-1].answer is not None and "add returned: 3" in results[-1].answer
    stats = deployment.emulator.stats()
    # one look per ending (the tool job ends twice: action required, then done)
    assert sum(stats["gets_by_run"].values()) <= 22 + 2, stats["gets_by_run"]
    events = counts(deployment.settings)
    assert events.get("matched", 0) >= 21 and events.get("rejected", 0) == 0
    with exporter(deployment.settings) as url:
        samples = scrape(url)
    assert value(samples, "askq_webhook_events_total", outcome="matched") == events["matched"]
    assert value(samples, "askq_webhook_events_total", outcome="rejected") == 0


@ENDING_STYLES
def test_lost_late_and_repeated_webhooks_still_end_every_job(
    hooked: Callable[..., Askq],
) -> None:
    deployment = hooked(
        webhook_poll_s=2.0, webhook_drop=0.3, webhook_duplicate=0.3, webhook_delay=0.3
    )
    batch_id = deployment.client.submit_batch([f"What is {i} * 5?" for i in range(20)])
    final = deployment.client.wait(batch_id, timeout=60)
    assert final.completed == 20  # type: ignore[union-attr]
    sent = deployment.emulator.stats()["webhooks"]
    assert sent.get("dropped", 0) > 0 and sent.get("duplicated", 0) > 0
    assert counts(deployment.settings).get("duplicate", 0) > 0
    assert set(deployment.emulator.stats()["runs_by_job"].values()) == {1}


# --- the command ------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["responses"], indirect=True)  # the command is style-blind
def test_the_askq_webhooks_command_serves_the_receiver(make_askq: Callable[..., Askq]) -> None:
    """`askq webhooks` as an operator runs it: refused without a secret (exit 2, one line),
    else it serves /healthz and matches a signed event to its waiting job."""
    unset = make_askq()
    refused = unset.cli("webhooks", "--port", str(free_port()), timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "ASKQ_WEBHOOK_SECRET" in refused.stderr

    deployment = make_askq(webhook_secret=SECRET)
    later = time.time() + 3600
    client = waiting_job(deployment.settings, "job_cmd", "resp_cmd", later)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "producer", "webhooks", "--port", str(port)],
        env=deployment.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, what="askq webhooks to answer /healthz")
        body = event("response.completed", "resp_cmd")
        reply = httpx.post(
            f"{url}/webhooks", content=body, headers=sign(body, "wh_cmd", int(time.time()))
        )
        assert reply.status_code == 200 and reply.json()["message"] == "matched"
        due = client.zscore(Keys(deployment.settings.key_prefix).due, "job_cmd")
        assert due is not None and due <= time.time()
    finally:
        process.terminate()
        process.wait(20)
    assert SECRET not in (process.stderr.read() if process.stderr else "")
