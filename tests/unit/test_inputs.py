"""Batch file parsing: every format, Batch API lines, line numbers of bad lines, warnings."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from producer.inputs import LineError, ParsedInput, ParsedItem, parse_file, parse_text
from worker.errors import InputError
from worker.models import JobRequest, Message


def jsonl(*objects: Any) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)


def chat_line(body: dict[str, Any], custom_id: str = "c1", **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
        **extra,
    }


def responses_line(body: dict[str, Any], custom_id: str = "r1") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}


def only_request(parsed: ParsedInput) -> JobRequest:
    assert parsed.errors == []
    assert len(parsed.items) == 1
    return parsed.items[0].request


def error_lines(parsed: ParsedInput) -> list[int]:
    return [error.line for error in parsed.errors]


# --- formats and files ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".JSONL"])
def test_json_lines_extensions(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"in{suffix}"
    path.write_text(jsonl({"question": "a"}, {"question": "b"}), encoding="utf-8")
    parsed = parse_file(path)
    assert [item.request.question for item in parsed.items] == ["a", "b"]
    assert [item.line for item in parsed.items] == [1, 2]


def test_csv_and_txt_by_extension(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text("question\nfrom csv\n", encoding="utf-8")
    (tmp_path / "q.txt").write_text("from txt\n", encoding="utf-8")
    assert only_request(parse_file(tmp_path / "q.csv")).question == "from csv"
    assert only_request(parse_file(str(tmp_path / "q.txt"))).question == "from txt"


def test_explicit_format_overrides_extension(tmp_path: Path) -> None:
    path = tmp_path / "questions.dat"
    path.write_text('{"question": "x"}\n', encoding="utf-8")
    assert only_request(parse_file(path, "txt")).question == '{"question": "x"}'
    assert only_request(parse_file(path, "jsonl")).question == "x"


@pytest.mark.parametrize("name", ["questions.xlsx", "questions", "q.tsv"])
def test_unknown_extension_is_one_line_input_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("question\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        parse_file(path)
    message = str(caught.value)
    assert "\n" not in message
    for extension in (".jsonl", ".ndjson", ".json", ".csv", ".txt"):
        assert extension in message


def test_unknown_format_name_is_input_error() -> None:
    with pytest.raises(InputError):
        parse_text("x\n", "yaml")


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        parse_file(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_directory_is_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    with pytest.raises(InputError):
        parse_file(folder)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_non_utf8_is_input_error_naming_the_line(tmp_path: Path, bom: bytes) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(bom + "first\ncafé\n".encode("latin-1"))
    with pytest.raises(InputError) as caught:
        parse_file(path)
    message = str(caught.value)
    assert "UTF-8" in message
    assert "line 2" in message
    assert "0xe9" in message
    assert "\n" not in message


def test_utf16_file_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_bytes('{"question": "x"}\n'.encode("utf-16"))
    with pytest.raises(InputError):
        parse_file(path)


def test_empty_file_gives_nothing(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.txt"):
        (tmp_path / name).write_bytes(b"")
        assert parse_file(tmp_path / name) == ParsedInput([], [], [])


# --- BOM and line endings ---------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_bom_and_crlf_keep_line_numbers(tmp_path: Path, ending: str, bom: str) -> None:
    lines = ['{"question": "one"}', "", "broken {", '{"question": "two"}', "[]"]
    path = tmp_path / "q.jsonl"
    path.write_bytes((bom + ending.join(lines) + ending).encode("utf-8"))
    parsed = parse_file(path)
    assert [(item.line, item.request.question) for item in parsed.items] == [(1, "one"), (4, "two")]
    assert error_lines(parsed) == [3, 5]
    assert parse_text(bom + ending.join(lines), "jsonl") == parsed


def test_bom_on_first_json_line_via_parse_text() -> None:
    assert only_request(parse_text('\ufeff{"question": "x"}', "jsonl")).question == "x"


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_bom_and_crlf_in_csv_header(tmp_path: Path, bom: str) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes((bom + "question,custom_id\r\nhello,a\r\n,b\r\nbye,c\r\n").encode())
    parsed = parse_file(path)
    assert [(i.line, i.request.question, i.request.custom_id) for i in parsed.items] == [
        (2, "hello", "a"),
        (4, "bye", "c"),
    ]
    assert error_lines(parsed) == [3]


def test_unicode_line_separators_do_not_split_lines() -> None:
    # U+2028 and U+0085 are legal inside JSON strings; str.splitlines would split on them.
    text = jsonl({"question": "a\u2028b\x85c"}, "oops") + "also\u2028bad\n"
    parsed = parse_text(text, "jsonl")
    assert parsed.items[0].request.question == "a\u2028b\x85c"
    assert error_lines(parsed) == [2, 3]
    txt = parse_text("x\u2028y\nz\n", "txt")
    assert [(i.line, i.request.question) for i in txt.items] == [(1, "x\u2028y"), (2, "z")]


# --- verbatim questions -----------------------------------------------------------------------

VERBATIM = [
    "  leading and trailing spaces  ",
    "\ttabbed\t",
    "she said \"hi\", then 'bye'",
    "ünïcödé — 日本語 — emoji 🎉",
    "back\\slash and a comma, here",
    "inner\rcarriage return",
]


@pytest.mark.parametrize("question", VERBATIM)
def test_questions_are_verbatim_in_every_format(tmp_path: Path, question: str) -> None:
    assert only_request(parse_text(jsonl({"question": question}), "jsonl")).question == question
    chat = chat_line({"messages": [{"role": "user", "content": question}]})
    assert only_request(parse_text(jsonl(chat), "jsonl")).question == question
    response = responses_line({"input": question})
    assert only_request(parse_text(jsonl(response), "jsonl")).question == question
    path = tmp_path / "q.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["question"], [question]])
    assert only_request(parse_file(path)).question == question
    if "\r" not in question:
        assert only_request(parse_text(question + "\n", "txt")).question == question


def test_txt_only_removes_line_endings() -> None:
    parsed = parse_text("  a  \r\n\n   \n\tb\n\r\nc\r\r\n", "txt")
    assert [(i.line, i.request.question) for i in parsed.items] == [
        (1, "  a  "),
        (4, "\tb"),
        (6, "c\r"),
    ]
    assert parsed.errors == []
    assert parsed.warnings == []


def test_whitespace_only_question_is_an_error_in_jsonl_and_csv() -> None:
    parsed = parse_text(jsonl({"question": "   "}, {"question": ""}, {"question": "ok"}), "jsonl")
    assert error_lines(parsed) == [1, 2]
    assert [i.line for i in parsed.items] == [3]
    parsed = parse_text('question,custom_id\n"   ",a\n', "csv")
    assert error_lines(parsed) == [2]


# --- native jsonl -----------------------------------------------------------------------------


def test_native_line_with_every_field() -> None:
    line = {
        "question": "q",
        "custom_id": "c",
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "model": "m",
        "instructions": "be brief",
        "metadata": {"team": "x"},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 100,
        "tools": ["lookup"],
    }
    parsed = parse_text(jsonl(line), "jsonl")
    assert only_request(parsed) == JobRequest.model_validate(line)
    assert parsed.warnings == []


def test_native_messages_with_system_become_instructions() -> None:
    line = {
        "instructions": "first",
        "messages": [
            {"role": "system", "content": "second"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"},
        ],
    }
    request = only_request(parse_text(jsonl(line), "jsonl"))
    assert request.instructions == "first\n\nsecond"
    assert request.messages == [
        Message(role="user", content="hello"),
        Message(role="assistant", content="hi"),
        Message(role="user", content="again"),
    ]


def test_unknown_native_fields_give_one_aggregated_warning() -> None:
    text = jsonl(
        {"question": "a", "foo": 1},
        {"question": "b"},
        {"question": "c", "bar": 2, "foo": 3},
        {"question": "d", "bar": 4},
    )
    parsed = parse_text(text, "jsonl")
    assert len(parsed.items) == 4
    assert "foo" not in parsed.items[0].request.model_dump()
    assert parsed.warnings == ["ignored unknown fields on 3 lines (1, 3, 4): bar, foo"]


def test_warning_lists_at_most_five_lines() -> None:
    parsed = parse_text(jsonl(*({"question": "q", "x": i} for i in range(8))), "jsonl")
    assert parsed.warnings == ["ignored unknown fields on 8 lines (1, 2, 3, 4, 5, …): x"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes"),
        ('{"question": "a",}', "not valid JSON ("),
        ('{"question": "a", "temperature": NaN}', "not valid JSON (NaN is not allowed)"),
        ("[1, 2]", "expected a JSON object, got an array"),
        ('"just a string"', "expected a JSON object, got a string"),
        ("42", "expected a JSON object, got a number"),
        ("null", "expected a JSON object, got null"),
        ("{}", "give exactly one of 'question' or 'messages'"),
        ('{"question": "a", "messages": [{"role": "user", "content": "b"}]}', "exactly one"),
        ('{"question": 5}', "question: Input should be a valid string"),
        ('{"question": "a", "temperature": "hot"}', "temperature: Input should be a valid number"),
        ('{"question": "a", "metadata": {"k": 1}}', "metadata.k: Input should be a valid string"),
        ('{"question": "a", "metadata": {"askq_job": "x"}}', "'askq_job' is reserved"),
        ('{"question": "a", "tools": "lookup"}', "tools: Input should be a valid list"),
        ('{"messages": []}', "'messages' is empty"),
        ('{"messages": "hi"}', "messages: Input should be a valid list"),
        ('{"messages": [{"role": "assistant", "content": "x"}]}', "last message must come from"),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "messages[0]: role 'tool'"),
        ('{"messages": [{"role": "user", "content": 3}]}', "messages[0].content must be"),
        ('{"messages": ["hi"]}', "messages[0] must be a message object, got a string"),
        ('{"messages": [{"role": "system", "content": "x"}]}', "messages holds no user message"),
    ],
)
def test_bad_native_line_messages(line: str, expected: str) -> None:
    parsed = parse_text(f'{{"question": "good"}}\n{line}\n{{"question": "fine"}}\n', "jsonl")
    assert [i.line for i in parsed.items] == [1, 3]
    assert len(parsed.errors) == 1
    error = parsed.errors[0]
    assert error.line == 2
    assert expected in error.message
    assert "\n" not in error.message
    assert not error.message.startswith("line ")
    assert str(error) == f"line 2: {error.message}"


def test_json_error_names_the_column() -> None:
    parsed = parse_text('{"question": "a" "b"}\n', "jsonl")
    assert parsed.errors == [LineError(1, "not valid JSON (Expecting ',' delimiter at column 18)")]


def test_metadata_over_fifteen_keys_is_an_error() -> None:
    metadata = {f"k{i}": "v" for i in range(16)}
    parsed = parse_text(jsonl({"question": "a", "metadata": metadata}), "jsonl")
    assert error_lines(parsed) == [1]
    assert "15" in parsed.errors[0].message


def test_several_validation_problems_are_summarised_on_one_line() -> None:
    parsed = parse_text(jsonl({"question": "a", "temperature": "x", "top_p": "y"}), "jsonl")
    assert parsed.errors[0].message.endswith("(and 1 more)")


def test_duplicate_custom_id_errors_on_later_lines_only() -> None:
    text = jsonl(
        {"question": "a", "custom_id": "x"},
        {"question": "b", "custom_id": "y"},
        {"question": "c", "custom_id": "x"},
        {"question": "d"},
        {"question": "e"},
        chat_line({"messages": [{"role": "user", "content": "f"}]}, custom_id="x"),
    )
    parsed = parse_text(text, "jsonl")
    assert [(i.line, i.request.question) for i in parsed.items] == [
        (1, "a"),
        (2, "b"),
        (4, "d"),
        (5, "e"),
    ]
    assert parsed.errors == [
        LineError(3, "duplicate custom_id 'x' (first on line 1)"),
        LineError(6, "duplicate custom_id 'x' (first on line 1)"),
    ]


def test_a_bad_line_does_not_reserve_its_custom_id() -> None:
    text = jsonl({"question": " ", "custom_id": "x"}, {"question": "ok", "custom_id": "x"})
    parsed = parse_text(text, "jsonl")
    assert error_lines(parsed) == [1]
    assert [i.line for i in parsed.items] == [2]


def test_duplicate_custom_id_in_csv() -> None:
    parsed = parse_text("question,custom_id\na,1\nb,2\nc,1\n", "csv")
    assert [i.request.question for i in parsed.items] == ["a", "b"]
    assert parsed.errors == [LineError(4, "duplicate custom_id '1' (first on line 2)")]


# --- OpenAI Batch API lines -------------------------------------------------------------------


def test_chat_completions_line() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "temperature": 0,
        "top_p": 0.5,
        "max_tokens": 50,
        "metadata": {"source": "batch"},
    }
    parsed = parse_text(jsonl(chat_line(body, custom_id="req-1")), "jsonl")
    assert only_request(parsed) == JobRequest(
        custom_id="req-1",
        question="What is 2+2?",
        instructions="You are terse.\n\nNo emoji.",
        model="gpt-4o-mini",
        temperature=0,
        top_p=0.5,
        max_tokens=50,
        metadata={"source": "batch"},
    )
    assert parsed.warnings == []


def test_chat_completions_conversation_and_multi_part_content() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Part one."}]},
            {"role": "assistant", "content": "Noted."},
            {
                "role": "user",
                "content": [{"type": "text", "text": " A "}, {"type": "text", "text": "B "}],
            },
        ],
        "max_completion_tokens": 7,
    }
    request = only_request(parse_text(jsonl(chat_line(body)), "jsonl"))
    assert request.question is None
    assert request.instructions is None
    assert request.max_tokens == 7
    assert request.messages == [
        Message(role="user", content="Part one."),
        Message(role="assistant", content="Noted."),
        Message(role="user", content=" A \n\nB "),
    ]


def test_responses_line_with_string_input() -> None:
    body = {
        "model": "gpt-4.1",
        "input": "  Tell me a joke.  ",
        "instructions": "Be funny.",
        "max_output_tokens": 200,
        "temperature": 1.2,
    }
    request = only_request(parse_text(jsonl(responses_line(body)), "jsonl"))
    assert request == JobRequest(
        custom_id="r1",
        question="  Tell me a joke.  ",
        instructions="Be funny.",
        model="gpt-4.1",
        max_tokens=200,
        temperature=1.2,
    )


def test_responses_line_with_message_items() -> None:
    body = {
        "instructions": "Top.",
        "input": [
            {"role": "developer", "content": "Dev."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Q1"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "A1"}]},
            {"role": "system", "content": "Sys."},
            {"role": "user", "content": "Q2"},
        ],
    }
    request = only_request(parse_text(jsonl(responses_line(body)), "jsonl"))
    assert request.instructions == "Top.\n\nDev.\n\nSys."
    assert request.messages == [
        Message(role="user", content="Q1"),
        Message(role="assistant", content="A1"),
        Message(role="user", content="Q2"),
    ]


def test_max_token_spellings_newest_wins() -> None:
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 9}
    assert only_request(parse_text(jsonl(chat_line(body)), "jsonl")).max_tokens == 9
    body["max_completion_tokens"] = 4
    assert only_request(parse_text(jsonl(chat_line(body)), "jsonl")).max_tokens == 4


def test_dropped_batch_fields_give_one_warning_for_the_file() -> None:
    text = jsonl(
        chat_line(
            {
                "messages": [{"role": "user", "content": "a", "name": "bob"}],
                "n": 2,
                "response_format": {"type": "json_object"},
            },
            custom_id="1",
        ),
        chat_line({"messages": [{"role": "user", "content": "b"}]}, custom_id="2"),
        responses_line({"input": "c", "store": True, "tools": []}, custom_id="3"),
        chat_line({"messages": [{"role": "user", "content": "d"}], "n": 1}, custom_id="4"),
    )
    parsed = parse_text(text, "jsonl")
    assert [i.request.question for i in parsed.items] == ["a", "b", "c", "d"]
    assert parsed.warnings == [
        "dropped Batch API fields askq does not send on 3 lines (1, 3, 4): "
        "body.messages[].name, body.n, body.response_format, body.store, body.tools"
    ]
    assert parsed.items[2].request.tools is None


def test_plain_batch_lines_give_no_warning() -> None:
    parsed = parse_text(jsonl(chat_line({"messages": [{"role": "user", "content": "x"}]})), "jsonl")
    assert parsed.warnings == []


def test_native_and_batch_warnings_are_separate_single_lines() -> None:
    text = jsonl(
        {"question": "a", "foo": 1},
        chat_line({"messages": [{"role": "user", "content": "b"}], "seed": 1}),
        {"question": "c", "foo": 1},
    )
    parsed = parse_text(text, "jsonl")
    assert sorted(parsed.warnings) == [
        "dropped Batch API fields askq does not send on 1 line (2): body.seed",
        "ignored unknown fields on 2 lines (1, 3): foo",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
            "url '/v1/embeddings' is not supported",
        ),
        ({"custom_id": "e", "body": {"input": "x"}}, "no url is not supported"),
        (
            {"method": "GET", "url": "/v1/responses", "body": {"input": "x"}},
            "method 'GET' is not supported",
        ),
        ({"url": "/v1/responses", "body": "x"}, "'body' must be a JSON object, got a string"),
        ({"url": "/v1/responses", "body": {}}, "body.input must be a string or a list"),
        ({"url": "/v1/chat/completions", "body": {"input": "x"}}, "body.messages must be a list"),
        (
            chat_line(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "what is this?"},
                                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                            ],
                        }
                    ]
                }
            ),
            "body.messages[0].content has a image_url part; askq sends text only",
        ),
        (
            responses_line(
                {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": ""}]}]}
            ),
            "has a input_image part",
        ),
        (
            responses_line({"input": [{"type": "function_call_output", "call_id": "c"}]}),
            "body.input[0]: item type 'function_call_output' is not supported",
        ),
        (
            chat_line({"messages": [{"role": "tool", "content": "x", "tool_call_id": "t"}]}),
            "role 'tool' is not supported",
        ),
        (
            chat_line({"messages": [{"role": "assistant", "content": None}]}),
            "body.messages[0].content must be a string or a list of text parts",
        ),
        (
            chat_line({"messages": [{"role": "system", "content": "only instructions"}]}),
            "body.messages holds no user message, only instructions",
        ),
        (responses_line({"input": []}), "'messages' is empty"),
        (responses_line({"input": "   "}), "'question' is empty"),
        (
            responses_line({"input": "x", "instructions": ["a"]}),
            "body.instructions must be a string",
        ),
        (responses_line({"input": "x", "temperature": "warm"}), "temperature: Input should be"),
    ],
)
def test_bad_batch_lines(line: dict[str, Any], expected: str) -> None:
    text = jsonl({"question": "good"}, line, responses_line({"input": "fine"}, custom_id="ok"))
    parsed = parse_text(text, "jsonl")
    assert [i.line for i in parsed.items] == [1, 3]
    assert error_lines(parsed) == [2]
    assert expected in parsed.errors[0].message
    assert "\n" not in parsed.errors[0].message


# --- csv --------------------------------------------------------------------------------------


def test_csv_optional_columns_and_empty_cells() -> None:
    text = (
        "custom_id,question,thread_id,assistant_id,model,instructions\n"
        "a,first,thread_1,asst_1,m,be nice\n"
        "b,second,,,  ,\n"
        ",third,,,,\n"
    )
    parsed = parse_text(text, "csv")
    assert parsed.errors == []
    assert parsed.warnings == []
    assert [item.request for item in parsed.items] == [
        JobRequest(
            custom_id="a",
            question="first",
            thread_id="thread_1",
            assistant_id="asst_1",
            model="m",
            instructions="be nice",
        ),
        JobRequest(custom_id="b", question="second"),
        JobRequest(question="third"),
    ]


def test_csv_header_names_are_trimmed_and_case_insensitive() -> None:
    assert only_request(parse_text(" Question ,CUSTOM_ID\nq,c\n", "csv")).custom_id == "c"


def test_csv_unknown_columns_give_one_warning() -> None:
    parsed = parse_text("question,notes,score\na,n1,1\nb,n2,2\n", "csv")
    assert len(parsed.items) == 2
    assert parsed.warnings == ["ignored csv columns: notes, score"]


@pytest.mark.parametrize(
    "text",
    ["", "\n", "custom_id,prompt\na,b\n", "\ufeffcustom_id\n"],
)
def test_csv_without_question_column_is_input_error(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_text(text, "csv")
    assert "question" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_csv_repeated_column_is_input_error() -> None:
    with pytest.raises(InputError):
        parse_text("question,Question\na,b\n", "csv")


def test_csv_multi_line_cells_report_where_the_record_starts() -> None:
    text = (
        "question,custom_id\n"  # 1
        '"spans\nthree\nlines",a\n'  # 2-4
        ",b\n"  # 5: empty question
        '"two\r\nlines ""quoted""",c\n'  # 6-7
        "\n"  # 8: blank
        '"",d\n'  # 9: empty question
        "last,e\n"  # 10
    )
    parsed = parse_text(text, "csv")
    assert [(i.line, i.request.question) for i in parsed.items] == [
        (2, "spans\nthree\nlines"),
        (6, 'two\r\nlines "quoted"'),
        (10, "last"),
    ]
    assert error_lines(parsed) == [5, 9]


def test_csv_blank_and_all_empty_rows_are_skipped() -> None:
    parsed = parse_text("question,custom_id\n\n,\n , \nq,\n", "csv")
    assert parsed.errors == []
    assert [i.line for i in parsed.items] == [5]


def test_csv_short_rows_and_extra_cells() -> None:
    parsed = parse_text("custom_id,question\nonly-id\na,b,unexpected\nc,d,\n", "csv")
    assert error_lines(parsed) == [2, 3]
    assert "3 cells but the header has 2" in parsed.errors[1].message
    assert [(i.line, i.request.custom_id) for i in parsed.items] == [(4, "c")]


# --- property-based ---------------------------------------------------------------------------

_text = st.text(min_size=1, max_size=40)
_question = _text.filter(lambda s: s.strip() != "")
_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
_optional = st.one_of(st.none(), _text)
_number = st.floats(min_value=0, max_value=2, allow_nan=False, allow_infinity=False)


@st.composite
def _requests(draw: st.DrawFn) -> JobRequest:
    fields: dict[str, Any] = {
        "thread_id": draw(_optional),
        "assistant_id": draw(_optional),
        "model": draw(_optional),
        "instructions": draw(_optional),
        "metadata": draw(
            st.dictionaries(_name.filter(lambda k: k != "askq_job"), _text, max_size=15)
        ),
        "temperature": draw(st.none() | _number),
        "top_p": draw(st.none() | st.floats(min_value=0, max_value=1, allow_nan=False)),
        "max_tokens": draw(st.none() | st.integers(min_value=1, max_value=10**6)),
        "tools": draw(st.none() | st.lists(_name, max_size=3)),
    }
    if draw(st.booleans()):
        fields["question"] = draw(_question)
    else:
        turns = draw(st.lists(st.tuples(_text, _text), max_size=3))
        messages: list[Message] = []
        for question, answer in turns:
            messages.append(Message(role="user", content=question))
            messages.append(Message(role="assistant", content=answer))
        messages.append(Message(role="user", content=draw(_text)))
        fields["messages"] = messages
    return JobRequest(**fields)


@st.composite
def _request_lists(draw: st.DrawFn) -> list[JobRequest]:
    requests = draw(st.lists(_requests(), max_size=8))
    ids = draw(
        st.lists(st.one_of(st.none(), _text), min_size=len(requests), max_size=len(requests))
    )
    seen: set[str] = set()
    unique: list[JobRequest] = []
    for request, custom_id in zip(requests, ids, strict=True):
        if custom_id is not None and custom_id in seen:
            custom_id = None
        if custom_id is not None:
            seen.add(custom_id)
        unique.append(request.model_copy(update={"custom_id": custom_id}))
    return unique


def _native_line(request: JobRequest, ensure_ascii: bool) -> str:
    return json.dumps(request.model_dump(mode="json", exclude_none=True), ensure_ascii=ensure_ascii)


_garbage = st.one_of(
    st.text(max_size=30).map(lambda s: "nope " + s.replace("\n", " ")),
    st.text(max_size=30).map(lambda s: "{" + s.replace("\n", " ")),
    st.lists(st.integers(), max_size=3).map(json.dumps),
    st.one_of(st.integers(), st.text(), st.booleans(), st.none()).map(json.dumps),
    st.dictionaries(
        _name.filter(lambda k: k not in {"question", "messages", "body"}), st.integers(), max_size=3
    ).map(json.dumps),
    st.text(alphabet=" \t\u3000", max_size=5).map(lambda s: json.dumps({"question": s})),
    st.just('{"messages": []}'),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(requests=_request_lists(), ensure_ascii=st.booleans(), crlf=st.booleans(), bom=st.booleans())
def test_native_items_round_trip(
    requests: list[JobRequest], ensure_ascii: bool, crlf: bool, bom: bool
) -> None:
    ending = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + "".join(
        _native_line(r, ensure_ascii) + ending for r in requests
    )
    parsed = parse_text(text, "jsonl")
    assert parsed.errors == []
    assert parsed.warnings == []
    assert parsed.items == [ParsedItem(n, r) for n, r in enumerate(requests, start=1)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), requests=_request_lists(), crlf=st.booleans())
def test_garbage_lines_are_reported_exactly(
    data: st.DataObject, requests: list[JobRequest], crlf: bool
) -> None:
    lines: list[tuple[str, str]] = [("good", _native_line(r, True)) for r in requests]
    inserts = data.draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=len(lines) + 8),
                st.sampled_from(["garbage", "blank"]),
                _garbage,
                st.sampled_from(["", " ", "\t"]),
            ),
            max_size=8,
        )
    )
    for position, kind, garbage, blank in inserts:
        lines.insert(min(position, len(lines)), (kind, garbage if kind == "garbage" else blank))
    ending = "\r\n" if crlf else "\n"
    text = "".join(line + ending for _, line in lines)
    assume(not isinstance(_whole_document(text), list))  # one JSON array: tested below
    parsed = parse_text(text, "jsonl")

    expected_errors = [n for n, (kind, _) in enumerate(lines, start=1) if kind == "garbage"]
    expected_items = [n for n, (kind, _) in enumerate(lines, start=1) if kind == "good"]
    assert error_lines(parsed) == expected_errors
    assert [item.line for item in parsed.items] == expected_items
    assert [item.request for item in parsed.items] == requests
    assert all("\n" not in error.message for error in parsed.errors)


@settings(max_examples=100)
@given(questions=st.lists(_question.filter(lambda s: "\n" not in s and "\r" not in s), max_size=8))
def test_txt_questions_round_trip(questions: list[str]) -> None:
    parsed = parse_text("\n".join(questions), "txt")
    assert [item.request.question for item in parsed.items] == questions


@settings(max_examples=100)
@given(rows=st.lists(st.tuples(_question, st.one_of(st.none(), _name)), max_size=8))
def test_csv_questions_round_trip(rows: list[tuple[str, str | None]]) -> None:
    ids = [custom_id for _, custom_id in rows if custom_id is not None]
    rows = [(q, c if c is not None and ids.count(c) == 1 else None) for q, c in rows]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["question", "custom_id"])
    writer.writerows((q, c or "") for q, c in rows)
    parsed = parse_text(buffer.getvalue(), "csv")
    assert parsed.errors == []
    assert [(i.request.question, i.request.custom_id) for i in parsed.items] == rows


def _whole_document(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_a_json_array_file_gives_its_items_with_the_lines_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(
        '[\n  {"question": "a", "custom_id": "x"},\n  {"question":\n    "b"}, 7,\n'
        '  {"custom_id": "y", "method": "POST", "url": "/v1/chat/completions",\n'
        '   "body": {"model": "m", "messages": [{"role": "user", "content": "c"}]}}\n]\n'
    )
    parsed = parse_file(path)
    assert [(item.line, item.request.question) for item in parsed.items] == [
        (2, "a"),
        (3, "b"),
        (5, "c"),
    ]
    assert error_lines(parsed) == [4]
    assert parse_text("[]", "jsonl") == ParsedInput()


def test_json_lines_whose_first_line_is_an_array_stay_json_lines() -> None:
    parsed = parse_text('[1, 2]\n{"question": "a"}\n', "jsonl")
    assert [item.line for item in parsed.items] == [2]
    assert parsed.errors == [LineError(1, "expected a JSON object, got an array")]
