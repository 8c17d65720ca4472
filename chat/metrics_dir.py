"""``PROMETHEUS_MULTIPROC_DIR`` for ``python -m chat --workers N``: fresh at every start.

prometheus-client picks its multiprocess mode when it is first imported, from this variable, so
it is set here, before uvicorn starts a worker; every worker then writes its values to files
there, and a scrape of any worker sums them. Files left by an earlier run would be summed too:
they are removed first. Imports nothing of prometheus-client, on purpose.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Final

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(
    workers: int, environ: MutableMapping[str, str] | None = None
) -> Callable[[], None]:
    """Empty the operator's directory, or make one for several workers; return the clean-up.

    One worker without the variable keeps the in-memory values (no files at all).
    """
    env = os.environ if environ is None else environ
    given = env.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return _nothing
    if workers <= 1:
        return _nothing
    made = tempfile.mkdtemp(prefix="chat-metrics-")
    env[MULTIPROC_ENV] = made
    return lambda: shutil.rmtree(made, ignore_errors=True)


def _nothing() -> None:
    return None
