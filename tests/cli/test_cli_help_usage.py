"""Help a newcomer can read, and usage errors in askq's own one-line style (no Redis needed)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner, Result

from producer.cli import main
from producer.cli_help import ENVIRONMENT, EXIT_CODES

COMMANDS = sorted(main.commands)


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, prog_name="askq")


def test_top_level_help_lists_settings_exit_codes_and_every_command_uncut() -> None:
    shown = run("--help")
    assert shown.exit_code == 0
    for name in ("ASKQ_REDIS_URL", "ASKQ_API_BASE", "ASKQ_API_KEY", "ASKQ_API_STYLE"):
        assert name in shown.stdout
    assert {name for name, _ in ENVIRONMENT} <= set(shown.stdout.replace("\n", " ").split())
    for code, meaning in EXIT_CODES:
        assert f"{code}  " in shown.stdout and meaning in shown.stdout
    below_usage = shown.stdout.split("\n", 1)[1]  # "[ARGS]..." is click's usage syntax
    assert "..." not in below_usage and "…" not in below_usage
    for name in COMMANDS:
        command = main.commands[name]
        assert command.short_help, f"askq {name} needs a short_help (click cuts the default)"
        assert f"{name}  " in shown.stdout and command.short_help in shown.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_each_commands_help_ends_with_an_example(name: str) -> None:
    shown = run(name, "--help")
    assert shown.exit_code == 0
    lines = [line.strip() for line in shown.stdout.splitlines() if line.strip()]
    example_at = max(i for i, line in enumerate(lines) if line == "Example:")
    examples = lines[example_at + 1 :]
    assert examples and all(f"askq {name}" in line for line in examples), lines


@pytest.mark.parametrize(
    "args",
    [
        ("ask",),
        ("ask", "hi", "--timeout", "0"),
        ("ask", "hi", "--timeout", "-1"),
        ("batch", "f.txt", "--timeout", "0"),
        ("wait", "job_x", "--timeout", "-1"),
        ("wait", "job_x", "--timeout", "soon"),
        ("status",),
        ("results", "b", "--format", "xml"),
        ("ask", "hi", "--no-such-option"),
        ("no-such-command",),
    ],
)
def test_usage_errors_are_one_askq_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = run(*args)
    assert done.exit_code == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("askq: error: "), done.stderr
    assert "--help" in lines[0]


@pytest.mark.parametrize(("question", "stdin"), [("", None), ("   \t", None), ("-", "\n")])
def test_an_empty_question_is_one_line(question: str, stdin: str | None) -> None:
    done = run("ask", question, stdin=stdin)
    assert done.exit_code == 2
    assert done.stderr.splitlines() == ["askq: error: bad question: 'question' is empty"]


def test_every_command_keeps_its_short_help_within_the_listing() -> None:
    for name, command in main.commands.items():
        assert isinstance(command, click.Command)
        assert command.short_help and len(command.short_help) <= 66, name
