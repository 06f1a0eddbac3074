"""HttpApi's error messages, against a real closed port: they name the route once (routes
already carry their method: `POST /threads`), as users read them in job errors and logs."""

from __future__ import annotations

import socket

import httpx
import pytest

from worker.adapters.base import HttpApi
from worker.errors import RetryableApiError


def test_a_connection_error_names_the_route_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        api = HttpApi(client)
        with pytest.raises(RetryableApiError) as caught:
            api.call("POST", "threads", route="POST /threads", json={})
    assert caught.value.code == "connection_error"
    assert str(caught.value).startswith("POST /threads: ConnectError")
