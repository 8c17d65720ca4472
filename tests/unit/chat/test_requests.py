"""Decoding the POST /chat body: 400 for bad JSON, 422 with the JSON path for bad shapes."""

from __future__ import annotations

import pytest

from chat.errors import ChatError
from chat.requests import ChatRequest, decode_chat_request, split_validation_error


def decode(body: bytes, limit: int = 100) -> ChatRequest:
    return decode_chat_request(body, max_message_chars=limit)


def test_valid_body_when_decoded_then_fields_set() -> None:
    assert decode(b'{"message":"hi","conversation_id":"abc_1-2"}') == ChatRequest("hi", "abc_1-2")
    assert decode(b'{"message":"hi"}').conversation_id is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b'{"message":"\\x"}',  # bad escape
        b'{"message":"\\ud800"}',  # lone surrogate
        b"\xff\xfe",
        b'{"message":"a"} trailing',
        b'{"message":"\xff"}',  # not UTF-8 inside a string
        b'{"message":"\xc0\xaf"}',  # overlong "/"
        b'{"message":"\xed\xa0\x80"}',  # an encoded lone surrogate
        b'{"message":"ok","conversation_id":"\xe2\x82"}',  # a cut sequence
    ],
)
def test_malformed_json_when_decoded_then_invalid_json(body: bytes) -> None:
    with pytest.raises(ChatError) as info:
        decode(body)
    assert info.value.code == "invalid_json"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"message": 1}', "$.message"),
        (b"{}", "$.message"),
        (b'{"message":"a","extra":1}', "$.extra"),
        (b"[]", "$"),
        (b'"text"', "$"),
        (b'{"message":"a","conversation_id":"has space"}', "$.conversation_id"),
        (b'{"message":"a","conversation_id":""}', "$.conversation_id"),
        (b'{"message":"a","conversation_id":"' + b"x" * 129 + b'"}', "$.conversation_id"),
        (b'{"message":"   "}', "$.message"),
        (b'{"message":"' + b"y" * 101 + b'"}', "$.message"),
        (b'{"message":' + b"[" * 5000 + b"]" * 5000 + b"}", "$.message"),
    ],
)
def test_wrong_shape_when_decoded_then_422_with_path(body: bytes, path: str) -> None:
    with pytest.raises(ChatError) as info:
        decode(body)
    assert info.value.code == "invalid_request"
    assert info.value.status == 422
    assert info.value.details is not None
    assert info.value.details[0]["path"] == path


def test_deeply_nested_json_when_decoded_then_client_error_not_crash() -> None:
    body = b'{"message":"a","x":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    with pytest.raises(ChatError) as info:
        decode(body)
    assert info.value.status in {400, 422}


def test_message_at_exact_limit_when_decoded_then_accepted() -> None:
    assert decode(b'{"message":"' + b"z" * 100 + b'"}').message == "z" * 100


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Expected `str`, got `int` - at `$.message`", ("$.message", "Expected `str`, got `int`")),
        ("Object contains unknown field `x`", ("$.x", "unknown field")),
        ("Object missing required field `message`", ("$.message", "required field is missing")),
        ("Expected `object`, got `array`", ("$", "Expected `object`, got `array`")),
    ],
)
def test_split_validation_error(text: str, expected: tuple[str, str]) -> None:
    assert split_validation_error(text) == expected
