"""Tool registry: schemas from hints and docstrings, registration errors, running calls."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from worker.builtin_tools import calculate
from worker.errors import ConfigError
from worker.models import ToolCall, ToolCallRecord
from worker.tools import (
    MAX_OUTPUT_CHARS,
    REGISTRY,
    Tool,
    ToolRegistry,
    load_tool_modules,
    run_tool_calls,
    tool,
)


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry()


def call(name: str, arguments: Any = None, call_id: str = "call_1") -> ToolCall:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return ToolCall(id=call_id, name=name, arguments=raw)


def run_one(registry: ToolRegistry, name: str, arguments: Any = None, **kw: Any) -> ToolCallRecord:
    (record,) = run_tool_calls(
        [call(name, arguments)], registry, timeout_s=kw.pop("timeout_s", 5), **kw
    )
    return record


class Location(BaseModel):
    city: str
    country: str = "FR"


# --- schema ---------------------------------------------------------------------------------


def test_schema_from_hints(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def get_weather(
        city: Annotated[str, Field(description="City name")],
        unit: Literal["c", "f"] = "c",
        days: int | None = None,
        tags: list[str] | None = None,
    ) -> str:
        """Current weather for a city."""
        return city

    params = registry.get("get_weather").parameters  # type: ignore[union-attr]
    assert params["type"] == "object"
    assert params["required"] == ["city"]
    assert params["additionalProperties"] is False
    props = params["properties"]
    assert props["city"] == {"type": "string", "description": "City name"}
    assert props["unit"]["enum"] == ["c", "f"]
    assert props["unit"]["default"] == "c"
    assert {"type": "integer"} in props["days"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}} in props["tags"]["anyOf"]
    assert "title" not in json.dumps(params)  # pydantic's generated titles are stripped


def test_nested_model_keeps_valid_defs(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def locate(where: Location, title: str = "") -> str:
        """Find a place."""
        return where.city

    params = registry.get("locate").parameters  # type: ignore[union-attr]
    assert params["properties"]["where"] == {"$ref": "#/$defs/Location"}
    location = params["$defs"]["Location"]
    assert location["required"] == ["city"]
    assert set(location["properties"]) == {"city", "country"}
    # a parameter literally called "title" survives the title stripping
    assert params["properties"]["title"] == {"type": "string", "default": ""}
    record = run_one(registry, "locate", {"where": {"city": "Lyon"}})
    assert record.error is None and record.output == "Lyon"


def test_description_from_docstring_and_args_section(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def search(
        query: str, limit: Annotated[int, Field(description="From Field")] = 5, exact: bool = False
    ) -> list[str]:
        """Search the knowledge base
        for documents.

        A second paragraph that is not part of the description.

        Args:
            query: Words to look for,
                in any order.
            limit: Ignored, Field wins.
            exact (bool): Match the whole phrase.

        Returns:
            Titles.
        """
        return []

    found = registry.get("search")
    assert found is not None
    assert found.description == "Search the knowledge base for documents."
    props = found.parameters["properties"]
    assert props["query"]["description"] == "Words to look for, in any order."
    assert props["limit"]["description"] == "From Field"
    assert props["exact"]["description"] == "Match the whole phrase."


def test_name_and_description_overrides(registry: ToolRegistry) -> None:
    @tool(name="renamed", description="Custom.", registry=registry)
    def original() -> str:
        """Docstring."""
        return "x"

    assert registry.names() == ["renamed"]
    assert registry.get("renamed").description == "Custom."  # type: ignore[union-attr]
    assert original() == "x"  # the decorator returns the function unchanged


def test_specs_have_each_api_shape(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def ping(host: str) -> str:
        """Ping a host."""
        return host

    found = registry.get("ping")
    assert found is not None
    params = found.parameters
    expected = {"name": "ping", "description": "Ping a host.", "parameters": params}
    assert found.assistants_spec() == {"type": "function", "function": expected}
    assert found.chat_spec() == found.assistants_spec()
    assert found.responses_spec() == {"type": "function", **expected}
    found.responses_spec()["parameters"]["properties"].clear()  # callers get copies
    assert found.parameters["properties"]


# --- registration ---------------------------------------------------------------------------


def test_duplicate_name_is_config_error(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def twin() -> str:
        return ""

    with pytest.raises(ConfigError, match="already registered"):

        @tool(name="twin", registry=registry)
        def other() -> str:
            return ""


def test_var_args_and_unannotated_are_config_errors(registry: ToolRegistry) -> None:
    def star(*items: int) -> str:
        return ""

    def double_star(**options: str) -> str:
        return ""

    def bare(x, y: int) -> str:  # type: ignore[no-untyped-def]
        return ""

    with pytest.raises(ConfigError, match=r"\*items"):
        tool(star, registry=registry)
    with pytest.raises(ConfigError, match=r"\*\*options"):
        tool(double_star, registry=registry)
    with pytest.raises(ConfigError, match="'x' has no type annotation"):
        tool(bare, registry=registry)
    with pytest.raises(ConfigError, match="invalid"):
        tool(name="has space", registry=registry)(lambda: "")
    assert registry.names() == []


def test_registry_isolation_and_select(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def alpha() -> str:
        return "a"

    @tool(registry=registry)
    def beta() -> str:
        return "b"

    assert "alpha" not in REGISTRY.names()
    assert [t.name for t in registry.select(None)] == ["alpha", "beta"]
    assert [t.name for t in registry.select(["beta", "nope", "beta"])] == ["beta"]
    assert registry.select([]) == []
    assert registry.get("nope") is None


def test_hand_built_tool_validates_against_its_function(registry: ToolRegistry) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    registry.register(Tool(name="add", description="Add.", parameters={}, func=add))
    assert run_one(registry, "add", {"a": 2, "b": "3"}).output == "5"
    assert run_one(registry, "add", {"a": "x", "b": 1}).error.startswith("invalid arguments")  # type: ignore[union-attr]


# --- load_tool_modules ----------------------------------------------------------------------


def test_load_tool_modules_errors_are_one_line_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: ToolRegistry
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "askq_test_broken_tools.py").write_text(
        "raise RuntimeError('boom\\nsecond line')\n"
    )
    with pytest.raises(ConfigError) as missing:
        load_tool_modules(["askq_test_no_such_module"], registry)
    assert str(missing.value) == (
        "cannot import tool module 'askq_test_no_such_module': "
        "ModuleNotFoundError: No module named 'askq_test_no_such_module'"
    )
    with pytest.raises(ConfigError) as broken:
        load_tool_modules(["askq_test_broken_tools"], registry)
    assert str(broken.value) == (
        "cannot import tool module 'askq_test_broken_tools': RuntimeError: boom"
    )


def test_load_tool_modules_into_a_given_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: ToolRegistry
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "askq_test_good_tools.py").write_text(
        textwrap.dedent(
            """
            from worker.tools import ToolRegistry, tool
            OWN = ToolRegistry()

            @tool(registry=OWN)
            def shout(text: str) -> str:
                return text.upper()
            """
        )
    )
    try:
        load_tool_modules(["askq_test_good_tools"], registry)
        load_tool_modules(["askq_test_good_tools"], registry)  # twice is harmless
        assert registry.names() == ["shout"]
        assert sys.modules["askq_test_good_tools"].OWN.names() == ["shout"]
        assert "shout" not in REGISTRY.names()
        assert run_one(registry, "shout", {"text": "hi"}).output == "HI"
    finally:
        sys.modules.pop("askq_test_good_tools", None)


def test_builtin_tools_register_into_default_registry() -> None:
    load_tool_modules(["worker.builtin_tools"])
    assert {"calculate", "utc_now"} <= set(REGISTRY.names())
    record = run_one(REGISTRY, "utc_now")
    assert record.error is None and record.output.endswith("+00:00") and "T" in record.output


# --- run_tool_calls -------------------------------------------------------------------------


def test_calls_run_concurrently(registry: ToolRegistry) -> None:
    barrier = threading.Barrier(2)

    @tool(registry=registry)
    def meet(who: str) -> str:
        barrier.wait(timeout=5)  # breaks (an error record) unless both calls run at once
        return who

    records = run_tool_calls(
        [call("meet", {"who": "a"}, "c1"), call("meet", {"who": "b"}, "c2")],
        registry,
        timeout_s=10,
    )
    assert [(r.id, r.output, r.error) for r in records] == [("c1", "a", None), ("c2", "b", None)]


def test_results_keep_call_order_and_encode_values(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def as_dict(n: int) -> dict[str, Any]:
        return {"n": n, "loc": Location(city="Nice")}

    @tool(registry=registry)
    def nothing() -> None:
        return None

    records = run_tool_calls(
        [
            call("as_dict", {"n": 1}, "x"),
            call("nothing", None, "y"),
            call("as_dict", '{"n":2}', "z"),
        ],
        registry,
        timeout_s=5,
    )
    assert [r.id for r in records] == ["x", "y", "z"]
    assert json.loads(records[0].output) == {"n": 1, "loc": {"city": "Nice", "country": "FR"}}
    assert records[1].output == "null"
    assert json.loads(records[2].output)["n"] == 2
    assert all(r.duration_s >= 0 for r in records)


def test_timeout_abandons_the_thread_and_returns(registry: ToolRegistry) -> None:
    release = threading.Event()
    finished = threading.Event()

    @tool(registry=registry)
    def stuck() -> str:
        release.wait(timeout=30)
        finished.set()
        return "late"

    @tool(registry=registry)
    def quick() -> str:
        return "fast"

    try:
        records = run_tool_calls(
            [call("stuck"), call("quick", None, "c2")], registry, timeout_s=0.2
        )
        assert not finished.is_set()  # the caller came back while the tool was still blocked
        assert records[0].error == "tool timed out after 0.2s"
        assert json.loads(records[0].output) == {"error": "tool timed out after 0.2s"}
        assert records[1].output == "fast" and records[1].error is None
    finally:
        release.set()
    assert finished.wait(timeout=5)


def test_exception_becomes_error_output_without_traceback(
    registry: ToolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASKQ_TEST_API_KEY", "s3cr3t-value-123")

    @tool(registry=registry)
    def divide(a: float, b: float) -> float:
        return a / b

    @tool(registry=registry)
    def leak() -> str:
        raise RuntimeError("failed with key s3cr3t-value-123 at https://u:pw@h/x\nline two")

    @tool(registry=registry)
    def quit_worker() -> str:
        raise SystemExit(3)

    record = run_one(registry, "divide", {"a": 1, "b": 0})
    assert record.error == "ZeroDivisionError: float division by zero"
    assert json.loads(record.output) == {"error": "ZeroDivisionError: float division by zero"}
    leaked = run_one(registry, "leak")
    assert "Traceback" not in leaked.output and "line two" not in leaked.output
    assert "s3cr3t" not in leaked.output and "pw@" not in leaked.output
    assert leaked.error == "RuntimeError: failed with key *** at https://u:***@h/x"
    assert run_one(registry, "quit_worker").error == "SystemExit: 3"


def test_unknown_and_not_allowed_tools(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def secret() -> str:
        return "ran"

    unknown = run_one(registry, "nope")
    assert unknown.error == "unknown tool 'nope'"
    assert json.loads(unknown.output) == {"error": "unknown tool 'nope'"}
    refused = run_one(registry, "secret", allowed=["other"])
    assert refused.error == "tool 'secret' is not allowed for this job"
    assert run_one(registry, "secret", allowed=["secret"]).output == "ran"
    assert run_one(registry, "secret", allowed=None).output == "ran"


def test_bad_json_and_invalid_arguments(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def pick(unit: Literal["c", "f"], n: int = 1) -> str:
        return unit * n

    assert run_one(registry, "pick", '{"unit": ').error.startswith("arguments are not valid JSON")  # type: ignore[union-attr]
    assert run_one(registry, "pick", "[1]").error == "arguments must be a JSON object, not list"
    invalid = run_one(registry, "pick", {"unit": "k", "n": "many", "extra": 1})
    assert invalid.error is not None and invalid.error.startswith("invalid arguments: ")
    for fragment in (
        "unit: Input should be 'c' or 'f'",
        "n: Input should be a valid integer",
        "extra",
    ):
        assert fragment in invalid.error
    assert run_one(registry, "pick", {"unit": "f", "n": "2"}).output == "ff"  # lax coercion
    missing = run_one(registry, "pick", "")  # an empty string means no arguments
    assert missing.error == "invalid arguments: unit: Field required"


def test_long_output_is_truncated_with_marker(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def big() -> str:
        return "x" * (MAX_OUTPUT_CHARS * 2)

    output = run_one(registry, "big").output
    assert len(output) <= MAX_OUTPUT_CHARS
    assert output.endswith(f"[askq: output truncated, {MAX_OUTPUT_CHARS * 2} characters in total]")


def test_unencodable_result_and_async_tool(registry: ToolRegistry) -> None:
    @tool(registry=registry)
    def gen() -> Any:
        return object()

    @tool(registry=registry)
    async def later(x: int) -> int:
        return x * 2

    assert (
        run_one(registry, "gen").error == "tool returned a object, which cannot be encoded as JSON"
    )
    assert run_one(registry, "later", {"x": 21}).output == "42"


def test_function_defaults_apply_when_arguments_are_omitted(registry: ToolRegistry) -> None:
    seen: list[list[str]] = []

    @tool(registry=registry)
    def collect(items: list[str] = []) -> int:  # noqa: B006 - checks the default reaches the function
        seen.append(items)
        return len(items)

    run_one(registry, "collect")
    assert seen[0] is collect.__defaults__[0]  # type: ignore[attr-defined]


# --- calculate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("-2 ** 2", "-4"),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("7 / 2", "3.5"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("1.5e3 + +1", "1501.0"),
        ("2 ** 100", str(2**100)),
    ],
)
def test_calculate(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "Call is not allowed"),
        ("x + 1", "Name is not allowed"),
        ("(1).real", "Attribute is not allowed"),
        ("9 ** 9 ** 9", "result too large"),
        ("10 ** 5000", "result too large"),
        ("10.0 ** 400", "result too large"),
        ("1e308 * 10", "result too large"),
        ("10 ** 3000 * 10 ** 3000", "result too large"),
        ("10 ** 3000 / 3", "result too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("2 ^ 3", "use \\*\\* for powers"),
        ("'a' * 3", "not a number"),
        ("True + 1", "not a number"),
        ("1 << 2", "LShift is not supported"),
        ("1 +", "not a valid arithmetic expression"),
        ("-" * 500 + "1", "nested too deeply"),
        ("1" * 2000, "longer than"),
    ],
)
def test_calculate_rejects(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calculate(expression)


def test_calculate_division_by_zero_is_an_error_output() -> None:
    registry = ToolRegistry()
    registry.register(Tool.from_function(calculate))
    record = run_one(registry, "calculate", {"expression": "1 / 0"})
    assert record.error == "ZeroDivisionError: division by zero"


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6), st.sampled_from("+-*"))
def test_calculate_matches_python_on_integers(a: int, b: int, op: str) -> None:
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert calculate(f"{a} {op} ({b})") == str(expected)
