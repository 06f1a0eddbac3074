"""`python -m emulator`: serve the askq API emulator (every config field is an option)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from emulator.config import EmulatorConfig
from emulator.server import run

# Short spellings for the options people type most.
ALIASES = {
    "run_time_s": ["--run-time"],
    "cancel_time_s": ["--cancel-time"],
    "requires_action_timeout_s": ["--requires-action-timeout"],
    "retry_after_s": ["--retry-after"],
    "upstream_url": ["--upstream"],
    "fault_paths": ["--fault-path"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Local Assistants v2 + Responses API emulator for askq.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument(
        "--config-json", help="a whole EmulatorConfig as JSON; other options override it"
    )
    for name, info in EmulatorConfig.model_fields.items():
        flags = [f"--{name.replace('_', '-')}", *ALIASES.get(name, [])]
        if name == "fault_paths":
            parser.add_argument(*flags, dest=name, action="append", help="route pattern")
        else:
            parser.add_argument(*flags, dest=name, help=f"default: {info.default!r}")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    fields: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    for name in EmulatorConfig.model_fields:
        value = getattr(args, name)
        if value is not None:
            fields[name] = None if value == "none" else value
    return EmulatorConfig.model_validate(fields)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValidationError, ValueError) as exc:
        parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        run(config, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
