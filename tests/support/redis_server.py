"""A throwaway ``redis-server`` for tests: no persistence, 127.0.0.1 only, a free port.

``start_redis()`` is a context manager; test modules wrap it in their own session fixtures (only
``conftest.py`` files are loaded as plugins). Without ``redis-server`` on the machine the tests
skip, except under CI (``CI`` set), where a missing server is a failure, not a silent skip.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.executables import find_executable, require_executable

CANDIDATES = ("redis-server", "/usr/bin/redis-server")
START_TIMEOUT_S = 10.0


class RedisServer:
    """A running redis-server process and its ``redis://`` URL."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, args: list[str]) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._args = args

    def command(self, *args: str, timeout: float = 5.0) -> bytes:
        """Send one inline command and return the raw RESP reply (enough for PING and INFO)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall((" ".join(args) + "\r\n").encode())
            return _read_reply(sock)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server and wait for it; kill it if it does not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` (SIGKILL: gone at once, no goodbye to clients) and wait for the exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        _close_output(self.proc)

    def restart(self) -> None:
        """Start a fresh, empty server on the same port (after ``kill`` or ``stop``)."""
        if self.proc.poll() is None:
            raise RuntimeError("redis-server is still running")
        _close_output(self.proc)
        self.proc = _launch(self._args)
        _wait_for_ping(self, START_TIMEOUT_S)


def redis_server_path() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    return find_executable(CANDIDATES)


def require_redis_server() -> str:
    """The executable; otherwise fail under CI and skip elsewhere, with how to install it."""
    return require_executable(CANDIDATES, package="redis-server", name="redis-server")


@contextmanager
def start_redis(executable: str | None = None) -> Iterator[RedisServer]:
    """Start redis-server on a free 127.0.0.1 port, wait for PING, stop it on exit."""
    executable = executable or require_redis_server()
    port = _free_port()
    args = [executable, "--save", "", "--appendonly", "no", "--port", str(port)]
    args += ["--bind", "127.0.0.1", "--daemonize", "no", "--loglevel", "warning"]
    server = RedisServer(_launch(args), port, args)
    try:
        _wait_for_ping(server, START_TIMEOUT_S)
        yield server
    finally:
        server.stop()
        _close_output(server.proc)


def _launch(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        cwd=Path("/tmp"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _close_output(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()


def _free_port() -> int:
    # redis-server binds by itself, so the port can be taken in between: _wait_for_ping then
    # sees the process exit and the error says so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_ping(server: RedisServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            output = (
                server.proc.stdout.read().decode(errors="replace") if server.proc.stdout else ""
            )
            raise RuntimeError(f"redis-server exited with {server.proc.returncode}: {output}")
        try:
            if server.command("PING", timeout=1.0) == b"+PONG\r\n":
                return
        except OSError as exc:
            last_error = exc
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING within {timeout}s: {last_error!r}")


def _read_reply(sock: socket.socket) -> bytes:
    """One RESP reply: a status/error/integer line or one bulk string (what tests need)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    if data.startswith(b"$"):
        length = int(data[1 : data.index(b"\r\n")])
        total = data.index(b"\r\n") + 2 + max(length, 0) + (2 if length >= 0 else 0)
        while len(data) < total:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data
