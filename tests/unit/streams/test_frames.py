"""The frames the stream manager writes itself: ids found in batches, terminal error frames."""

from __future__ import annotations

import pytest

from chat.events import Delta, decode_json, encode_sse
from chat.streams.frames import error_frame, last_event_id


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        (b"", 7),
        (encode_sse(Delta("a"), 1), 1),
        (encode_sse(Delta("a"), 41) + encode_sse(Delta("id: 99\n"), 42), 42),
        (b"retry: 1000\n\n", 7),
    ],
)
def test_last_event_id_when_batch_given_then_id_of_its_last_frame(
    chunk: bytes, expected: int
) -> None:
    assert last_event_id(chunk, 7) == expected


def test_error_frame_when_store_unavailable_then_retryable_contract_event() -> None:
    frame = error_frame("store_unavailable", "req-1", 5)
    head, _, data = frame.partition(b"\ndata: ")
    assert head == b"event: error\nid: 5"
    assert frame.endswith(b"\n\n")
    event = decode_json(data.strip())
    assert (event.code, event.retryable, event.request_id) == ("store_unavailable", True, "req-1")
    assert event.message == "A data store is unavailable; retry shortly."
