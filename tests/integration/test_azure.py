"""Azure's dialect: `api-version` on every request and the key in an `api-key` header.

The emulator refuses requests without them (404 / 401, as Azure does), so each test here
would fail if askq dropped the query parameter or sent the key as a bearer token.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Askq
from worker.errors import ConfigError
from worker.runtime import http_client
from worker.settings import load_settings
from worker.states import JobStatus

API_VERSION = "2025-04-01-preview"
AZURE = {"require_query": f"api-version={API_VERSION}", "require_key_header": "api-key"}
TOOLS = "tests.sample_tools"


def azure_askq(make_askq: Callable[..., Askq], **overrides: object) -> Askq:
    deployment = make_askq(
        api_key="azure-key",
        api_query=f"api-version={API_VERSION}",
        api_key_header="api-key",
        tool_modules=TOOLS,
        **overrides,
    )
    deployment.emulator.configure(**AZURE)
    return deployment


def test_batch_tools_threads_and_cancel_through_azure_settings(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = azure_askq(make_askq)
    deployment.start_worker()
    client = deployment.client
    add = '[tool:add {"a": 2, "b": 3}]'
    batch_id = client.submit_batch([f"What is {i} * 9?" for i in range(20)] + [f"Add {add}"])
    final = client.wait(batch_id, timeout=90)
    assert final.completed == 21, final  # type: ignore[union-attr]
    results = list(client.results(batch_id))
    assert [r.answer for r in results[:20]] == [f"{i} * 9 = {i * 9}" for i in range(20)]
    assert results[20].answer is not None and "add returned: 5" in results[20].answer
    follow = client.wait(client.ask("What is 5 + 5?", thread_id=results[0].thread_id), 30)
    assert follow.answer == "5 + 5 = 10"  # type: ignore[union-attr]
    never = client.ask("[never] go on")
    client.cancel(never)
    assert client.wait(never, timeout=30).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    stats = deployment.emulator.stats()
    assert stats["status_codes"].get("401", 0) == 0 and stats["status_codes"].get("404", 0) == 0


def test_without_the_azure_settings_jobs_fail_with_azures_message(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq(api_key="azure-key")  # a bearer token and no api-version
    deployment.emulator.configure(**AZURE)
    deployment.start_worker()
    result = deployment.client.wait(deployment.client.ask("What is 1 + 1?"), timeout=30)
    assert result.status is JobStatus.FAILED  # type: ignore[union-attr]
    assert result.error is not None and "api-version" in result.error.message  # type: ignore[union-attr]


def test_http_client_sends_query_and_key_header_on_every_request() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    settings = load_settings(
        api_base="https://example.openai.azure.com/openai/v1",
        api_key="secret-key",
        api_query="api-version=preview&x=1",
        api_key_header="api-key",
    )
    with http_client(settings) as client:
        client._transport = httpx.MockTransport(record)
        client.get("responses/resp_1", params={"limit": 5})
        client.post("responses", json={"a": 1})
    for request in seen:
        assert request.headers["api-key"] == "secret-key"
        assert "authorization" not in request.headers
        assert request.url.params["api-version"] == "preview" and request.url.params["x"] == "1"
    assert seen[0].url.params["limit"] == "5"
    assert json.loads(seen[1].content) == {"a": 1}


def test_bad_dialect_settings_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="ASKQ_API_QUERY"):
        load_settings(api_query="api-version")
    with pytest.raises(ConfigError, match="ASKQ_API_KEY_HEADER"):
        load_settings(api_key_header="api key")
    assert load_settings(api_query="?api-version=v1").api_params == {"api-version": "v1"}
