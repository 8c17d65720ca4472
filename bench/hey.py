"""Run ``hey`` for full-stream throughput and parse its text report.

hey times whole responses, so with ``-t 0`` (no timeout) and a JSON body it measures complete
streams per second. Its latency percentiles are whole-stream times, not first-token times.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from bench.servers import LOAD_CORE, pinned

_RATE: Final = re.compile(r"Requests/sec:\s+([\d.]+)")
_PERCENTILE: Final = re.compile(r"(\d+)%\s+in\s+([\d.]+)\s+secs")
_STATUS: Final = re.compile(r"\[(\d+)\]\s+(\d+)\s+responses")
_ERROR: Final = re.compile(r"\[(\d+)\]\s+(.+)")


def available() -> bool:
    """Whether hey is installed."""
    return shutil.which("hey") is not None


def run_hey(
    url: str, body_path: Path, *, concurrency: int, duration_s: float, core: int | None = LOAD_CORE
) -> dict[str, Any]:
    """``hey -z D -c C -m POST -T application/json -D body -t 0 url``, parsed."""
    command = [
        "hey", "-z", f"{duration_s}s", "-c", str(concurrency), "-m", "POST",
        "-T", "application/json", "-D", str(body_path), "-t", "0", url,
    ]  # fmt: skip
    done = subprocess.run(
        pinned(command, core), capture_output=True, text=True, timeout=duration_s + 120, check=False
    )
    return parse_report(done.stdout)


def parse_report(text: str) -> dict[str, Any]:
    """Requests/sec, latency percentiles (ms), status codes and error count from hey's report."""
    rate = _RATE.search(text)
    statuses = {int(code): int(count) for code, count in _STATUS.findall(text)}
    errors = 0
    if "Error distribution:" in text:
        section = text.split("Error distribution:", 1)[1]
        errors = sum(int(count) for count, _ in _ERROR.findall(section))
    return {
        "requests_per_s": float(rate.group(1)) if rate else 0.0,
        "latency_ms": {f"p{p}": round(float(s) * 1000, 2) for p, s in _PERCENTILE.findall(text)},
        "statuses": statuses,
        "ok": statuses.get(200, 0),
        "errors": errors + sum(n for code, n in statuses.items() if code != 200),
    }
