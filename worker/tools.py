"""Function tools: the `@tool` decorator, the registry, and running a run's tool calls.

A tool is a plain Python function. Its JSON schema comes from its type hints (through a
pydantic model built from the signature, so `Annotated[..., Field(description=...)]`,
`Literal`, optionals, defaults, lists and nested pydantic models all work) and its
description from its docstring: the first paragraph describes the tool, a Google-style
`Args:` section describes parameters that have no `Field(description=...)`.

`run_tool_calls` runs every call of one `requires_action` run at the same time, each bounded
by a timeout, and turns every failure the model could cause or suffer (an exception in the
tool, a timeout, an unknown or forbidden tool, bad arguments) into an error output the model
can read. It never raises for a tool's fault.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import functools
import importlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints, overload

import pydantic
import pydantic_core
from pydantic.fields import FieldInfo

from worker.errors import ConfigError
from worker.models import ToolCall, ToolCallRecord

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

MAX_OUTPUT_CHARS = 16_384
"""Longest output given to the model; a longer one keeps its head and ends with a marker.

Counted in characters, not bytes: the model reads text, and a cut never splits a character.
A cut JSON output is not valid JSON any more; the marker says so in plain words.
"""

MAX_ERROR_CHARS = 500
"""Longest error text (in `ToolCallRecord.error` and the error output)."""

TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What the Assistants, Responses and Chat Completions APIs accept as a function name."""

_TOOL_ATTRIBUTE = "__askq_tool__"
"""Set on every decorated function, so `load_tool_modules` can find a module's tools."""


# --- schema -------------------------------------------------------------------------------


def _docstring_parts(doc: str | None) -> tuple[str, dict[str, str]]:
    """(first paragraph, {parameter: description from a Google-style `Args:` section})."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    section_header = re.compile(r"^(Args|Arguments|Parameters|Params):\s*$")
    any_header = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")

    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or any_header.match(line):
            break
        summary_lines.append(line.strip())

    params: dict[str, str] = {}
    in_args = False
    entry_indent = -1
    current: str | None = None
    entry = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
    for line in lines:
        if section_header.match(line):
            in_args, entry_indent, current = True, -1, None
            continue
        if not in_args:
            continue
        if not line.strip():
            current = None
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:  # the next section (Returns:, Raises:, ...) or prose
            in_args = False
            continue
        if entry_indent < 0:
            entry_indent = indent
        match = entry.match(line.strip()) if indent == entry_indent else None
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current is not None and indent > entry_indent:
            params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(summary_lines), params


def _has_field_description(annotation: Any) -> bool:
    if get_origin(annotation) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(annotation)[1:])


_DATA_KEYWORDS = frozenset({"default", "enum", "const", "examples", "example"})
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated `title`s, but not a property that happens to be called so."""
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    stripped: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _DATA_KEYWORDS:
            stripped[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            stripped[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        else:
            stripped[key] = _strip_titles(value)
    return stripped


def _arguments_model(
    func: Callable[..., Any], name: str, arg_docs: dict[str, str]
) -> type[pydantic.BaseModel]:
    """A pydantic model of the function's arguments; ConfigError when one cannot be built."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool '{name}': cannot read the signature: {exc}") from exc
    try:
        hints = get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool '{name}': cannot resolve the type hints: {exc}") from exc

    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ConfigError(
                f"tool '{name}': {star}{param.name} is not supported; "
                "a tool takes named, annotated parameters only"
            )
        if param.name not in hints:
            raise ConfigError(
                f"tool '{name}': parameter '{param.name}' has no type annotation; "
                "every parameter needs one (it becomes the JSON schema)"
            )
        if param.name.startswith("_"):
            raise ConfigError(f"tool '{name}': parameter '{param.name}' starts with '_'")
        annotation = hints[param.name]
        doc = arg_docs.get(param.name)
        if doc and not _has_field_description(annotation):
            annotation = Annotated[annotation, pydantic.Field(description=doc)]
        if param.default is inspect.Parameter.empty:
            fields[param.name] = annotation
        else:
            fields[param.name] = (annotation, param.default)
    try:
        model: type[pydantic.BaseModel] = pydantic.create_model(
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid", protected_namespaces=()),
            **fields,
        )
        model.model_json_schema()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"tool '{name}': cannot build an argument schema: {reason}") from exc
    return model


def _parameters_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    raw = _strip_titles(model.model_json_schema())
    schema: dict[str, Any] = {
        "type": "object",
        "properties": raw.get("properties", {}),
        "required": raw.get("required", []),
        "additionalProperties": False,
    }
    if "$defs" in raw:  # `$ref`s point at "#/$defs/...", so they stay at the top level
        schema["$defs"] = raw["$defs"]
    return schema


# --- Tool and registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """One function tool: its name, description, JSON schema of its arguments, and function.

    Build one with `Tool.from_function` (what `@tool` does). When built by hand without
    `arguments_model`, the model is built from `func`'s signature (ConfigError if it cannot
    be), so arguments are always validated against the function before it is called.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any]
    arguments_model: type[pydantic.BaseModel] | None = field(
        default=None, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not TOOL_NAME_PATTERN.match(self.name):
            raise ConfigError(
                f"tool name {self.name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
            )
        if self.arguments_model is None:
            _, arg_docs = _docstring_parts(getattr(self.func, "__doc__", None))
            model = _arguments_model(self.func, self.name, arg_docs)
            object.__setattr__(self, "arguments_model", model)

    @classmethod
    def from_function(
        cls,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """The tool for `func`; ConfigError for *args/**kwargs or unannotated parameters."""
        tool_name = name if name is not None else getattr(func, "__name__", "")
        summary, arg_docs = _docstring_parts(getattr(func, "__doc__", None))
        if not TOOL_NAME_PATTERN.match(tool_name):
            raise ConfigError(
                f"tool name {tool_name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
            )
        model = _arguments_model(func, tool_name, arg_docs)
        return cls(
            name=tool_name,
            description=description if description is not None else summary,
            parameters=_parameters_schema(model),
            func=func,
            arguments_model=model,
        )

    def assistants_spec(self) -> dict[str, Any]:
        """The entry for an Assistants v2 `tools` list (a fresh copy)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
            },
        }

    def responses_spec(self) -> dict[str, Any]:
        """The entry for a Responses API `tools` list: the flat shape (a fresh copy)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }

    def chat_spec(self) -> dict[str, Any]:
        """The entry for a Chat Completions `tools` list (same shape as Assistants)."""
        return self.assistants_spec()


class ToolRegistry:
    """Tools by name, in registration order. Safe to use from several threads."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()

    def register(self, tool: Tool) -> None:
        """Add `tool`; ConfigError if another tool already has its name."""
        with self._lock:
            if tool.name in self._tools:
                raise ConfigError(f"a tool named '{tool.name}' is already registered")
            self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._tools)

    def unknown(self, names: list[str] | None) -> list[str]:
        """Names a job asks for that this registry lacks (its start refuses such a job)."""
        return [n for n in dict.fromkeys(names or []) if n not in self._tools]

    def select(self, names: list[str] | None) -> list[Tool]:
        """The tools a job may use: all for None, else those named (in that order, once);
        unknown names are skipped here (`unknown` finds them: the job is refused at start).
        """
        if names is None:
            return list(self._tools.values())
        selected = dict.fromkeys(n for n in names if n in self._tools)
        return [self._tools[n] for n in selected]


REGISTRY = ToolRegistry()
"""The registry `@tool` fills when no other is given, and the one workers use."""


@overload
def tool(
    func: F,
    *,
    name: str | None = None,
    description: str | None = None,
    registry: ToolRegistry | None = None,
) -> F: ...


@overload
def tool(
    func: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    registry: ToolRegistry | None = None,
) -> Callable[[F], F]: ...


def tool(
    func: F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    registry: ToolRegistry | None = None,
) -> F | Callable[[F], F]:
    """Register a function as a tool (bare `@tool` or `@tool(name=..., ...)`).

    The function is returned unchanged, so it stays callable and testable. Schema errors and
    duplicate names raise ConfigError at decoration time, i.e. when the module is imported.
    """

    def decorate(function: F) -> F:
        built = Tool.from_function(function, name=name, description=description)
        (registry if registry is not None else REGISTRY).register(built)
        # A builtin refuses attributes; load_tool_modules then cannot find it in its module.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(function, _TOOL_ATTRIBUTE, built)
        return function

    return decorate(func) if func is not None else decorate


def load_tool_modules(names: list[str], registry: ToolRegistry = REGISTRY) -> None:
    """Import each module so its `@tool`s register; ConfigError if one cannot be imported.

    A module's tools go into the default REGISTRY at import. With another `registry`, every
    `@tool` function the module exposes (defines or imports) is also registered there, so
    loading works even when the module was imported before. Loading twice is harmless.
    """
    for module_name in names:
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit) as exc:
            reason = _one_line(exc)
            raise ConfigError(f"cannot import tool module '{module_name}': {reason}") from exc
        for value in list(vars(module).values()):
            found = getattr(value, _TOOL_ATTRIBUTE, None) if callable(value) else None
            if isinstance(found, Tool) and registry.get(found.name) is not found:
                registry.register(found)


# --- running calls ---------------------------------------------------------------------------


_SECRET_ENV_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_SECRET_PATTERNS = (
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), "sk-***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), r"\1***@"),  # password in a URL
)


def _redact(text: str) -> str:
    """Hide what looks like a credential: values of secret-named env vars, API keys, URL
    passwords. Error texts are stored in results and shown to the model; tracebacks and
    the raw message only go to the worker log."""
    for env_name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_ENV_NAME.search(env_name) and value in text:
            text = text.replace(value, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _one_line(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = _redact(text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _truncate(output: str) -> str:
    if len(output) <= MAX_OUTPUT_CHARS:
        return output
    marker = f"\n[askq: output truncated, {len(output)} characters in total]"
    return output[: MAX_OUTPUT_CHARS - len(marker)] + marker


def _encode(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(pydantic_core.to_jsonable_python(value), ensure_ascii=False)


def _failed(call: ToolCall, error: str, duration_s: float = 0.0) -> ToolCallRecord:
    error = error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"
    return ToolCallRecord(
        id=call.id,
        name=call.name,
        arguments=call.arguments,
        output=json.dumps({"error": error}, ensure_ascii=False),
        error=error,
        duration_s=duration_s,
    )


def _validation_message(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = len(exc.errors()) - len(problems)
    return "invalid arguments: " + "; ".join(problems) + (f" (+{more} more)" if more else "")


def _run_one(tool: Tool, call: ToolCall) -> ToolCallRecord:
    """Parse, validate, call, encode; every failure becomes an error record."""
    started = time.perf_counter()
    assert tool.arguments_model is not None  # set by Tool.__post_init__
    raw = call.arguments if call.arguments.strip() else "{}"  # some models send "" for no args
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        return _failed(call, f"arguments are not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        return _failed(call, f"arguments must be a JSON object, not {type(parsed).__name__}")
    try:
        arguments = tool.arguments_model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        return _failed(call, _validation_message(exc))

    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for param in inspect.signature(tool.func).parameters.values():
        value = getattr(arguments, param.name)
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(value)
        elif param.name in arguments.model_fields_set or param.default is param.empty:
            keywords[param.name] = value  # unset: the function's own default applies

    try:
        result = tool.func(*positional, **keywords)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except BaseException as exc:  # SystemExit from a tool must not end the worker's thread
        logger.warning("tool %s (call %s) raised", call.name, call.id, exc_info=True)
        return _failed(call, _one_line(exc), time.perf_counter() - started)
    try:
        output = _encode(result)
    except Exception:
        kind = type(result).__name__
        message = f"tool returned a {kind}, which cannot be encoded as JSON"
        return _failed(call, message, time.perf_counter() - started)
    return ToolCallRecord(
        id=call.id,
        name=call.name,
        arguments=call.arguments,
        output=_truncate(output),
        duration_s=time.perf_counter() - started,
    )


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _start_daemon(
    fn: Callable[[], ToolCallRecord], name: str
) -> concurrent.futures.Future[ToolCallRecord]:
    """Run `fn` on a daemon thread and return its future.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one tool hung
    for good would keep a worker process (e.g. a Celery child being recycled) from exiting
    even after `shutdown(wait=False)`. A daemon thread is simply dropped at exit.
    """
    future: concurrent.futures.Future[ToolCallRecord] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # _run_one catches everything; this is a last resort
            future.set_exception(exc)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def run_tool_calls(
    calls: list[ToolCall],
    registry: ToolRegistry,
    *,
    timeout_s: float,
    allowed: list[str] | None = None,
) -> list[ToolCallRecord]:
    """Run every call at once and return one record per call, in the calls' order.

    Each call gets `timeout_s` seconds from the start. Python cannot kill a thread: a tool
    still running at its timeout is abandoned — its thread runs on (as a daemon, so it never
    blocks the process from exiting), its eventual output is ignored, and its record says
    `tool timed out after Ns`. This function returns when every call has finished or timed
    out; it never waits for an abandoned thread and never raises for a tool's fault.

    A failed call has `error` set and an `output` like `{"error": "ValueError: ..."}`: the
    exception type and the first line of its message, credentials redacted, no traceback
    (that goes to the worker log). Outputs over MAX_OUTPUT_CHARS are cut with a marker.
    `allowed` limits which tools may run (None: any registered tool).
    """
    if timeout_s <= 0:
        raise ValueError("timeout_s must be positive")
    records: list[ToolCallRecord | None] = [None] * len(calls)
    running: dict[int, concurrent.futures.Future[ToolCallRecord]] = {}
    started = time.monotonic()
    for index, call in enumerate(calls):
        found = registry.get(call.name)
        if found is None:
            records[index] = _failed(call, f"unknown tool '{call.name}'")
        elif allowed is not None and call.name not in allowed:
            records[index] = _failed(call, f"tool '{call.name}' is not allowed for this job")
        else:
            running[index] = _start_daemon(
                functools.partial(_run_one, found, call), name=f"askq-tool-{call.name}"
            )

    concurrent.futures.wait(running.values(), timeout=timeout_s)
    for index, future in running.items():
        call = calls[index]
        if future.done():
            try:
                records[index] = future.result()
            except BaseException as exc:
                records[index] = _failed(call, _one_line(exc))
        else:
            logger.warning(
                "tool %s (call %s) timed out after %gs; its thread is abandoned",
                call.name,
                call.id,
                timeout_s,
            )
            records[index] = _failed(
                call, f"tool timed out after {timeout_s:g}s", time.monotonic() - started
            )
    return [record for record in records if record is not None]
