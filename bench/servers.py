"""Benchmark processes: the fake upstream and the servers under test, each pinned to its core.

Every server gets a listening socket made here and handed to uvicorn (``--fd``), so there is no
race for a port, and runs under ``taskset -c CORE``. Output goes to a log file under the results
directory, never to a pipe that nobody reads (a full pipe would stall the server).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
SERVER_CORE: Final = 0
LOAD_CORE: Final = 1


def pinned(command: list[str], core: int | None) -> list[str]:
    """``command`` under ``taskset -c core`` when there is such a core and taskset exists."""
    if core is None or shutil.which("taskset") is None or core >= (os.cpu_count() or 1):
        return command
    return ["taskset", "-c", str(core), *command]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without CHAT_/OPENAI_ variables from the shell, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "OPENAI_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """A child process with a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        core: int | None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            pinned(command, core),
            cwd=ROOT,
            env=clean_env(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def tail(self, lines: int = 20) -> str:
        """The last lines of the log, for error messages."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class Server(Process):
    """uvicorn serving ``app`` on a socket made here; ready once ``ready_path`` answers 200."""

    def __init__(
        self,
        name: str,
        app: str,
        *,
        env: Mapping[str, str],
        log_dir: Path,
        core: int | None = SERVER_CORE,
        ready_path: str = "/healthz",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4096)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        fd = self._sock.fileno()
        command = [
            sys.executable, "-m", "uvicorn", app, "--fd", str(fd),
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "75",
            "--backlog", "4096", *extra_args,
        ]  # fmt: skip
        super().__init__(name, command, env=env, log_dir=log_dir, core=core, pass_fds=(fd,))

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Poll ``ready_path`` until it answers 200 (the model may load after start-up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._sock.close()

    def __enter__(self) -> Server:
        self.wait_ready()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Upstream(Process):
    """``tests.support.fake_upstream`` on its own port, by default 64 tokens with no delay."""

    def __init__(self, *, log_dir: Path, core: int | None = LOAD_CORE) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        command = [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(self.port)]
        super().__init__("upstream", command, env={}, log_dir=log_dir, core=core)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the models endpoint answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"upstream exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"upstream not ready:\n{self.tail()}")
