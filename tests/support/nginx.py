"""Debian's ``nginx`` for tests, running the project's own ``deploy/nginx.conf``.

The shipped file is an http-context include (map, upstream, server), as it would sit in
/etc/nginx/conf.d. ``start_nginx`` renders it with three exact replacements (listen port,
upstream address, access log path: each must occur once, so a change to the file that the test
would silently miss fails here instead) and wraps it in a minimal main configuration whose pid,
logs and temp paths all live in the test's directory. nginx runs in the foreground
(``-g 'daemon off;'``) on 127.0.0.1. Without nginx the tests skip, except under CI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.executables import find_executable, require_executable
from tests.support.service import ROOT

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
CANDIDATES = ("nginx", "/usr/sbin/nginx")
START_TIMEOUT_S = 10.0

# What a user edits in deploy/nginx.conf (the directive lines, as indented there, not the
# comments that name them), and what the test puts there instead.
LISTEN = "\n    listen 8080;\n"
UPSTREAM = "\n    server 127.0.0.1:8000;\n"
ACCESS_LOG = " /var/log/nginx/streaming-chat.access.log "


class Nginx:
    """A running nginx, its base URL and its log files."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, prefix: Path) -> None:
        self.proc = proc
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.prefix = prefix
        self.access_log = prefix / "access.log"
        self.error_log = prefix / "error.log"

    def access_lines(self) -> list[str]:
        """The access log so far."""
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def nginx_path() -> str | None:
    """The nginx executable, or None when it is not installed."""
    return find_executable(CANDIDATES)


def require_nginx() -> str:
    """The executable; otherwise fail under CI and skip elsewhere, with how to install it."""
    return require_executable(CANDIDATES, package="nginx", name="nginx")


def render_site(conf: str, *, listen_port: int, upstream: str, access_log: Path) -> str:
    """deploy/nginx.conf with the test's port, upstream and log; nothing else changes."""
    replacements = {
        LISTEN: f"\n    listen 127.0.0.1:{listen_port};\n",
        UPSTREAM: f"\n    server {upstream};\n",
        ACCESS_LOG: f" {access_log} ",
    }
    for old, new in replacements.items():
        count = conf.count(old)
        assert count == 1, f"deploy/nginx.conf: expected {old!r} once, found it {count} times"
        conf = conf.replace(old, new)
    return conf


def main_conf(prefix: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf provides around conf.d, with every path under ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / 'temp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would run as `nobody`, who cannot enter pytest's 0700 temp directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 2;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{
    worker_connections 1024;
}}
http {{
{temp}
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    # Debian's main configuration turns gzip on: the streams must not be held back by it.
    gzip on;
    include {site};
}}
"""


@contextmanager
def start_nginx(prefix: Path, upstream: str, executable: str | None = None) -> Iterator[Nginx]:
    """nginx with deploy/nginx.conf in front of ``upstream`` (host:port), on a free port."""
    executable = executable or require_nginx()
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "temp").mkdir(exist_ok=True)
    port = _free_port()
    site = prefix / "streaming-chat.conf"
    site.write_text(
        render_site(
            NGINX_CONF.read_text(),
            listen_port=port,
            upstream=upstream,
            access_log=prefix / "access.log",
        )
    )
    main = prefix / "nginx.conf"
    main.write_text(main_conf(prefix, site))
    proc = subprocess.Popen(
        [executable, "-p", str(prefix), "-c", str(main), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Nginx(proc, port, prefix)
    try:
        _wait_for_port(server, START_TIMEOUT_S)
        yield server
    finally:
        server.stop()
        if proc.stdout is not None:
            proc.stdout.close()


def _free_port() -> int:
    # nginx binds by itself, so the port can be taken in between: _wait_for_port then sees the
    # process exit, and the error says why.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(server: Nginx, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            stdout = server.proc.stdout
            output = stdout.read().decode(errors="replace") if stdout is not None else ""
            errors = server.error_log.read_text() if server.error_log.exists() else ""
            raise RuntimeError(f"nginx exited with {server.proc.returncode}: {output}{errors}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{server.port} within {timeout}s")
