"""EmulatorControl: the control routes from Python, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

import httpx


class EmulatorControl:
    """Reads stats, resets state and changes config of a running emulator.

    `base_url` may be the server root or the API URL ending in /v1.
    """

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        base = base_url.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        self.base_url = base
        self._http = httpx.Client(base_url=base, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset (see emulator/README.md for every key)."""
        return self._json(self._http.get("/_emulator/stats"))

    def reset(self) -> None:
        """Forget every thread, run, response, conversation and counter; config is kept."""
        self._json(self._http.post("/_emulator/reset"))

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change config fields now (e.g. `fail_429=0.2`); returns the whole new config."""
        return self._json(self._http.patch("/_emulator/config", json=fields))

    def config(self) -> dict[str, Any]:
        return self._json(self._http.get("/_emulator/config"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _json(reply: httpx.Response) -> dict[str, Any]:
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data
