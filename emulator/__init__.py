"""askq's local API emulator: Assistants v2 and the Responses API, in memory, over HTTP.

Public names: `EmulatorConfig`, `create_app`, `run`, `serve_in_thread`, `serve_in_subprocess`,
`RunningEmulator`, `EmulatorControl`.
"""

from emulator.app import create_app
from emulator.client import EmulatorControl
from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator, run, serve_in_subprocess, serve_in_thread

__all__ = [
    "EmulatorConfig",
    "EmulatorControl",
    "RunningEmulator",
    "create_app",
    "run",
    "serve_in_subprocess",
    "serve_in_thread",
]
