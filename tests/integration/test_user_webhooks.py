"""askq's own webhooks to users: signed in the Standard Webhooks scheme and verified here by
an independent implementation (the openai SDK's verifier, not the `standardwebhooks` code
askq signs with), retried with back-off through the outbox while the receiver is down, given
up after ASKQ_CALLBACK_RETRY_S; the delivery state shows in `askq status`."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from openai import OpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from producer.local_redis import free_port
from tests.conftest import ASSISTANTS_ONLY, BOTH_CLIENTS, Askq, wait_until
from tests.integration.test_webhooks import serve

pytestmark = ASSISTANTS_ONLY  # no protocol adapter takes part: the same outbox for all

SECRET = "whsec_" + base64.b64encode(b"askq-callback-secret-for-tests!!").decode()


class Receiver:
    """The user's endpoint: verifies each delivery with the openai SDK, keeps what passed."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.verifier = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1").webhooks
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.rejected = 0

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            self.verifier.verify_signature(body, headers, secret=SECRET)
        except Exception:
            self.rejected += 1
            return Response(status_code=400)
        self.events.append(json.loads(body))
        self.headers.append(headers)
        return Response(status_code=self.status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.receive, methods=["POST"])])


def test_webhooks_are_signed_verified_and_shown_delivered(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(callback_secret=SECRET)
    receiver = Receiver()
    url, stop = serve(receiver.app())
    hook = f"{url}/hook?token=user-part"
    try:
        deployment.start_worker()
        api = deployment.client
        batch_id = api.submit_batch([f"What is {i} + 3?" for i in range(4)], webhook_url=hook)
        asked = deployment.cli("ask", "What is 9 + 9?", "--webhook", hook)
        assert asked.returncode == 0, asked.stderr
        job_id = asked.stdout.strip()
        wait_until(lambda: len(receiver.events) >= 6, 60, what="four jobs, a batch, a job")
    finally:
        stop()
    assert receiver.rejected == 0
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in receiver.events:
        by_type.setdefault(event["type"], []).append(event["data"])
    jobs = {data["job_id"]: data for data in by_type["askq.job.done"]}
    assert set(jobs) == {*api.batch_store.batch_job_ids(batch_id), job_id}
    for record_id, data in jobs.items():
        assert data == api.status(record_id).to_json_dict()  # type: ignore[union-attr]
    (summary,) = by_type["askq.batch.done"]
    assert summary["batch_id"] == batch_id and summary["counts"] == {"completed": 4}
    ids = [h["webhook-id"] for h in receiver.headers]
    assert len(set(ids)) == len(ids) == 6 and f"{batch_id}.1.webhook" in ids
    secret_part = SECRET.removeprefix("whsec_")[:12]
    assert not any(secret_part in json.dumps(h) for h in receiver.headers)
    shown = deployment.cli("status", job_id)
    assert "webhook http://127.0.0.1:" in shown.stdout and "delivered" in shown.stdout
    assert "token=" not in shown.stdout  # the URL's query may hold the user's token
    (delivery,) = json.loads(deployment.cli("status", job_id, "--json").stdout)["callbacks"]
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        1,
        200,
    )


@BOTH_CLIENTS
def test_a_receiver_down_for_a_while_gets_it_when_back(make_askq: Callable[..., Askq]) -> None:
    deployment = make_askq(callback_secret=SECRET)
    port = free_port()  # nothing listens there yet: connections are refused
    deployment.start_worker()
    job_id = deployment.client.ask("What is 5 + 5?", webhook_url=f"http://127.0.0.1:{port}/hook")

    def attempts() -> int:
        found = deployment.client.deliveries(job_id)
        return found[0].attempts if found else 0

    wait_until(lambda: attempts() >= 3, 60, what="three failed attempts (1 s, 2 s back-off)")
    (down,) = deployment.client.deliveries(job_id)
    assert down.state == "retrying" and "ConnectError" in (down.last_error or "")
    shown = deployment.cli("status", job_id).stdout
    assert "retrying: 3 attempts so far" in shown or "retrying: 4 attempts" in shown, shown
    receiver = Receiver()
    _, stop = serve(receiver.app(), port)
    try:
        wait_until(lambda: receiver.events, 60, what="the delivery once the receiver is back")
    finally:
        stop()
    (event,) = receiver.events
    assert event["data"]["job_id"] == job_id
    (delivery,) = deployment.client.deliveries(job_id)
    assert delivery.state == "delivered" and delivery.attempts >= 4
    assert delivery.delivered_at is not None


@pytest.mark.parametrize("reply", [503, None], ids=["always-503", "never-up"])
def test_given_up_after_the_retry_window(make_askq: Callable[..., Askq], reply: int | None) -> None:
    deployment = make_askq(callback_secret=SECRET, callback_retry_s=4.0)
    receiver = Receiver(status=reply or 200)
    stop: Callable[[], None] | None = None
    if reply is not None:
        url, stop = serve(receiver.app())
    else:
        url = f"http://127.0.0.1:{free_port()}"
    deployment.start_worker()
    try:
        job_id = deployment.client.ask("What is 1 + 2?", webhook_url=f"{url}/hook")
        wait_until(
            lambda: [d.state for d in deployment.client.deliveries(job_id)] == ["given_up"],
            60,
            what="the webhook given up",
        )
    finally:
        if stop is not None:
            stop()
    (delivery,) = deployment.client.deliveries(job_id)
    assert delivery.attempts >= 2 and delivery.given_up_at is not None
    assert (delivery.last_status, delivery.last_error) == (
        (503, "HTTP 503") if reply else (None, delivery.last_error)
    )
    shown = deployment.cli("status", job_id).stdout
    assert f"given up {delivery.given_up_at:%Y-%m-%d}" in shown, shown
    assert len(receiver.events) == (delivery.attempts if reply else 0)
