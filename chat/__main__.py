"""``python -m chat``: serve the app with uvicorn, tuned for long-lived streams.

Equivalent to ``uvicorn --factory app:app_from_environment`` plus: our logging only (no
second, unredacted access log), uvloop and httptools when installed, a keep-alive that outlasts
common proxy idle timeouts, and a graceful-shutdown limit just above the stream drain grace
period. ``--workers N`` runs N processes on one socket (uvicorn's supervisor passes SIGTERM on
to each); more than one needs ``REDIS_URL``, so that streams and conversations are shared
between them.
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
    """Command-line options; unset ones fall back to CHAT_HOST, CHAT_PORT and CHAT_WORKERS."""
    parser = argparse.ArgumentParser(prog="python -m chat", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None, help="listen address (CHAT_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="listen port (CHAT_PORT, 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes (CHAT_WORKERS, 1); more than one needs REDIS_URL",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Validate settings (one line on error), then run uvicorn."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # A flag stands for its variable, so both go through the same checks and error lines
    # (`--workers 2` without REDIS_URL is refused like CHAT_WORKERS=2).
    flags = {"CHAT_HOST": args.host, "CHAT_PORT": args.port, "CHAT_WORKERS": args.workers}
    environ = {**os.environ, **{k: str(v) for k, v in flags.items() if v is not None}}
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    # Before any worker imports prometheus-client: with several, /metrics sums them all.
    atexit.register(prepare_multiprocess_dir(settings.workers if settings.metrics else 1))
    uvicorn.run(
        # An import string of the factory, not an app: each worker process builds its own, and
        # a bad setting or an unreachable Redis stops it with one line (app_from_environment).
        "app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_config=None,
        access_log=False,
        loop="auto",
        http="auto",
        # Proxies keep idle upstream connections ~60 s (deploy/nginx.conf: keepalive_timeout
        # 60s); were uvicorn to close an idle connection first, a request the proxy sends on it
        # at that moment would fail with a 502. So uvicorn waits longer: 75 s.
        # Graceful limit: drain grace + 3 s, below Docker's default 10 s stop timeout.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 3,
        server_header=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
