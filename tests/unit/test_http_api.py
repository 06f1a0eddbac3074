"""HttpApi's error messages, against a real closed port: they name the route once (routes
already carry their method: `POST /threads`), as users read them in job errors and logs."""

from __future__ import annotations

import socket

import httpx
import pytest

from worker.adapters.base import HttpApi
from worker.errors import RateLimited, RetryableApiError


def closed_port() -> str:
    """A URL where nothing listens (the port was bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_connection_error_names_the_route_once() -> None:
    with httpx.Client(base_url=closed_port()) as client:
        api = HttpApi(client)
        with pytest.raises(RetryableApiError) as caught:
            api.call("POST", "threads", route="POST /threads", json={})
    assert caught.value.code == "connection_error"
    assert str(caught.value).startswith("POST /threads: ConnectError")


def test_a_nested_follow_up_leaves_the_outer_one_in_force() -> None:
    """An abandoned run's cancel (a follow-up) looks up the run first, itself a follow-up:
    the cancel after that look must still be allowed to overdraw the budget."""
    seen: list[bool] = []

    def budget(follow_up: bool) -> float:
        seen.append(follow_up)
        return 0.0 if follow_up else 5.0  # the budget is spent: only follow-ups go

    with httpx.Client(base_url=closed_port()) as client:
        api = HttpApi(client, budget=budget)
        with api.follow_up():
            with api.follow_up(), pytest.raises(RetryableApiError):
                api.call("GET", "runs", route="GET /runs")  # the look
            with pytest.raises(RetryableApiError) as caught:
                api.call("POST", "cancel", route="POST /cancel")  # the cancel
        with pytest.raises(RateLimited):
            api.call("POST", "runs", route="POST /runs")
    assert caught.value.code == "connection_error"  # sent, not refused by the budget
    assert seen == [True, True, False]
