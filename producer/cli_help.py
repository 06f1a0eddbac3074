"""What `askq --help` says beyond the command list, and the example that ends each command's help.

Tables, so that a new setting or exit code is one more line here and `askq --help` shows it.
"""

from __future__ import annotations

ENVIRONMENT: list[tuple[str, str]] = [
    ("ASKQ_REDIS_URL", "Redis: jobs, results, broker (redis://localhost:6379/0)"),
    ("ASKQ_API_BASE", "the assistant API (the local emulator: http://127.0.0.1:8787/v1)"),
    ("ASKQ_API_KEY", "its key; required when ASKQ_API_BASE is not on this machine"),
    ("ASKQ_API_STYLE", "assistants (threads, runs), responses (background) or agents (sessions)"),
    ("ASKQ_ASSISTANT_ID", "the default assistant (assistants style)"),
    ("ASKQ_MODEL", "the default model (responses style)"),
    ("ASKQ_AGENT_ID", "the default agent (agents style)"),
    ("ASKQ_TOOL_MODULES", "modules the worker imports to register tools (docs/tools.md)"),
]
"""The settings a newcomer needs first; every setting is in docs/settings.md."""

EXIT_CODES: list[tuple[int, str]] = [
    (0, "success"),
    (1, "a job or batch ended not completed (wait, --wait)"),
    (2, "bad usage or bad input (one line on stderr)"),
    (124, "wait gave up after --timeout (the work goes on)"),
]


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(key) for key, _ in rows)
    return [f"  {key.ljust(width)}  {text}" for key, text in rows]


def top_level_epilog() -> str:
    """Settings and exit codes, laid out as written (click's `\\b` keeps a paragraph unwrapped)."""
    lines = [
        "\b",
        "Settings come from ASKQ_* variables or a .env file (all: docs/settings.md):",
        *_table(ENVIRONMENT),
        "",
        "\b",
        "Exit codes:",
        *_table([(str(code), text) for code, text in EXIT_CODES]),
        "",
        "\b",
        "Start with: askq demo   (everything on this machine, no configuration)",
    ]
    return "\n".join(lines)


def example(*commands: str) -> str:
    """The epilog that ends a command's help: one or more example command lines."""
    return "\n".join(["\b", "Example:", *(f"  {command}" for command in commands)])
