"""``python -m chat``: serve the app with uvicorn, tuned for long-lived streams.

Equivalent to ``uvicorn app:app`` plus: our logging only (no second, unredacted access log),
uvloop and httptools when installed, a keep-alive that outlasts common proxy idle timeouts, and a
graceful-shutdown limit just above the stream drain grace period.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys

import uvicorn

from chat.metrics_dir import prepare_multiprocess_dir
from chat.settings import SettingsError, load_settings


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; defaults come from CHAT_HOST, CHAT_PORT and CHAT_WORKERS."""
    parser = argparse.ArgumentParser(prog="python -m chat", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("CHAT_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHAT_PORT", "8000")))
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("CHAT_WORKERS", "1")), help="processes"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Validate settings (one line on error), then run uvicorn."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    # Before any worker imports prometheus-client: with several, /metrics sums them all.
    atexit.register(prepare_multiprocess_dir(args.workers if settings.metrics else 1))
    uvicorn.run(
        "app:app",
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers > 1 else None,
        log_config=None,
        access_log=False,
        loop="auto",
        http="auto",
        # Proxies keep idle upstream connections ~60 s; closing first would give them 502s.
        # Graceful limit: drain grace + 3 s, below Docker's default 10 s stop timeout.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 3,
        server_header=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
