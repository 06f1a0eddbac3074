"""The newcomer's path through the CLI, in real subprocesses against a real Redis: stdin
questions, tool restrictions, batch names wherever ids go, `askq batches`, JSON arrays, hints,
plurals and input bounds. No worker is needed: submitted jobs wait, pending, in Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ASSISTANTS_ONLY, Askq

pytestmark = ASSISTANTS_ONLY


@pytest.fixture
def askq(make_askq: Callable[..., Askq]) -> Askq:
    return make_askq(max_question_chars=100)


def one_error_line(done: object) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert done.returncode == 2 and len(lines) == 1, done.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("askq: error: ")
    return lines[0]


def test_ask_dash_reads_the_question_from_stdin(askq: Askq) -> None:
    done = askq.cli("ask", "-", "--tools", "calculate, utc_now", input="What is 6 * 7?\n")
    assert done.returncode == 0, done.stderr
    request = askq.client.store.load(done.stdout.strip()).record.request
    assert request.question == "What is 6 * 7?"
    assert request.tools == ["calculate", "utc_now"]


def test_batch_tools_apply_to_lines_that_name_none(askq: Askq, tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a"}\n{"question": "b", "tools": ["utc_now"]}\n')
    done = askq.cli("batch", str(path), "--tools", "calculate")
    assert done.returncode == 0, done.stderr
    records = askq.client.batch_store.batch_records(done.stdout.strip())
    assert [r.request.tools for r in records] == [["calculate"], ["utc_now"]]


def test_a_batch_name_works_wherever_its_id_does(askq: Askq, tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("What is 1 + 1?\nWhat is 2 + 2?\n")
    batch_id = askq.cli("batch", str(path), "--name", "nightly").stdout.strip()

    status = json.loads(askq.cli("status", "nightly", "--json").stdout)
    assert status["batch_id"] == batch_id and status["size"] == 2
    waited = askq.cli("wait", "nightly", "--timeout", "0.2")
    assert waited.returncode == 124
    records = askq.cli("results", "nightly").stdout.splitlines()
    assert [json.loads(line)["batch_id"] for line in records] == [batch_id, batch_id]
    cancelled = askq.cli("cancel", "nightly")
    assert cancelled.returncode == 0 and "cancel requested for 2 jobs" in cancelled.stderr

    unknown = one_error_line(askq.cli("status", "no-such-name"))
    assert "no job, batch or batch name 'no-such-name'" in unknown
    refused = one_error_line(askq.cli("batch", str(path), "--name", "batch_mine"))
    assert "may not start with" in refused


def test_batches_lists_recent_batches_newest_first(askq: Askq, tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("one\ntwo\nthree\n")
    first = askq.cli("batch", str(path), "--name", "first").stdout.strip()
    path.write_text("four\n")
    second = askq.cli("batch", str(path)).stdout.strip()

    listed = askq.cli("batches", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["batch_id"] for row in rows] == [second, first]
    assert [(row["name"], row["size"], row["counts"]) for row in rows] == [
        (None, 1, {"pending": 1}),
        ("first", 3, {"pending": 3}),
    ]
    assert all(row["created_at"] for row in rows)
    table = askq.cli("batches").stdout.splitlines()
    assert table[0].startswith(second) and "1 job " in table[0] and "1 pending" in table[0]
    assert table[1].startswith(first) and " first " in table[1] and "3 jobs" in table[1]


def test_a_json_file_holding_an_array_is_a_batch(askq: Askq, tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text('[\n  {"question": "a", "custom_id": "x"},\n  {"question": ""},\n  "c"\n]\n')
    done = askq.cli("batch", str(path))
    assert done.returncode == 0, done.stderr
    assert "line 3: 'question' is empty" in done.stderr
    assert "line 4: expected a JSON object, got a string" in done.stderr
    assert "submitted 1 job, 2 bad lines skipped" in done.stderr
    records = list(askq.client.batch_store.batch_records(done.stdout.strip()))
    assert [r.request.custom_id for r in records] == ["x"]


def test_piped_plain_text_gets_a_hint_to_use_format_txt(askq: Askq) -> None:
    line = one_error_line_or_lines(askq.cli("batch", "-", input="What is 2 + 2?\nHello\n"))
    assert "--format txt" in line
    done = askq.cli("batch", "-", "--format", "txt", input="What is 2 + 2?\nHello\n")
    assert done.returncode == 0 and "submitted 2 jobs" in done.stderr


def one_error_line_or_lines(done: object) -> str:
    """The last stderr line, after each bad line was reported with its number."""
    lines = done.stderr.splitlines()  # type: ignore[attr-defined]
    assert done.returncode == 2 and lines[0].startswith("askq: -: line 1:")  # type: ignore[attr-defined]
    assert lines[-1].startswith("askq: error: ")
    return lines[-1]


def test_questions_over_the_limit_are_refused_naming_it(askq: Askq, tmp_path: Path) -> None:
    long = "x" * 101
    refused = one_error_line(askq.cli("ask", "-", input=long))
    assert "101 characters long; the limit is 100 (ASKQ_MAX_QUESTION_CHARS)" in refused

    path = tmp_path / "q.txt"
    path.write_text(f"short one\n{long}\nanother\n")
    done = askq.cli("batch", str(path))
    assert done.returncode == 0, done.stderr
    assert f"askq: {path}: line 2: the question is 101 characters long" in done.stderr
    records = list(askq.client.batch_store.batch_records(done.stdout.strip()))
    assert [r.request.question for r in records] == ["short one", "another"]
    with pytest.raises(Exception, match="ASKQ_MAX_QUESTION_CHARS"):
        askq.client.ask(long)
