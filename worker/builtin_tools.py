"""Example tools shipped with askq: `calculate` and `utc_now`.

Off by default: they register into the default REGISTRY when this module is imported, which
a worker does only if `worker.builtin_tools` is listed in ASKQ_TOOL_MODULES.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field

from worker.tools import tool

MAX_EXPRESSION_CHARS = 1_000
MAX_DEPTH = 100
"""Nesting depth of the expression tree; keeps the recursive evaluator far from Python's limit."""
MAX_INT_BITS = 10_000
"""About 3,000 decimal digits: below Python's 4,300-digit int-to-str limit, and quick."""

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError("result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("result too large")
    return value


def _power(base: Number, exponent: Number) -> Number:
    # Estimate before computing: 9 ** 10**9 would take minutes and gigabytes.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (base.bit_length() - 1) * exponent >= MAX_INT_BITS
    ):
        raise ValueError("result too large")
    try:
        result: Number | complex = base**exponent
    except OverflowError:
        raise ValueError("result too large") from None
    if isinstance(result, complex):  # (-8) ** 0.5
        raise ValueError("result is not a real number")
    return result


def _evaluate(node: ast.AST, depth: int = 0) -> Number:
    if depth > MAX_DEPTH:
        raise ValueError("expression nested too deeply")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"not a number: {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, depth + 1))
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitXor):
            raise ValueError("'^' is not supported; use ** for powers")
        if type(node.op) not in _BINARY:
            raise ValueError(f"operator {type(node.op).__name__} is not supported")
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        try:
            return _checked(_BINARY[type(node.op)](left, right))
        except OverflowError:  # int too large to convert to float, in a true division
            raise ValueError("result too large") from None
    raise ValueError(f"{type(node).__name__} is not allowed: only numbers and + - * / // % **")


@tool
def calculate(
    expression: Annotated[str, Field(description="For example: (2 + 3) * 4 ** 2 / 7")],
) -> str:
    """Evaluate an arithmetic expression exactly: numbers, + - * / // % **, parentheses.

    No names, functions or variables. Use it for any arithmetic instead of mental math.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError("not a valid arithmetic expression") from None
    return str(_evaluate(tree))


@tool
def utc_now() -> str:
    """The current date and time in UTC, ISO 8601 (e.g. 2025-01-31T14:05:09+00:00)."""
    return datetime.now(UTC).isoformat(timespec="seconds")
