"""The llama.cpp worker as a child process: started, spoken to in frames, and stopped.

The engine (``engine.py``) decides what to send and when to start another worker; this module
knows how: the command line, the environment, the pipes, reading a report, and the exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Final

import msgspec
import structlog

from chat.models.local import protocol as proto

log = structlog.get_logger(__name__)

# The worker exits within a token of its stdin closing, and by itself after 2 s at the most.
EXIT_WAIT_S: Final = 5.0
_STDERR_LINE_CHARS: Final = 500
_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[3]  # the folder that holds chat/
# What the engine starts; its module must import nothing of the server's.
WORKER_MODULE: Final = "chat.models.local.worker"


class WorkerProcess:
    """One running worker: its reports on ``reports``, its stray output logged as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stderr is not None
        self._process = process
        self.reports: asyncio.StreamReader = process.stdout
        self._stderr_task = asyncio.create_task(_log_stderr(process.stderr, process.pid))

    @classmethod
    async def spawn(cls, config: proto.WorkerConfig) -> WorkerProcess:
        """Start a worker for ``config``; it loads the model and reports ``Loaded`` first."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            msgspec.json.encode(config).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_worker_environment(),
        )
        return cls(process)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        """Whether the child has not exited yet (as far as the loop has seen)."""
        return self._process.returncode is None

    def send(self, command: proto.Command) -> bool:
        """Write one frame to the worker; False when its stdin is closed."""
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing():
            return False
        stdin.write(proto.frame(command))
        return True

    async def wait(self) -> int:
        """Wait for the child to exit; its return code."""
        return await self._process.wait()

    async def stop(self) -> None:
        """Close its stdin (the worker exits by itself), or kill it after ``EXIT_WAIT_S``."""
        process = self._process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()  # the worker's reader sees the end and the worker exits
        try:
            await asyncio.wait_for(process.wait(), EXIT_WAIT_S)
        except TimeoutError:
            log.warning("local_worker_kill", worker_pid=process.pid, waited_s=EXIT_WAIT_S)
            process.kill()
            await process.wait()
        await asyncio.gather(self._stderr_task, return_exceptions=True)


async def read_report(stdout: asyncio.StreamReader) -> proto.Report | None:
    """The next frame from the worker; None when it has gone (end of pipe, or garbage)."""
    try:
        header = await stdout.readexactly(proto.HEADER.size)
        body = await stdout.readexactly(proto.body_length(header))
        return proto.report_decoder.decode(body)
    except (asyncio.IncompleteReadError, ValueError, msgspec.DecodeError):
        return None


def exit_reason(code: int) -> str:
    """A worker's return code in words: its exit status, or the signal that killed it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def _log_stderr(stderr: asyncio.StreamReader, pid: int) -> None:
    """The worker's stray output (a native crash report, say) as log lines."""
    while line := await stderr.readline():
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            log.warning("local_worker_output", worker_pid=pid, line=text[:_STDERR_LINE_CHARS])


def _worker_environment() -> dict[str, str]:
    """This environment, with our package importable whatever the working directory is."""
    env = dict(os.environ)
    root = str(_PACKAGE_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env
