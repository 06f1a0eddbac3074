"""`python -m emulator`: serve the askq API emulator (every config field is an option)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from emulator.config import EmulatorConfig, config_from_options, option_flags
from emulator.server import run


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
        flags = option_flags(name)
        if name == "fault_paths":
            parser.add_argument(*flags, dest=name, action="append", help="route pattern")
        else:
            parser.add_argument(*flags, dest=name, help=f"default: {info.default!r}")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    base: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    return config_from_options(vars(args), base)


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
