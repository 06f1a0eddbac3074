"""The emulator answers any question or refuses it with a clean 400; it never crashes.

Deep arithmetic once raised RecursionError on every retry (a traceback each, and the job failed
with `server_error` two minutes later); hypothesis now throws generated text at it.
"""

from __future__ import annotations

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from emulator.engine import answer_for
from emulator.wire import MAX_MESSAGE_CHARS

ARITHMETIC_ALPHABET = "0123456789+-*/(). e"
DEEP = "What is " + "1 + " * 996 + "1?"
"""The ~4 KB question that raised RecursionError on every retry."""
questions = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=ARITHMETIC_ALPHABET, max_size=5_000),
    st.builds(
        lambda op, n, tail: f"What is {f'1 {op} ' * n}{tail}?",
        st.sampled_from(["+", "-", "*", "/", "**"]),
        st.integers(min_value=0, max_value=3_000),
        st.integers(min_value=0, max_value=10**6),
    ),
    st.builds(
        lambda depth: "(" * depth + "2*3" + ")" * depth,
        st.integers(min_value=0, max_value=3_000),
    ),
)


@given(questions)
@settings(max_examples=300, deadline=None)
def test_answer_for_any_text_is_an_answer(question: str) -> None:
    answer = answer_for(question)
    assert isinstance(answer, str) and answer


@pytest.mark.parametrize(
    "question",
    [
        DEEP,
        "-" * 5_000 + "1",
        "(" * 999 + "1" + ")" * 999,
        "9**64 * " * 200 + "9",
        "1e308 * 10 + 1",
        "10**64 ** 64",
    ],
)
def test_deep_and_huge_arithmetic_is_answered(question: str) -> None:
    assert answer_for(question)


def test_small_arithmetic_is_still_computed() -> None:
    assert answer_for("What is " + "1 + " * 300 + "1?").endswith(" = 301")


@given(questions)
@example(DEEP)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_runs_on_generated_questions_complete_over_http(sdk: OpenAI, question: str) -> None:
    if not question.strip():
        question = "blank"
    run = sdk.beta.threads.create_and_run_poll(
        assistant_id="asst_any",
        thread={"messages": [{"role": "user", "content": question}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    answer = sdk.beta.threads.messages.list(run.thread_id, run_id=run.id).data[0]
    assert answer.content[0].type == "text" and answer.content[0].text.value
    response = sdk.responses.create(model="m", input=question)
    assert response.status == "completed" and response.output_text


def test_a_message_over_the_api_limit_is_a_clean_400(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.beta.threads.create_and_run(
            assistant_id="asst_any",
            thread={"messages": [{"role": "user", "content": "7 * 6 " * MAX_MESSAGE_CHARS}]},
        )
    assert refused.value.code == "string_above_max_length"
    at_limit = "x" * MAX_MESSAGE_CHARS
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": at_limit}])
    assert thread.id
