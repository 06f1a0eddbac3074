"""The scripted engine's parsing and arithmetic, without HTTP."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from emulator.engine import answer_for, parse_script, solve_arithmetic


def test_arithmetic_answers() -> None:
    assert solve_arithmetic("What is 17 * 23?") == "17 * 23 = 391"
    assert solve_arithmetic("compute (1 + 2) * 3 please") == "(1 + 2) * 3 = 9"
    assert solve_arithmetic("2 ** 10") == "2 ** 10 = 1024"
    assert solve_arithmetic("7 / 2") == "7 / 2 = 3.5"
    assert solve_arithmetic("-3 + 5") == "-3 + 5 = 2"


def test_not_arithmetic() -> None:
    assert solve_arithmetic("Who wrote Hamlet?") is None
    assert solve_arithmetic("What is 5?") is None
    assert solve_arithmetic("1 / 0") is None
    assert solve_arithmetic("9 ** 99999999") is None  # refused, not computed
    assert solve_arithmetic("__import__('os')") is None


@given(a=st.integers(-10_000, 10_000), b=st.integers(-10_000, 10_000), op=st.sampled_from("+-*"))
def test_arithmetic_matches_python(a: int, b: int, op: str) -> None:
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    answer = answer_for(f"What is {a} {op} ({b})?")
    assert answer.endswith(f"= {expected}")


def test_tags_parsed_and_removed() -> None:
    script = parse_script(
        'Hi [run_time=2.5] [multi] [fail] [tool:f {"a": [1, {"b": "]"}]}] [tool:g]'
    )
    assert script.run_time_s == 2.5 and script.multi and script.outcome == "failed"
    assert [(name, json.loads(args)) for name, args in script.tools] == [
        ("f", {"a": [1, {"b": "]"}]}),
        ("g", {}),
    ]
    assert script.question == "Hi"


def test_unknown_brackets_are_kept() -> None:
    script = parse_script("see [1] and [tool:broken {not json}]")
    assert script.tools == []
    assert script.question == "see [1] and [tool:broken {not json}]"


def test_echo_answer() -> None:
    assert (
        answer_for(parse_script("Tell me a joke [never]").question)
        == 'The askq emulator received: "Tell me a joke"'
    )
