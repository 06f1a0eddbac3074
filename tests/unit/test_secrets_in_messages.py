"""No part of a secret in any message: Redis passwords holding '/', '@' or ':' (which break
URL parsing in different places) never reach an error line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from worker.errors import ConfigError, StoreError
from worker.settings import load_settings

PASSWORDS = ["s3cr3t/abc", "p@ssw0rd:x", "a:b/cd@ef", "tr1cky@/:p4ss"]


def pieces(secret: str) -> list[str]:
    """Every run of 4 characters of the secret: none may show."""
    return [secret[i : i + 4] for i in range(len(secret) - 3)]


def assert_hidden(secret: str, text: str) -> None:
    for piece in pieces(secret):
        assert piece not in text, f"{piece!r} of the password shows in: {text}"


@pytest.mark.parametrize("password", PASSWORDS)
def test_settings_errors_never_quote_the_password(password: str) -> None:
    url = f"redis://:{password}@127.0.0.1:1/0"
    try:
        settings = load_settings(redis_url=url)
    except ConfigError as exc:
        assert_hidden(password, str(exc))
        return
    from producer.client import Client

    with pytest.raises(StoreError) as raised:
        Client(settings).status("job_x")
    assert_hidden(password, str(raised.value))


@pytest.mark.parametrize("password", PASSWORDS)
def test_cli_lines_never_show_the_password(password: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "ASKQ_REDIS_URL": f"redis://:{password}@127.0.0.1:1/0",
        "ASKQ_ASSISTANT_ID": "a",
    }
    for args in (["status", "job_x"], ["ask", "What is 1 + 1?"]):
        done = subprocess.run(
            [sys.executable, "-m", "producer", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert_hidden(password, done.stdout + done.stderr)
