"""The pure request checks behind POST /chat: Accept, Content-Type, bearer auth."""

from __future__ import annotations

import pytest

from chat.bodies import error_body
from chat.http.checks import is_authorized, is_json_content_type, wants_json


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/event-stream", False),
        ("application/json", True),
        ("Application/JSON; q=1", True),
        ("application/json, text/event-stream", False),
        ("text/html", False),
    ],
)
def test_wants_json(accept: str | None, expected: bool) -> None:
    assert wants_json(accept) is expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("APPLICATION/JSON", True),
        ("application/jsonx", False),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        (None, False),
        ("", False),
    ],
)
def test_is_json_content_type(content_type: str | None, expected: bool) -> None:
    assert is_json_content_type(content_type) is expected


@pytest.mark.parametrize(
    ("header", "keys", "expected"),
    [
        (None, (), True),
        ("anything", (), True),
        (None, ("k1",), False),
        ("Bearer k1", ("k1", "k2"), True),
        ("bearer k2", ("k1", "k2"), True),
        ("Bearer k3", ("k1", "k2"), False),
        ("Basic k1", ("k1",), False),
        ("Bearer ", ("k1",), False),
        ("Bearer k1x", ("k1",), False),
        ("k1", ("k1",), False),
    ],
)
def test_is_authorized(header: str | None, keys: tuple[str, ...], expected: bool) -> None:
    assert is_authorized(header, keys) is expected


def test_error_body_when_details_then_included() -> None:
    assert error_body("invalid_request", "r1", details=[{"path": "$.m", "message": "x"}]) == (
        b'{"error":{"code":"invalid_request","message":"The request body has the wrong shape.",'
        b'"request_id":"r1","details":[{"path":"$.m","message":"x"}]}}'
    )
    assert b"details" not in error_body("not_found", "r2")
