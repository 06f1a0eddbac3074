"""The tool module the docs show (examples/shop_tools.py), enabled as the docs say
(ASKQ_TOOL_MODULES, on PYTHONPATH), and restricted per job from the CLI (`--tools`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import ASSISTANTS_ONLY, ROOT, Askq

pytestmark = ASSISTANTS_ONLY


@pytest.fixture
def shop(make_askq: Callable[..., Askq]) -> Askq:
    deployment = make_askq(tool_modules="shop_tools")
    deployment.start_worker(PYTHONPATH=f"{ROOT}:{ROOT / 'examples'}")
    return deployment


def offered_tools(deployment: Askq, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools askq offered the run, as the emulator received them."""
    url = f"{deployment.settings.api_base}/threads/{record['thread_id']}/runs/{record['run_id']}"
    run = httpx.get(url, headers={"OpenAI-Beta": "assistants=v2"}).json()
    return [spec["function"] for spec in run["tools"]]


def ask(deployment: Askq, *args: str) -> dict[str, Any]:
    done = deployment.cli("ask", *args, "--wait", "--json", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_documented_tool_module_runs_with_its_schema(shop: Askq) -> None:
    arguments = {"item": "bread", "quantity": 3, "currency": "EUR"}
    record = ask(shop, f"What do 3 loaves cost? [tool:total {json.dumps(arguments)}]")
    assert record["status"] == "completed"
    (call,) = record["tool_calls"]
    assert json.loads(call["output"]) == {**arguments, "total": 6.75}
    specs = {spec["name"]: spec for spec in offered_tools(shop, record)}
    assert set(specs) == {"price", "total"}
    assert specs["total"]["description"].startswith("What `quantity` of an item costs")
    quantity = specs["total"]["parameters"]["properties"]["quantity"]
    bounds = (quantity["description"], quantity["minimum"], quantity["maximum"])
    assert bounds == ("How many.", 1, 1000)
    assert specs["total"]["parameters"]["properties"]["currency"]["enum"] == ["EUR", "USD"]


def test_a_job_restricted_with_tools_is_offered_only_those(shop: Askq) -> None:
    record = ask(shop, 'Price an apple [tool:price {"item": "apple"}]', "--tools", "price")
    assert record["status"] == "completed"
    assert [spec["name"] for spec in offered_tools(shop, record)] == ["price"]
    assert record["tool_calls"][0]["output"] == "0.5"

    refused = ask(shop, '[tool:total {"item": "apple", "quantity": 2}]', "--tools", "price")
    assert "not allowed" in (refused["tool_calls"][0]["error"] or "")
