"""The response Structs encode exactly the bytes the hand-built dicts did before them."""

from __future__ import annotations

import msgspec
import pytest

from chat.bodies import ChatReply, Health, Ready, StreamCreated, error_body
from chat.events import Usage

_json = msgspec.json.Encoder()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("not_found", "r1"),
            {"error": {"code": "not_found", "message": "Not found.", "request_id": "r1"}},
        ),
        (
            ("overloaded", "r2", "Busy."),
            {"error": {"code": "overloaded", "message": "Busy.", "request_id": "r2"}},
        ),
        (
            ("invalid_request", "r3", None, [{"path": "$.message", "message": "bad"}]),
            {
                "error": {
                    "code": "invalid_request",
                    "message": "The request body has the wrong shape.",
                    "request_id": "r3",
                    "details": [{"path": "$.message", "message": "bad"}],
                }
            },
        ),
        (
            ("invalid_request", "r4", None, []),
            {
                "error": {
                    "code": "invalid_request",
                    "message": "The request body has the wrong shape.",
                    "request_id": "r4",
                }
            },
        ),
    ],
)
def test_error_body_when_encoded_from_structs_then_bytes_as_before(
    args: tuple[object, ...], expected: dict[str, object]
) -> None:
    assert error_body(*args) == _json.encode(expected)  # type: ignore[arg-type]


def test_reply_bodies_when_encoded_from_structs_then_bytes_as_before() -> None:
    usage = Usage(9, 2, 11)
    assert _json.encode(ChatReply("Hi", "stop", usage, "r")) == _json.encode(
        {"text": "Hi", "finish_reason": "stop", "usage": usage, "request_id": "r"}
    )
    assert _json.encode(StreamCreated("s", "/chat/streams/s", "r")) == (
        b'{"stream_id":"s","events_url":"/chat/streams/s","request_id":"r"}'
    )
    assert _json.encode(Health()) == b'{"status":"ok"}'
    assert _json.encode(Ready(backend="fake", open_streams=3)) == (
        b'{"status":"ready","backend":"fake","open_streams":3}'
    )
