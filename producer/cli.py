"""The `askq` command line.

stdout carries what scripts read (ids, records); stderr carries progress, warnings and human
messages. Exit codes: 0 success; 1 a job or batch ended not completed; 2 bad usage or bad
input (one line on stderr); 124 `wait` timed out.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click
import redis
from pydantic import ValidationError
from redis.exceptions import RedisError

from emulator.config import EmulatorConfig, config_from_options, option_flags
from producer.cli_help import example, top_level_epilog
from producer.client import BatchStatus, Client, is_batch_id
from producer.inputs import LineError, ParsedInput, describe_error, parse_file, parse_text
from producer.progress import describe, watch_batch
from worker.errors import AskqError, InputError, PartialSubmit, RedisFull, StoreError
from worker.models import TOOL_CHOICE_PATTERN, Delivery, JobRequest, JobResult
from worker.settings import load_settings
from worker.states import JobStatus

EXIT_OK, EXIT_NOT_COMPLETED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 124
CSV_COLUMNS = (
    "job_id", "batch_id", "custom_id", "status", "answer", "thread_id", "run_id",
    "prompt_tokens", "completion_tokens", "total_tokens", "error_code", "error_message",
    "tool_calls", "created_at", "finished_at", "partial_answer",
)  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])
TOOL_CHOICE_HELP = "auto, none, required, or the name of the one tool the run must call."
TIMEOUT = click.FloatRange(min=0, min_open=True)
"""Seconds to wait: more than zero (leave the option out to wait without limit)."""


def say(message: str) -> None:
    click.echo(message, err=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    say(f"askq: error: {message}")
    sys.exit(code)


def _check_tool_choice(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None and not re.fullmatch(TOOL_CHOICE_PATTERN, value):
        fail(f"bad --tool-choice {value!r}: give auto, none, required or a tool's name")
    return value


def counted(number: int, noun: str) -> str:
    """`1 job`, `2 jobs`: every count askq prints goes through here."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def client() -> Client:
    settings = load_settings()
    return Client(settings)


def guarded(func: F) -> F:
    """Turn askq's own errors into one line and exit 2; never a traceback for bad input."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RedisFull as exc:
            fail(str(exc))
        except StoreError as exc:
            fail(f"cannot use Redis ({exc}); is it running? (ASKQ_REDIS_URL)")
        except AskqError as exc:
            fail(str(exc))

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


class AskqGroup(click.Group):
    """Usage errors in askq's own style: `askq: error: ...` on one line, exit 2 (click would
    print a usage block and `Error: ...`)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            fail(_usage_line(exc))
        except click.Abort:
            say("askq: interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _usage_line(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split()).rstrip(".")
    context = exc.ctx if isinstance(exc, click.UsageError) else None
    return f"{message} (see: {context.command_path} --help)" if context else message


@click.group(
    cls=AskqGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=top_level_epilog(),
)
@click.version_option(package_name="askq")
def main() -> None:
    """askq: run questions against assistant APIs at scale, on Celery workers.

    Submit with ask or batch, then follow with status, wait and results. Ids and records
    go to stdout, everything for people to stderr."""


def _outcome_code(status: JobResult | BatchStatus) -> int:
    if isinstance(status, BatchStatus):
        return EXIT_OK if status.completed == status.size else EXIT_NOT_COMPLETED
    return EXIT_OK if status.status is JobStatus.COMPLETED else EXIT_NOT_COMPLETED


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False))


def _tool_names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("name at least one tool (NAME,NAME...)")
    return names


TOOLS_HELP = "Offer the run only these of the workers' tools (comma-separated names)."
ON_DONE_HELP = (
    "Celery task (by name) sent the result record when the job ends, on ASKQ_CALLBACK_QUEUE."
)
WEBHOOK_HELP = "POST the result record here when the job ends (signed, ASKQ_CALLBACK_SECRET)."


@main.command(
    short_help="Ask one question: prints its job id, or the answer with --wait.",
    epilog=example(
        'askq ask "What is 17 * 23?" --wait',
        'echo "What time is it in UTC?" | askq ask - --tools utc_now --wait',
    ),
)
@click.argument("question")
@click.option(
    "--thread",
    "--session",
    "thread_id",
    help="Ask on this existing thread or session (keeps its context).",
)
@click.option("--assistant", "assistant_id", help="Assistant id (default ASKQ_ASSISTANT_ID).")
@click.option("--agent", "agent_id", help="Agent id (default ASKQ_AGENT_ID, agents style).")
@click.option("--model", help="Model (default ASKQ_MODEL for the responses style).")
@click.option("--instructions", help="Extra instructions for this run.")
@click.option("--tools", callback=_tool_names, help=TOOLS_HELP)
@click.option("--tool-choice", callback=_check_tool_choice, help=TOOL_CHOICE_HELP)
@click.option("--on-done", metavar="TASK", help=ON_DONE_HELP)
@click.option("--webhook", "webhook_url", metavar="URL", help=WEBHOOK_HELP)
@click.option("--wait", "wait_", is_flag=True, help="Wait and print the answer.")
@click.option("--timeout", type=TIMEOUT, default=None, help="Give up waiting after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON.")
@guarded
def ask(
    question: str,
    thread_id: str | None,
    assistant_id: str | None,
    agent_id: str | None,
    model: str | None,
    instructions: str | None,
    tools: list[str] | None,
    tool_choice: str | None,
    on_done: str | None,
    webhook_url: str | None,
    wait_: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Ask one QUESTION ('-' reads it from standard input); prints the job id, or with --wait
    the answer."""
    if question == "-":
        question = _read_stdin().removesuffix("\n").removesuffix("\r")
    try:
        request = JobRequest(
            question=question,
            thread_id=thread_id,
            assistant_id=assistant_id,
            agent_id=agent_id,
            model=model,
            instructions=instructions,
            tools=tools,
            tool_choice=tool_choice,
            on_done=on_done,
            webhook_url=webhook_url,
        )
    except ValidationError as exc:
        fail(f"bad question: {describe_error(exc)}")
    api = client()
    job_id = api.ask(request)
    if not wait_:
        if as_json:
            _print_json({"job_id": job_id})
        else:
            click.echo(job_id)
        return
    say(f"askq: {job_id} submitted; waiting")
    try:
        result = api.wait(job_id, timeout)
    except TimeoutError:
        fail(f"{job_id} is not finished after {timeout} s (it goes on)", EXIT_TIMEOUT)
    assert isinstance(result, JobResult)
    if as_json:
        _print_json(result.to_json_dict())
    elif result.status is JobStatus.COMPLETED:
        click.echo(result.answer)
    else:
        error = f": {result.error.message}" if result.error else ""
        say(f"askq: {job_id} ended {result.status.value}{error}")
    sys.exit(_outcome_code(result))


def _read_stdin() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"standard input is not UTF-8 text ({exc.reason})") from None


def _parse(source: str, fmt: str | None) -> ParsedInput:
    if source == "-":
        return parse_text(_read_stdin(), fmt or "jsonl")
    return parse_file(Path(source), fmt)


def _no_usable_line(source: str, fmt: str | None, parsed: ParsedInput) -> str:
    where = "standard input" if source == "-" else source
    not_json = all(error.message.startswith("not valid JSON") for error in parsed.errors)
    if source == "-" and fmt is None and parsed.errors and not_json:
        return f"no usable line in {where}: it is not JSON Lines (plain text? --format txt)"
    return f"no usable line in {where}"


def _refuse_too_long(api: Client, parsed: ParsedInput) -> None:
    """Move the items over ASKQ_MAX_QUESTION_CHARS to the file's bad lines."""
    kept = []
    for item in parsed.items:
        problem = api.too_long(item.request)
        if problem is None:
            kept.append(item)
        else:
            parsed.errors.append(LineError(item.line, problem))
    parsed.items = kept
    parsed.errors.sort(key=lambda error: error.line)


@main.command(
    short_help="Submit a file of questions as one batch: prints the batch id.",
    epilog=example(
        "askq batch questions.jsonl --name nightly --wait",
        "printf 'What is 2 + 2?\\nHello\\n' | askq batch - --format txt",
    ),
)
@click.argument("file", metavar="FILE")
@click.option("--name", help="Name the batch: the name then works wherever its id does.")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "txt"]),
    help="Input format (default: from the file extension; jsonl for '-').",
)  # fmt: skip
@click.option("--tools", callback=_tool_names, help=f"{TOOLS_HELP} For lines without 'tools'.")
@click.option(
    "--tool-choice",
    callback=_check_tool_choice,
    help=f"For lines that set none: {TOOL_CHOICE_HELP}",
)
@click.option("--on-done", metavar="TASK", help=f"{ON_DONE_HELP} For lines without 'on_done'.")
@click.option(
    "--on-batch-done",
    metavar="TASK",
    help="Celery task (by name) sent the batch summary once its last job ends.",
)
@click.option(
    "--webhook",
    "webhook_url",
    metavar="URL",
    help="POST each job's record (lines without 'webhook_url') and the batch summary here.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With --name of an earlier batch: run its failed or expired jobs of FILE again.",
)
@click.option("--wait", "wait_", is_flag=True, help="Show progress until every job is done.")
@click.option("--timeout", type=TIMEOUT, default=None, help="Give up waiting after S seconds.")
@click.option(
    "--into", "into", metavar="BATCH_ID",
    help="Add to this batch, skipping the items it already holds (finishes a partial submit).",
)  # fmt: skip
@guarded
def batch(
    file: str,
    name: str | None,
    fmt: str | None,
    tools: list[str] | None,
    tool_choice: str | None,
    on_done: str | None,
    on_batch_done: str | None,
    webhook_url: str | None,
    retry_failed: bool,
    wait_: bool,
    timeout: float | None,
    into: str | None,
) -> None:
    """Submit every question of FILE as one batch: .jsonl (or .json: JSON Lines or one
    array), .csv (a 'question' column), .txt (one question a line), or '-' for stdin.

    Bad lines are reported with their numbers on stderr; the good ones still run. Prints the
    batch id (exit 2 only when no line was accepted)."""
    if retry_failed and name is None:
        fail("--retry-failed needs --name: it retries the failed jobs of that named batch")
    parsed = _parse(file, fmt)
    if tools is not None:
        for item in parsed.items:
            if item.request.tools is None:
                item.request.tools = tools
    api = client()
    _refuse_too_long(api, parsed)
    for warning in parsed.warnings:
        say(f"askq: warning: {warning}")
    for error in parsed.errors:
        say(f"askq: {file}: line {error.line}: {error.message}")
    if not parsed.items:
        fail(_no_usable_line(file, fmt, parsed))
    requests = [item.request for item in parsed.items]
    if tool_choice is not None:
        requests = [
            r if r.tool_choice else r.model_copy(update={"tool_choice": tool_choice})
            for r in requests
        ]
    try:
        submitted = api.submit(
            requests,
            name=name,
            into=into,
            retry_failed=retry_failed,
            on_done=on_done,
            on_batch_done=on_batch_done,
            webhook_url=webhook_url,
        )
    except PartialSubmit as exc:
        click.echo(exc.batch_id)  # what was accepted will run: the id must not be lost
        count = f"{exc.accepted}" if exc.exact else f"at least {exc.accepted}"
        fail(
            f"submission stopped ({exc.__cause__ or exc}); {count} of {len(parsed.items)} "
            f"jobs are in batch {exc.batch_id} and will run. To add the rest without "
            f"repeating them: askq batch {file} --into {exc.batch_id}"
        )
    batch_id = submitted.batch_id
    rejected = f", {counted(len(parsed.errors), 'bad line')} skipped" if parsed.errors else ""
    where = repr(name) if name else batch_id
    again = f", {submitted.skipped:,} already in batch {where} skipped" if submitted.skipped else ""
    retried = f", {counted(submitted.retried, 'failed job')} retried" if submitted.retried else ""
    say(f"askq: submitted {counted(submitted.accepted, 'job')}{retried}{again}{rejected}")
    click.echo(batch_id)
    if wait_:
        try:
            status = watch_batch(api, batch_id, timeout)
        except TimeoutError:
            fail(f"{batch_id} is not finished after {timeout} s (it goes on)", EXIT_TIMEOUT)
        sys.exit(_outcome_code(status))


@main.command(
    short_help="Show a job's result or a batch's counts by status.",
    epilog=example("askq status nightly --json"),
)
@click.argument("identifier", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@guarded
def status(identifier: str, as_json: bool) -> None:
    """Show a job (its result record) or a batch (counts by status). ID is a job id, a batch
    id or a batch's --name."""
    api = client()
    current = api.status(identifier)
    deliveries = api.deliveries(identifier)
    if as_json:
        shown = current.to_json_dict()
        if deliveries:
            shown["callbacks"] = [d.model_dump(mode="json") for d in deliveries]
        _print_json(shown)
        return
    if isinstance(current, BatchStatus):
        click.echo(f"{identifier}: {describe(current)}")
        _show_deliveries(deliveries)
        return
    click.echo(f"{identifier}: {current.status.value}")
    if current.answer is not None:
        click.echo(current.answer)
    if current.partial_answer is not None:
        click.echo(f"partial answer (the run stopped early):\n{current.partial_answer}")
    if current.error is not None:
        click.echo(f"error: {current.error.code}: {current.error.message}")
    _show_deliveries(deliveries)


def _show_deliveries(deliveries: list[Delivery]) -> None:
    """One line a callback: where it went and how it stands."""
    for d in deliveries:
        what = "callback task" if d.kind == "task" else "webhook"
        if d.state == "sent":
            state = f"sent {_when(d.sent_at)}"
        elif d.state == "delivered":
            state = f"delivered {_when(d.delivered_at)} after {counted(d.attempts, 'attempt')}"
        elif d.state == "given_up":
            state = f"given up {_when(d.given_up_at)} after {counted(d.attempts, 'attempt')}"
        elif d.attempts:
            state = f"retrying: {counted(d.attempts, 'attempt')} so far"
        else:
            state = "pending"
        last = ""
        if d.state != "delivered" and (d.last_error or d.last_status):
            last = f" (last: {d.last_error or d.last_status})"
        click.echo(f"{what} {d.target}: {state}{last} [id {d.callback_id}]")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


@main.command(
    short_help="List recent batches: id, name, size, counts by status, created.",
    epilog=example("askq batches", "askq batches --json --limit 100"),
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a batch, a line each.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@guarded
def batches(as_json: bool, limit: int) -> None:
    """List the most recent batches, newest first (those still in Redis)."""
    found = client().batches(limit)
    if as_json:
        for current in found:
            _print_json(current.to_json_dict())
        return
    if not found:
        say("askq: no batches")
        return
    for current in found:
        created = current.batch.created_at.strftime("%Y-%m-%d %H:%M:%S")
        name = current.batch.name or "-"
        counts = ", ".join(f"{n} {status.value}" for status, n in sorted(current.counts.items()))
        click.echo(f"{current.batch.batch_id}  {name}  {counted(current.size, 'job')}  "
                   f"{counts or 'no jobs'}  created {created} UTC")  # fmt: skip


@main.command(
    short_help="Wait until a job or batch is finished: exit 0 if all completed.",
    epilog=example("askq wait nightly --timeout 600"),
)
@click.argument("identifier", metavar="ID")
@click.option("--timeout", type=TIMEOUT, default=None, help="Give up after S seconds (exit 124).")
@guarded
def wait(identifier: str, timeout: float | None) -> None:
    """Wait until a job or batch (id or --name) is finished; exit 0 if all completed, 1 if
    not, 124 on --timeout."""
    api = client()
    identifier = api.resolve(identifier)
    try:
        if is_batch_id(identifier):
            result: JobResult | BatchStatus = watch_batch(api, identifier, timeout)
        else:
            result = api.wait(identifier, timeout)
    except TimeoutError:
        fail(f"{identifier} is not finished after {timeout} s", EXIT_TIMEOUT)
    if isinstance(result, JobResult):
        say(f"askq: {identifier}: {result.status.value}")
    sys.exit(_outcome_code(result))


@main.command(
    short_help="Cancel a job, or every unfinished job of a batch.",
    epilog=example("askq cancel nightly"),
)
@click.argument("identifier", metavar="ID")
@guarded
def cancel(identifier: str) -> None:
    """Cancel a job, or every unfinished job of a batch (id or --name)."""
    outcome = client().cancel(identifier)
    if outcome.requested == 0:
        say(f"askq: {identifier}: already finished; nothing to cancel")
    else:
        done = (
            f" ({outcome.already_finished:,} already finished)" if outcome.already_finished else ""
        )
        say(f"askq: cancel requested for {counted(outcome.requested, 'job')}{done}")


def _csv_row(result: JobResult) -> list[Any]:
    usage = result.usage
    error = result.error
    tools = [t.model_dump(mode="json") for t in result.tool_calls]
    return [
        result.job_id, result.batch_id, result.custom_id, result.status.value, result.answer,
        result.thread_id, result.run_id,
        usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
        usage.total_tokens if usage else None,
        error.code if error else None, error.message if error else None,
        json.dumps(tools) if tools else None,
        result.created_at.isoformat(),
        result.finished_at.isoformat() if result.finished_at else None,
        result.partial_answer,
    ]  # fmt: skip


def write_results(
    results: Iterable[JobResult], fmt: str, out: TextIO, *, flush: bool = False
) -> int:
    """Write the records as JSONL or CSV; with `flush`, each as soon as it comes (--follow:
    a pipe's reader gets each record when its job ends)."""
    count = 0
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    for result in results:
        if writer is not None:
            writer.writerow(_csv_row(result))
        else:
            out.write(json.dumps(result.to_json_dict(), ensure_ascii=False) + "\n")
        count += 1
        if flush:
            out.flush()
    return count


@main.command(
    short_help="Print a batch's records, in input order or as they end (--follow).",
    epilog=example(
        "askq results nightly --format csv -o answers.csv",
        "askq results nightly --follow | jq -r .answer",
    ),
)
@click.argument("batch_id", metavar="BATCH")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
@click.option(
    "--follow",
    is_flag=True,
    help="Print each record as its job ends, in finishing order; exit when all have ended.",
)
@guarded
def results(batch_id: str, fmt: str, output: str | None, follow: bool) -> None:
    """Print a batch's result records (BATCH: its id or --name), in input order; with
    --follow, as the jobs end (those already ended first), until every job has ended."""
    records = client().iter_results(batch_id, follow=follow)
    if output:
        try:
            with open(output, "w", encoding="utf-8", newline="") as out:
                count = write_results(records, fmt, out, flush=follow)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        say(f"askq: wrote {counted(count, 'record')} to {output}")
    else:
        write_results(records, fmt, sys.stdout, flush=follow)


@main.command(
    short_help="Run everything on this machine and answer a sample batch.",
    epilog=example("askq demo", "askq demo --questions my-questions.txt"),
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False),
    help="Ask these instead of the sample batch.",
)
@click.option("--concurrency", type=int, default=8, help="Worker threads (default 8).")
@click.option(
    "--model",
    "real_model",
    is_flag=True,
    help="Answer with a real model (SmolLM2 on llama-server, once scripts/real-model built it).",
)
@guarded
def demo(questions: str | None, concurrency: int, real_model: bool) -> None:
    """Run everything on this machine (the emulator, a worker, a Redis if none answers at
    ASKQ_REDIS_URL) and answer a sample batch; stops all it started."""
    from producer.demo import run_demo

    sys.exit(run_demo(questions, concurrency, real_model))


@main.command(
    short_help="Serve Prometheus metrics read from Redis.",
    epilog=example("askq metrics --port 9808"),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9808, show_default=True)
@guarded
def metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics read from Redis (jobs by status, queues, stuck jobs, API calls)."""
    from producer.metrics import serve_metrics

    say(f"askq: metrics on http://{host}:{port}/metrics")
    try:
        serve_metrics(load_settings(), host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    except KeyboardInterrupt:
        pass


SECRET_EMULATOR_FIELDS = frozenset({"upstream_api_key", "webhook_secret"})
"""Taken from the environment only (ASKQ_EMULATOR_UPSTREAM_KEY, ASKQ_WEBHOOK_SECRET): a
command line is visible to every user of the machine."""


def _emulator_options(command: F) -> F:
    """One option per emulator setting (`askq emulator --help` lists them all)."""
    for name, info in reversed(EmulatorConfig.model_fields.items()):
        if name in SECRET_EMULATOR_FIELDS:
            continue
        shown = info.default if info.default_factory is None else info.default_factory()  # type: ignore[call-arg]
        command = click.option(
            *option_flags(name),
            name,
            multiple=name == "fault_paths",
            help=f"{name} (default {shown!r}; 'none' unsets)",
        )(command)
    return command


@main.command(
    short_help="Receive provider webhooks: a verified event polls its job now.",
    epilog=example("ASKQ_WEBHOOK_SECRET=whsec_... askq webhooks --port 9809"),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9809, show_default=True)
@guarded
def webhooks(host: str, port: int) -> None:
    """Receive the provider's webhooks (POST /webhooks, GET /healthz): a verified event makes
    its job's poll due now. Needs ASKQ_WEBHOOK_SECRET."""
    from producer.webhooks import serve_webhooks

    settings = load_settings()
    if not settings.webhooks_on:
        fail("ASKQ_WEBHOOK_SECRET is not set (the whsec_... secret of your webhook endpoint)")
    say(f"askq: webhook receiver on http://{host}:{port}/webhooks")
    try:
        serve_webhooks(settings, host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")
    except KeyboardInterrupt:
        pass


@main.command(
    short_help="Serve the local Assistants v2 + Responses API emulator.",
    epilog=example("askq emulator --port 8787 > emulator.log 2>&1 &"),
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8787, show_default=True)
@_emulator_options
def emulator(host: str, port: int, **options: Any) -> None:
    """Serve the local Assistants v2 + Responses API emulator; with --engine chat, a bridge
    to a self-hosted model's /chat/completions (--upstream URL).

    The chat bridge keeps its threads and runs in askq's Redis (ASKQ_REDIS_URL, under
    askq-bridge:) so a restart loses no job; --state-redis-url none keeps them in memory.
    Every setting can be changed while it runs (PATCH /_emulator/config)."""
    import os

    from emulator.app import redact_url
    from emulator.server import run

    base: dict[str, Any] = {"upstream_api_key": os.environ.get("ASKQ_EMULATOR_UPSTREAM_KEY")}
    if options.get("webhook_url"):
        base["webhook_secret"] = os.environ.get("ASKQ_WEBHOOK_SECRET")
        if not base["webhook_secret"]:
            fail("--webhook-url needs ASKQ_WEBHOOK_SECRET (the whsec_... secret to sign with)")
    if options.get("engine") == "chat" and options.get("state_redis_url") is None:
        base["state_redis_url"] = load_settings().redis_url
    try:
        config = config_from_options(options, base)
    except ValidationError as exc:
        fail(f"bad emulator option: {describe_error(exc)}")
    if config.state_redis_url:
        try:
            redis.Redis.from_url(config.state_redis_url, socket_timeout=5).ping()
        except (RedisError, OSError) as exc:
            fail(
                f"cannot reach Redis at {redact_url(config.state_redis_url)} for the bridge's "
                f"state ({exc}); start it, or pass --state-redis-url none"
            )
    say(f"askq: emulator on http://{host}:{port}/v1 (engine {config.engine})")
    with contextlib.suppress(KeyboardInterrupt):
        run(config, host=host, port=port)
