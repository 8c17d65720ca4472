"""Run the real service for end-to-end tests: uvicorn in a subprocess on a free 127.0.0.1 port.

The listening socket is made here and handed to uvicorn (``--fd``), so there is no race for the
port. Every stdout line (our JSON logs) is collected, and tests wait on lines, not on sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]

# Variables a developer's shell may carry that would change what the tests see.
_SCRUBBED_PREFIXES = ("CHAT_", "OPENAI_", "REDIS_URL")


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without CHAT_/OPENAI_ variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Service:
    """A running service process with its base URL and captured log lines."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        wait_ready: bool = True,
        send_buffer: int | None = None,
        main_args: Sequence[str] | None = None,
    ) -> None:
        """uvicorn on a socket made here; or, with ``main_args``, ``python -m chat`` itself.

        ``python -m chat`` binds its port itself (``--workers N`` has the supervisor bind it), so
        there the port is picked free and released just before: a small race, as for redis.
        """
        # Conversations go to a file under CHAT_DATA_DIR: a fresh directory per service unless
        # the test names one (to restart on the same file), never the repository's ./data.
        self._data_dir: str | None = None
        if "CHAT_DATA_DIR" not in env:
            self._data_dir = tempfile.mkdtemp(prefix="chat-data-")
            env = {**env, "CHAT_DATA_DIR": self._data_dir}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if send_buffer is not None:
            # Accepted connections inherit it (Linux): a stalled reader fills it in moments.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._cond = threading.Condition()
        if main_args is None:
            self._sock.listen(1024)
            fd = self._sock.fileno()
            command = [sys.executable, "-m", "uvicorn", "app:app", "--fd", str(fd)]
            command.append("--no-access-log")
            pass_fds: tuple[int, ...] = (fd,)
        else:
            self._sock.close()
            command = [sys.executable, "-m", "chat", "--host", "127.0.0.1", "--port"]
            command += [str(self.port), *main_args]
            pass_fds = ()
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_ready()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """Block until a log line matches; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and seen == len(self.lines)):
                    break
                self._cond.wait(min(remaining, 0.5))
        raise AssertionError(
            f"no matching log line within {timeout}s; last lines:\n" + "\n".join(self.lines[-20:])
        )

    def wait_for_log(self, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Block until a JSON log line has all ``fields``; return it parsed."""

        def matches(line: str) -> bool:
            record = _parse(line)
            return record is not None and all(record.get(k) == v for k, v in fields.items())

        record = _parse(self.wait_for_line(matches, timeout))
        assert record is not None
        return record

    def records(self) -> list[dict[str, Any]]:
        """Every JSON log line so far, parsed."""
        with self._cond:
            lines = list(self.lines)
        return [r for r in map(_parse, lines) if r is not None]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the ``ready`` log line (the model loads after start-up), then check /readyz."""
        self.wait_for_log(timeout=timeout, event="ready")
        response = httpx.get(self.base_url + "/readyz", timeout=5)
        assert response.status_code == 200, response.text

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self._sock.close()
            self._reader.join(5)
            if self._data_dir is not None:
                shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def parse_log_line(line: str) -> dict[str, Any] | None:
    """One JSON log line as a dict; None for anything else."""
    return _parse(line)


def _parse(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
