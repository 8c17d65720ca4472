"""Shared fixtures: anyio on asyncio for async tests; and no process or thread left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def child_processes(pid: int) -> list[str]:
    """The live (not zombie) children of ``pid``, as "pid command" strings."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(f"{stat.parent.name} {cmdline.strip()[:200]}")
    return children


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test left a process (a model worker, a server) or a worker thread."""
    if not Path("/proc/self/stat").exists() or hasattr(session.config, "workerinput"):
        return
    leaked = child_processes(os.getpid())
    threads = [t.name for t in threading.enumerate() if t.is_alive() and "llama" in t.name]
    if leaked or threads:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"leaked process: {p}" for p in leaked] + [f"leaked thread: {t}" for t in threads]
        if reporter is not None:
            reporter.write_line("\n".join(["", "LEAKS after the test session:", *lines]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
