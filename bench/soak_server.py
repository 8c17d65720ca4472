"""The service as the soak runs it: ``app:app`` under uvicorn, plus a count of its asyncio tasks.

Like ``python -m chat`` (uvloop and httptools when installed, our logging only, keep-alive 75 s),
on a listening socket inherited from the soak (``--fd``). A task of its own writes the number of
tasks alive on the loop to ``--tasks-file`` every second: tasks are not visible from outside the
process, and this counts them without a debug endpoint in the service itself.

    python -m bench.soak_server --fd 3 --tasks-file /tmp/tasks.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn


async def sample_tasks(path: Path, interval_s: float) -> None:
    """Write ``{"t": unix time, "tasks": n}`` to ``path`` (atomically) every ``interval_s``."""
    scratch = path.with_name(path.name + ".tmp")
    while True:
        record = {"t": time.time(), "tasks": len(asyncio.all_tasks())}
        scratch.write_text(json.dumps(record))
        os.replace(scratch, path)
        await asyncio.sleep(interval_s)


async def serve(fd: int, tasks_file: Path) -> None:
    """uvicorn on the inherited socket until SIGTERM, with the task sampler beside it."""
    config = uvicorn.Config(
        "app:app",
        fd=fd,
        log_config=None,
        access_log=False,
        http="auto",
        timeout_keep_alive=75,
        backlog=4096,
        server_header=False,
    )
    sampler = asyncio.create_task(sample_tasks(tasks_file, 1.0), name="soak-task-sampler")
    try:
        await uvicorn.Server(config).serve()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak_server")
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--tasks-file", type=Path, required=True)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.fd, args.tasks_file))


if __name__ == "__main__":
    main()
