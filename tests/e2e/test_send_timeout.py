"""A reader that stops reading but keeps its socket open is let go after CHAT_SEND_TIMEOUT_S.

A raw socket with a small receive buffer sends the request, reads the headers, then reads
nothing more while the server streams a long answer. Once the buffers are full the server's
sends block; after the send timeout the server drops the connection, the run follows the
detached-grace rule (cancelled once no reader is back), and its stream slot is given back.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.service import Service

SEND_TIMEOUT_S = 1.0
GRACE_S = 1.0
TOKENS = 500_000  # 1 ms apart: the run would go on for minutes
BOUND_S = 30.0


@pytest.fixture
def service() -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": str(TOKENS),
        "CHAT_FAKE_DELAY_MS": "1",
        "CHAT_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "CHAT_DETACHED_GRACE_S": str(GRACE_S),
    }
    # Small kernel buffers on both ends: they fill within a second or two of not reading.
    with Service(env, send_buffer=4096) as running:
        yield running


def open_stalled_reader(service: Service) -> tuple[socket.socket, bytes]:
    """POST /chat on a socket with a tiny receive buffer; return it after the headers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", service.port))
    body = b'{"message":"a long answer please"}'
    sock.sendall(
        b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    for _ in range(100):  # bounded: the headers are far below 100 reads
        if b"\r\n\r\n" in received:
            break
        chunk = sock.recv(1024)
        assert chunk, "the server closed before sending headers"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return sock, received


def read_to_eof(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Everything left on the socket until the server closes it; (data, closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(1.0)
    for _ in range(100_000):  # bounded in count (bytes are bounded by the buffers) and time
        if time.monotonic() > deadline:
            return data, False
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def open_streams(service: Service) -> int:
    return int(httpx.get(service.base_url + "/readyz", timeout=5).json()["open_streams"])


def test_reader_when_it_stops_reading_then_dropped_and_run_follows_detached_grace(
    service: Service,
) -> None:
    sock, head = open_stalled_reader(service)
    try:
        opened = time.monotonic()
        assert open_streams(service) == 1
        # Not one byte read from here on, until the server says it let the reader go.
        access = service.wait_for_log(timeout=BOUND_S, event="request", path="/chat")
        dropped_after = time.monotonic() - opened
        assert access["status"] == 200
        assert access["outcome"] == "send_timeout"
        # The run goes on for the detached grace period (a reader may come back), then stops.
        cancel = service.wait_for_log(timeout=GRACE_S + 5, event="stream_detached_cancel")
        assert cancel["stream_id"] == access["stream_id"]
        deadline = time.monotonic() + GRACE_S + 5
        for _ in range(200):  # bounded in count and time
            if open_streams(service) == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert open_streams(service) == 0, "the run's slot was never given back"
        # The server closed the connection: what was still buffered arrives, then EOF, and the
        # body is cut off (no terminal chunk), not ended as if the answer were complete.
        rest, closed = read_to_eof(sock, 10.0)
        assert closed, "the server kept the connection open"
        body = head + rest
        assert not body.endswith(b"0\r\n\r\n")
        assert b"event: done" not in body
    finally:
        sock.close()
    errors = [r for r in service.records() if r.get("level") in {"error", "critical"}]
    assert not errors, errors
    assert dropped_after < BOUND_S
