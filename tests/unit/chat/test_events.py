"""SSE framing of events, byte for byte."""

from __future__ import annotations

import pytest

from chat.events import (
    PING_FRAME,
    Delta,
    Done,
    Error,
    Usage,
    decode_json,
    encode_json,
    encode_retry,
    encode_sse,
)


def test_delta_when_encoded_then_frame_matches_contract() -> None:
    assert encode_sse(Delta("Hel"), 1) == (
        b'event: delta\nid: 1\ndata: {"type":"delta","text":"Hel"}\n\n'
    )


def test_done_when_encoded_then_fields_in_contract_order() -> None:
    done = Done(finish_reason="stop", usage=Usage(9, 2, 11), request_id="4f1c")
    assert encode_sse(done, 3) == (
        b"event: done\nid: 3\ndata: "
        b'{"type":"done","finish_reason":"stop",'
        b'"usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11},'
        b'"request_id":"4f1c"}\n\n'
    )


def test_error_when_encoded_then_frame_matches_contract() -> None:
    error = Error(
        code="upstream_timeout",
        message="The model did not answer in time.",
        retryable=True,
        request_id="r1",
    )
    assert encode_sse(error, 12) == (
        b"event: error\nid: 12\ndata: "
        b'{"type":"error","code":"upstream_timeout","message":"The model did not answer in time.",'
        b'"retryable":true,"request_id":"r1"}\n\n'
    )


def test_terminal_events_when_conversation_named_then_conversation_id_last() -> None:
    done = Done(
        finish_reason="stop", usage=Usage(9, 2, 11), request_id="4f1c", conversation_id="c1"
    )
    assert encode_json(done) == (
        b'{"type":"done","finish_reason":"stop",'
        b'"usage":{"input_tokens":9,"output_tokens":2,"total_tokens":11},'
        b'"request_id":"4f1c","conversation_id":"c1"}'
    )
    error = Error(
        code="cancelled", message="m", retryable=False, request_id="r1", conversation_id="c1"
    )
    assert encode_json(error) == (
        b'{"type":"error","code":"cancelled","message":"m","retryable":false,'
        b'"request_id":"r1","conversation_id":"c1"}'
    )
    assert decode_json(encode_json(done)) == done


@pytest.mark.parametrize(
    "text",
    ["line1\nline2", "cr\rlf\r\n", "\u2028sep\u2029", "emoji \U0001f600", 'quote " and \\', ""],
)
def test_delta_when_text_has_newlines_or_unicode_then_data_stays_one_line(text: str) -> None:
    frame = encode_sse(Delta(text), 7)
    head, data, end = frame.split(b"\n", 2)[0], frame.split(b"\n")[2], frame[-2:]
    assert head == b"event: delta"
    assert end == b"\n\n"
    assert frame.count(b"\n") == 4
    assert decode_json(data.removeprefix(b"data: ")) == Delta(text)


def test_event_when_round_tripped_then_equal() -> None:
    for event in (Delta("x"), Done("length", Usage(1, 2, 3), "id"), Error("c", "m", False, "i")):
        assert decode_json(encode_json(event)) == event


def test_ping_and_retry_frames() -> None:
    assert PING_FRAME == b": ping\n\n"
    assert encode_retry(3000) == b"retry: 3000\n\n"
