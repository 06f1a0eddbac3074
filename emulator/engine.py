"""The scripted engine: deterministic answers and behaviour chosen by tags in the question.

A run's *plan* says what happens when its work phase ends: either a list of tool calls to
request, or a terminal outcome with answer texts. Both protocols and chat completions share it,
so one tag means the same thing everywhere (the tag list is in emulator/README.md).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["completed", "failed", "incomplete", "expired", "never"]

_SIMPLE_TAG = re.compile(
    r"\[(fail|incomplete|expire|never|multi|endless_pages|run_time=([0-9]+(?:\.[0-9]*)?)"
    r"|answer_mb=([0-9]+(?:\.[0-9]*)?))\]"
)
_TOOL_OPEN = "[tool:"
_ARITH_SPAN = re.compile(r"[0-9.()+\-*/\s]+")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_id(prefix: str) -> str:
    """An id shaped like OpenAI's (`run_` + 24 alphanumerics)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asks the client to run."""

    id: str
    name: str
    arguments: str


@dataclass
class Script:
    """What the tags in one question ask for."""

    question: str  # the text with the tags removed
    run_time_s: float | None = None
    outcome: Outcome = "completed"
    multi: bool = False
    tools: list[tuple[str, str]] = field(default_factory=list)  # (name, JSON arguments)
    answer_mb: float | None = None  # an answer this many megabytes long
    endless_pages: bool = False  # listing the run's messages always says has_more


@dataclass
class Plan:
    """What a run or response does when its current work phase ends."""

    outcome: Outcome = "completed"
    answers: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error_message: str | None = None
    error_code: str = "server_error"
    endless_pages: bool = False


def _parse_tool_tags(text: str) -> tuple[list[tuple[str, str]], str]:
    """Find `[tool:NAME {json}]` tags; JSON may hold brackets, so it is decoded, not regexed."""
    tools: list[tuple[str, str]] = []
    kept: list[str] = []
    pos = 0
    decoder = json.JSONDecoder()
    while True:
        start = text.find(_TOOL_OPEN, pos)
        if start < 0:
            kept.append(text[pos:])
            break
        i = start + len(_TOOL_OPEN)
        m = re.match(r"[A-Za-z0-9_\-.]+", text[i:])
        if not m:
            kept.append(text[pos : start + 1])
            pos = start + 1
            continue
        name = m.group(0)
        i += len(name)
        while i < len(text) and text[i] == " ":
            i += 1
        args = "{}"
        if i < len(text) and text[i] == "{":
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                kept.append(text[pos : start + 1])
                pos = start + 1
                continue
            args = json.dumps(value, separators=(",", ":"))
            i = end
            while i < len(text) and text[i] == " ":
                i += 1
        if i >= len(text) or text[i] != "]":
            kept.append(text[pos : start + 1])
            pos = start + 1
            continue
        tools.append((name, args))
        kept.append(text[pos:start])
        pos = i + 1
    return tools, "".join(kept)


def parse_script(text: str) -> Script:
    """Read the tags of a question; unknown bracketed text is left alone."""
    tools, rest = _parse_tool_tags(text)
    script = Script(question="", tools=tools)

    def take(m: re.Match[str]) -> str:
        tag = m.group(1)
        if tag == "multi":
            script.multi = True
        elif tag == "fail":
            script.outcome = "failed"
        elif tag == "incomplete":
            script.outcome = "incomplete"
        elif tag == "expire":
            script.outcome = "expired"
        elif tag == "never":
            script.outcome = "never"
        elif tag == "endless_pages":
            script.endless_pages = True
        elif m.group(3) is not None:
            script.answer_mb = float(m.group(3))
        else:
            script.run_time_s = float(m.group(2))
        return ""

    rest = _SIMPLE_TAG.sub(take, rest)
    script.question = " ".join(rest.split())
    return script


# --- arithmetic -------------------------------------------------------------------------

_BIN_OPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


MAX_EXPRESSION_CHARS = 2_000
"""Longer expressions are not computed (the answer echoes the question instead): Python's
parser and this evaluator recurse once per operator, and near 1,000 levels raise
RecursionError; the bound also keeps a huge question from costing seconds of CPU."""


class _NotArithmetic(Exception):
    """The text is not an expression this evaluator will compute."""


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        if isinstance(node.value, bool):
            raise _NotArithmetic("bool")
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise _NotArithmetic("exponent too large")  # keeps a request from burning CPU
        try:
            return _BIN_OPS[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as exc:
            raise _NotArithmetic(str(exc)) from exc
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_eval_node(node.operand))
    raise _NotArithmetic(type(node).__name__)


def _has_binop(node: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) for n in ast.walk(node))


def _format_number(value: float) -> str:
    if isinstance(value, complex):
        raise _NotArithmetic("complex")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotArithmetic("not finite")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def solve_arithmetic(text: str) -> str | None:
    """`"What is 17 * 23?"` -> `"17 * 23 = 391"`; None when the text holds no arithmetic.

    Evaluated on the AST with a whitelist of operators, never with eval().
    """
    best: str | None = None
    for m in _ARITH_SPAN.finditer(text):
        candidate = m.group(0).strip()
        if len(candidate) > MAX_EXPRESSION_CHARS or not any(c.isdigit() for c in candidate):
            continue
        try:
            tree = ast.parse(candidate, mode="eval")
        except (SyntaxError, RecursionError, MemoryError):
            continue
        if not _has_binop(tree):
            continue
        try:
            value = _format_number(_eval_node(tree))
        except (_NotArithmetic, TypeError, ValueError, RecursionError, MemoryError):
            # ValueError: an int too long to print (sys.get_int_max_str_digits)
            continue
        answer = f"{' '.join(candidate.split())} = {value}"
        if best is None or len(answer) > len(best):
            best = answer
    return best


# --- plans ------------------------------------------------------------------------------


def answer_for(question: str) -> str:
    """The deterministic answer to a plain question (no tool results)."""
    solved = solve_arithmetic(question)
    if solved is not None:
        return solved
    return f'The askq emulator received: "{question}"'


def first_plan(script: Script, prompt_text: str, new_call_id: Callable[[], str]) -> Plan:
    """The plan for a fresh run: request the tagged tools, else answer with the tagged outcome."""
    prompt_tokens = count_tokens(prompt_text)
    if script.tools:
        calls = [ToolCall(new_call_id(), name, args) for name, args in script.tools]
        completion = sum(count_tokens(c.name) + count_tokens(c.arguments) for c in calls)
        return Plan(tool_calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion)
    if script.answer_mb is not None:
        # a huge answer, as a model that never stops would give (words, so tokens count)
        answer = ("lorem " * int(script.answer_mb * 1024 * 1024 / 6 + 1))[:-1]
        return _terminal_plan(script, [answer], prompt_tokens)
    return _terminal_plan(script, [answer_for(script.question)], prompt_tokens)


def plan_after_tools(script: Script, results: Sequence[tuple[str, str]], prompt_text: str) -> Plan:
    """The plan once tool outputs are in: an answer that quotes every output."""
    text = "\n".join(f"{name} returned: {output}" for name, output in results)
    return _terminal_plan(script, [text], count_tokens(prompt_text))


def _terminal_plan(script: Script, answers: list[str], prompt_tokens: int) -> Plan:
    if script.multi:
        answers = [*answers, "This is a second message from the askq emulator."]
    plan = Plan(
        outcome=script.outcome,
        answers=answers,
        prompt_tokens=prompt_tokens,
        endless_pages=script.endless_pages,
    )
    plan.completion_tokens = sum(count_tokens(a) for a in answers)
    if script.outcome == "failed":
        plan.error_message = "The askq emulator failed this run as asked by the [fail] tag."
    return plan


def truncate_plan(plan: Plan, max_tokens: int | None) -> Plan:
    """Apply a max completion/output token limit the way the API does: the run is incomplete."""
    if max_tokens is None or plan.outcome != "completed" or plan.tool_calls:
        return plan
    if plan.completion_tokens <= max_tokens:
        return plan
    words = " ".join(plan.answers).split()[:max_tokens]
    return Plan(
        outcome="incomplete",
        answers=[" ".join(words)],
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=len(words),
    )
