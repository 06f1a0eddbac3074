"""Batch files (`askq batch FILE`) parsed into `JobRequest`s, one bad line never stopping the rest.

Formats: jsonl (askq's native objects, or OpenAI Batch API request lines), csv (a `question`
column) and txt (one question a line). Parsing is pure: no Redis, no network.

Errors come in two kinds, so the CLI can exit 2 for a hopeless file and still submit a
partly bad one:

- `InputError` (raised): the file as a whole cannot be used — unknown extension, unreadable,
  not UTF-8, a csv without a `question` column. One line of text, fit for stderr as is.
- `LineError` (returned in `ParsedInput.errors`): one line cannot be used. `.line` is the
  1-based line number in the file (a BOM does not count; for csv, the header is line 1 and a
  record spanning several lines is reported where it starts). `.message` is one short
  sentence *without* the line number, e.g. ``not valid JSON (Expecting ',' delimiter at
  column 12)`` or ``temperature: Input should be a valid number``; ``str(error)`` gives the
  form to print, ``line 7: not valid JSON (...)``.

Fields askq drops (unknown native keys, Batch API body fields no target protocol defines)
are reported once per file in `ParsedInput.warnings`, never once per line: a 10,000-line
file must not bury its real errors under 10,000 identical warnings.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from worker.errors import InputError
from worker.models import JobRequest

FORMAT_BY_EXTENSION = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".txt": "txt",
}
"""Extensions `parse_file` recognises. `.json` is JSON Lines (as the Batch API takes it) or one
JSON array of items: jsonl text that is, as a whole, one JSON array is read as its items."""

FORMATS = frozenset(FORMAT_BY_EXTENSION.values())

NATIVE_FIELDS = frozenset(JobRequest.model_fields) | {"session_id"}
"""Keys a native jsonl object may hold: the fields of `JobRequest` (`session_id` is the
Agents name of `thread_id`)."""

CSV_FIELDS = (
    "question", "custom_id", "thread_id", "session_id", "assistant_id", "agent_id", "model",
    "instructions",
)  # fmt: skip
"""Columns a csv may hold; `question` is required, the rest are optional."""

BATCH_URLS = ("/v1/chat/completions", "/v1/responses")
"""Batch API endpoints askq can run; embeddings, moderations etc. have no run to drive."""

BATCH_BODY_FIELDS = frozenset(
    {
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "metadata",
        "tool_choice",
    }
)
"""Body fields both target protocols define (besides the prompt); the rest are dropped."""

MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_output_tokens", "max_tokens")
"""Spellings of the token cap, newest first: when a body has several, the newest one wins."""

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
"""Content part types that carry plain text (chat completions, and Responses input/output)."""

INSTRUCTION_ROLES = frozenset({"system", "developer"})
CONVERSATION_ROLES = frozenset({"user", "assistant"})

PART_SEPARATOR = "\n\n"
"""Joins instructions from several places and text parts of one message: a blank line, the
same separator askq uses between the assistant messages of one answer."""

_LINES_SHOWN = 5
"""How many line numbers a warning lists before it says '…'."""


@dataclass(frozen=True)
class LineError:
    """One unusable line: `line` is 1-based; `message` is one sentence without the number."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ParsedItem:
    """One accepted request and the line it came from (where a csv record starts)."""

    line: int
    request: JobRequest


@dataclass
class ParsedInput:
    """Everything a file gave: good items in file order, bad lines, file-wide warnings."""

    items: list[ParsedItem] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _LineProblem(Exception):
    """A line cannot be used; the message becomes its `LineError.message`."""


def parse_file(path: str | Path, fmt: str | None = None) -> ParsedInput:
    """Parse a batch file; `fmt` ("jsonl", "csv", "txt") overrides the file's extension.

    Raises `InputError` only when the file as a whole is unusable (see the module docstring);
    bad lines come back in `errors`.
    """
    path = Path(path)
    if fmt is None:
        fmt = FORMAT_BY_EXTENSION.get(path.suffix.lower())
        if fmt is None:
            raise InputError(
                f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
                f"use {', '.join(FORMAT_BY_EXTENSION)}"
            )
    fmt = _normalise_format(fmt)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # utf-8-sig reports offsets after the BOM it removed.
        offset = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, offset) + 1
        bad = raw[offset : offset + 1].hex()
        raise InputError(
            f"{path} is not UTF-8 text (byte 0x{bad} on line {line}); save it as UTF-8"
        ) from exc
    return parse_text(text, fmt)


def parse_text(text: str, fmt: str) -> ParsedInput:
    """Parse the text of a batch file (stdin, for `askq batch -`); `fmt` as in `parse_file`."""
    fmt = _normalise_format(fmt)
    text = text.removeprefix("\ufeff")
    if fmt == "csv":
        return _parse_csv(text)
    if fmt == "txt":
        return _parse_txt(text)
    return _parse_jsonl(text)


def _normalise_format(fmt: str) -> str:
    name = fmt.lower().lstrip(".")
    name = FORMAT_BY_EXTENSION.get(f".{name}", name)
    if name not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(sorted(FORMATS))}")
    return name


def _physical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, line) with the line ending removed.

    Splits on "\\n" only: `str.splitlines` also splits on U+2028, U+0085 and friends, which
    are legal inside a JSON string and a question, and would shift every later line number.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")


class _Collector:
    """Accumulates items, errors and the dropped-field tallies of one file."""

    def __init__(self) -> None:
        self.result = ParsedInput()
        self.first_line_of_id: dict[str, int] = {}
        self.dropped: dict[str, dict[str, list[int]]] = {}

    def add(self, line: int, fields: dict[str, Any]) -> bool:
        """Validate `fields` as a request; True when it was accepted."""
        try:
            request = JobRequest.model_validate(fields)
        except ValidationError as exc:
            self.error(line, describe_error(exc))
            return False
        custom_id = request.custom_id
        if custom_id is not None:
            first = self.first_line_of_id.get(custom_id)
            if first is not None:
                # The Batch API rejects a whole file with a repeated custom_id, and results
                # are looked up by it: the first line keeps the id.
                self.error(line, f"duplicate custom_id {custom_id!r} (first on line {first})")
                return False
            self.first_line_of_id[custom_id] = line
        self.result.items.append(ParsedItem(line=line, request=request))
        return True

    def error(self, line: int, message: str) -> None:
        self.result.errors.append(LineError(line=line, message=message))

    def drop(self, kind: str, line: int, names: Iterable[str]) -> None:
        """Remember that `names` were dropped from `line`, for one warning per `kind`."""
        by_name = self.dropped.setdefault(kind, {})
        for name in names:
            by_name.setdefault(name, []).append(line)

    def finish(self) -> ParsedInput:
        for kind, by_name in self.dropped.items():
            lines = sorted({line for numbers in by_name.values() for line in numbers})
            shown = ", ".join(str(n) for n in lines[:_LINES_SHOWN])
            if len(lines) > _LINES_SHOWN:
                shown += ", …"
            plural = "line" if len(lines) == 1 else "lines"
            self.result.warnings.append(
                f"{kind} on {len(lines)} {plural} ({shown}): {', '.join(sorted(by_name))}"
            )
        return self.result


def describe_error(exc: ValidationError) -> str:
    """The first pydantic error as one short line: `where: what`."""
    errors = exc.errors()
    first = errors[0]
    where = ""
    for part in first["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    what = first["msg"].removeprefix("Value error, ")
    message = f"{where}: {what}" if where else what
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message


# --- jsonl ------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


Fields = tuple[dict[str, Any], list[str], str]
"""A request's fields, the names it drops, and the warning they go to."""


def _parse_jsonl(text: str) -> ParsedInput:
    items = _json_array(text)
    entries = _line_entries(text) if items is None else _array_entries(text, items)
    collector = _Collector()
    for number, fields_of in entries:
        try:
            fields, dropped, kind = fields_of()
        except _LineProblem as problem:
            collector.error(number, str(problem))
            continue
        if collector.add(number, fields) and dropped:
            collector.drop(kind, number, dropped)
    return collector.finish()


def _line_entries(text: str) -> Iterator[tuple[int, Callable[[], Fields]]]:
    for number, line in _physical_lines(text):
        if line.strip():
            yield number, functools.partial(_jsonl_fields, line)


def _json_array(text: str) -> list[Any] | None:
    """The items when the whole text is one JSON array (a `.json` file may be), else None."""
    if not text.lstrip().startswith("["):
        return None
    try:
        # NaN and Infinity are not JSON; Python accepts them by default, the API would not.
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None
    return document if isinstance(document, list) else None


def _array_entries(text: str, items: list[Any]) -> Iterator[tuple[int, Callable[[], Fields]]]:
    """Each item with the line it starts on, found by decoding the items one by one."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    for obj in items:
        while text[position] in " \t\r\n,":
            position += 1
        yield text.count("\n", 0, position) + 1, functools.partial(_object_fields, obj)
        position = decoder.raw_decode(text, position)[1]


def _jsonl_fields(line: str) -> Fields:
    """The request fields of one jsonl line, the names it drops, and the warning they go to."""
    try:
        # NaN and Infinity are not JSON; Python accepts them by default, the API would not.
        obj = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _LineProblem(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:
        raise _LineProblem(f"not valid JSON ({exc})") from None
    return _object_fields(obj)


def _object_fields(obj: Any) -> Fields:
    """The request fields of one JSON item, the names it drops, and the warning they go to."""
    if not isinstance(obj, dict):
        raise _LineProblem(f"expected a JSON object, got {_json_type(obj)}")
    if "body" in obj:
        fields, dropped = _batch_fields(obj)
        return fields, dropped, "dropped Batch API fields askq does not send"
    fields, dropped = _native_fields(obj)
    return fields, dropped, "ignored unknown fields"


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _native_fields(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    fields = {key: value for key, value in obj.items() if key in NATIVE_FIELDS}
    dropped = [key for key in obj if key not in NATIVE_FIELDS]
    if isinstance(fields.get("messages"), list):
        instructions, messages, message_dropped = _conversation(fields["messages"], "messages")
        fields["messages"] = messages
        dropped += message_dropped
        fields["instructions"] = _join_instructions(fields.get("instructions"), instructions)
    return fields, dropped


def _batch_fields(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map one OpenAI Batch API request line onto `JobRequest` fields."""
    url = obj.get("url")
    if url not in BATCH_URLS:
        shown = "no url" if url is None else f"url {url!r}"
        raise _LineProblem(f"{shown} is not supported; askq runs {' and '.join(BATCH_URLS)}")
    method = obj.get("method", "POST")
    if method != "POST":
        raise _LineProblem(f"method {method!r} is not supported; Batch API lines use POST")
    body = obj["body"]
    if not isinstance(body, dict):
        raise _LineProblem(f"'body' must be a JSON object, got {_json_type(body)}")
    dropped = [key for key in obj if key not in {"custom_id", "method", "url", "body"}]
    fields: dict[str, Any] = {"custom_id": obj.get("custom_id")}
    for key in ("model", "temperature", "top_p", "metadata"):
        if key in body:
            fields[key] = body[key]
    caps = [body[key] for key in MAX_TOKENS_FIELDS if body.get(key) is not None]
    if caps:
        fields["max_tokens"] = caps[0]
    if body.get("tool_choice") is not None:
        fields["tool_choice"] = _tool_choice(body["tool_choice"])

    if url == "/v1/chat/completions":
        prompt_key = "messages"
        if not isinstance(body.get("messages"), list):
            raise _LineProblem("body.messages must be a list of messages")
        instructions, messages, message_dropped = _conversation(body["messages"], "body.messages")
    else:
        prompt_key = "input"
        message_dropped = []
        prompt = body.get("input")
        if isinstance(prompt, str):
            instructions, messages = [], [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list):
            instructions, messages, message_dropped = _conversation(prompt, "body.input")
        else:
            raise _LineProblem("body.input must be a string or a list of messages")
        if body.get("instructions") is not None:
            if not isinstance(body["instructions"], str):
                raise _LineProblem("body.instructions must be a string")
            instructions.insert(0, body["instructions"])
    fields["instructions"] = _join_instructions(None, instructions)
    # One user message is just a question: results and `askq status` show it as such.
    if len(messages) == 1 and messages[0]["role"] == "user":
        fields["question"] = messages[0]["content"]
    else:
        fields["messages"] = messages

    used = BATCH_BODY_FIELDS | {prompt_key} | ({"instructions"} if prompt_key == "input" else set())
    dropped += [f"body.{key}" for key in body if key not in used] + message_dropped
    return fields, dropped


def _tool_choice(raw: Any) -> Any:
    """A mode string as is; a named function in chat's shape (`{"type": "function",
    "function": {"name": ...}}`) or the Responses one (`{"type": "function", "name": ...}`)
    becomes its name. Anything else is left for `JobRequest` to reject."""
    if isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else raw.get("name")
        return name if isinstance(name, str) else raw
    return raw


def _conversation(
    items: list[Any], where: str
) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """Split chat-style messages into (instructions, user/assistant messages, dropped keys).

    Serves native `messages`, chat completions `messages` and Responses `input` lists alike:
    a string or a list of text parts as content; system/developer roles become instructions.
    """
    instructions: list[str] = []
    messages: list[dict[str, str]] = []
    dropped: set[str] = set()
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise _LineProblem(f"{here} must be a message object, got {_json_type(item)}")
        kind = item.get("type", "message")
        if kind != "message":
            raise _LineProblem(f"{here}: item type {kind!r} is not supported; askq sends messages")
        role = item.get("role")
        if role not in INSTRUCTION_ROLES | CONVERSATION_ROLES:
            raise _LineProblem(
                f"{here}: role {role!r} is not supported (use system, developer, user, assistant)"
            )
        content = _text_content(item.get("content"), here)
        if role in INSTRUCTION_ROLES:
            instructions.append(content)
        else:
            messages.append({"role": role, "content": content})
        dropped |= {f"{where}[].{key}" for key in item if key not in {"type", "role", "content"}}
    if items and not messages:
        raise _LineProblem(f"{where} holds no user message, only instructions")
    return instructions, messages, sorted(dropped)


def _text_content(content: Any, where: str) -> str:
    """A message's text: a string as is, or its text parts joined; any other part is an error."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _LineProblem(f"{where}.content must be a string or a list of text parts")
    texts: list[str] = []
    for part in content:
        part_type = part.get("type") if isinstance(part, dict) else None
        if part_type not in TEXT_PART_TYPES or not isinstance(part.get("text"), str):
            shown = part_type if isinstance(part_type, str) else "non-text"
            raise _LineProblem(f"{where}.content has a {shown} part; askq sends text only")
        texts.append(part["text"])
    return PART_SEPARATOR.join(texts)


def _join_instructions(given: Any, extra: list[str]) -> Any:
    """`instructions` plus system messages, in order; a non-string is left for pydantic."""
    if not extra:
        return given
    if given is None:
        return PART_SEPARATOR.join(extra)
    if not isinstance(given, str):
        return given
    return PART_SEPARATOR.join([given, *extra])


# --- csv and txt ------------------------------------------------------------------------------


def _parse_csv(text: str) -> ParsedInput:
    collector = _Collector()
    # newline="" hands the csv module the raw line endings, as its docs require, so quoted
    # cells keep their own newlines and `line_num` counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(
            "the csv file is empty; it needs a header row with a 'question' column"
        ) from None
    except csv.Error as exc:
        raise InputError(f"cannot read the csv header: {exc}") from exc
    names = [name.strip().lower() for name in header]
    if "question" not in names:
        raise InputError(
            "the csv header has no 'question' column "
            f"(found: {', '.join(repr(name) for name in header) or 'nothing'})"
        )
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    if repeated:
        raise InputError(f"the csv header repeats column(s): {', '.join(repeated)}")
    ignored = [name or "(unnamed)" for name in header if name.strip().lower() not in CSV_FIELDS]
    if ignored:
        collector.result.warnings.append(f"ignored csv columns: {', '.join(ignored)}")

    end_of_previous = reader.line_num
    while True:
        start = end_of_previous + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            collector.error(start, f"unreadable csv record ({exc})")
            end_of_previous = reader.line_num
            continue
        end_of_previous = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names) and any(cell.strip() for cell in row[len(names) :]):
            collector.error(
                start, f"the record has {len(row)} cells but the header has {len(names)}"
            )
            continue
        cells = dict(zip(names, row, strict=False))
        fields: dict[str, Any] = {"question": cells.get("question", "")}
        for name in CSV_FIELDS[1:]:
            value = cells.get(name, "")
            fields[name] = value if value.strip() else None
        collector.add(start, fields)
    return collector.finish()


def _parse_txt(text: str) -> ParsedInput:
    collector = _Collector()
    for number, line in _physical_lines(text):
        if line.strip():
            collector.add(number, {"question": line})
    return collector.finish()
