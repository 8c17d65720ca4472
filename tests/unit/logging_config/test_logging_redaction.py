"""The redaction processors, called directly: keys, content and secret-looking values."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import string
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from logging_config.redaction import (
    REDACTED,
    ContentRedactor,
    content_placeholder,
    is_card_number,
    is_sensitive_key,
    luhn_valid,
    redact_secret_values,
    redact_sensitive_keys,
    redact_text,
)
from logging_config.setup import renderer, shared_processors

OPENAI_KEY = "sk-proj-Abc123DEF456ghi789JKL012mno345"
CARD = "4111 1111 1111 1111"


def keys(event: dict[str, Any]) -> dict[str, Any]:
    return redact_sensitive_keys(None, "info", event)


def values(event: dict[str, Any]) -> dict[str, Any]:
    return redact_secret_values(None, "info", event)


class TestIsSensitiveKey:
    @pytest.mark.parametrize(
        "key",
        [
            "authorization",
            "Authorization",
            "proxy-authorization",
            "x-api-key",
            "X-API-KEY",
            "api_key",
            "apiKey",
            "apikey",
            "openai_api_key",
            "token",
            "access_token",
            "refreshToken",
            "x-amz-security-token",
            "csrftoken",
            "token_count",  # sensitive key; a number under it stays (see TestRedactSensitiveKeys)
            "password",
            "db_passwd",
            "client_secret",
            "SECRET_KEY",
            "cookie",
            "set-cookie",
            "Cookies",
            "private_key",
            "aws_credentials",
        ],
    )
    def test_is_sensitive_key_when_credential_name_then_true(self, key: str) -> None:
        assert is_sensitive_key(key)

    @pytest.mark.parametrize(
        "key",
        [
            "event",
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "tokens",
            "max_tokens",
            "prompt_tokens_details",
            "cached_tokens",
            "tokenizer",
            "request_id",
            "upstream_request_id",
            "path",
            "status",
            "author",
            "keyboard",
            "cache_key",
        ],
    )
    def test_is_sensitive_key_when_ordinary_name_then_false(self, key: str) -> None:
        assert not is_sensitive_key(key)


class TestRedactSensitiveKeys:
    def test_redact_keys_when_top_level_credentials_then_values_replaced(self) -> None:
        event = {"event": "call", "Authorization": "Bearer x", "x-api-key": "abc", "path": "/"}
        assert keys(event) == {
            "event": "call",
            "Authorization": REDACTED,
            "x-api-key": REDACTED,
            "path": "/",
        }

    def test_redact_keys_when_nested_in_dicts_lists_tuples_then_replaced_at_every_depth(
        self,
    ) -> None:
        event = {
            "event": "upstream",
            "request": {"headers": {"Cookie": "a=b", "accept": "*/*"}},
            "attempts": [{"password": "hunter2", "n": 1}, ({"client_secret": "s"},)],
        }
        assert keys(event) == {
            "event": "upstream",
            "request": {"headers": {"Cookie": REDACTED, "accept": "*/*"}},
            "attempts": [{"password": REDACTED, "n": 1}, ({"client_secret": REDACTED},)],
        }

    def test_redact_keys_when_token_counts_then_numbers_kept(self) -> None:
        usage = {
            "input_tokens": 12,
            "output_tokens": 3,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 0},
        }
        event = {"event": "done", "usage": usage, "tokens": 15, "token_count": 4}
        assert keys(dict(event)) == event

    def test_redact_keys_when_token_key_holds_text_then_replaced(self) -> None:
        assert keys({"event": "e", "token_count": "abc", "access_token": "xyz"}) == {
            "event": "e",
            "token_count": REDACTED,
            "access_token": REDACTED,
        }

    def test_redact_keys_when_flag_or_none_under_sensitive_key_then_kept(self) -> None:
        event = {"event": "e", "has_api_key": True, "password": None}
        assert keys(dict(event)) == event

    def test_redact_keys_when_header_pairs_then_sensitive_values_replaced(self) -> None:
        event = {"event": "e", "headers": [("x-api-key", "abc"), ("accept", "*/*")]}
        assert keys(event) == {
            "event": "e",
            "headers": [("x-api-key", REDACTED), ("accept", "*/*")],
        }

    def test_redact_keys_when_header_namedtuple_then_plain_pair_not_a_crash(self) -> None:
        header = collections.namedtuple("Header", ["name", "value"])
        event = {"event": "e", "headers": [header("authorization", "Bearer x")]}
        assert keys(event) == {"event": "e", "headers": [("authorization", REDACTED)]}

    def test_redact_keys_when_nested_dict_redacted_then_callers_object_untouched(self) -> None:
        headers = {"authorization": "Bearer x"}
        result = keys({"event": "e", "headers": headers})
        assert result["headers"] == {"authorization": REDACTED}
        assert headers == {"authorization": "Bearer x"}

    def test_redact_keys_when_nothing_sensitive_then_same_nested_objects(self) -> None:
        nested = {"a": [1, {"b": "c"}]}
        assert keys({"event": "e", "nested": nested})["nested"] is nested

    def test_redact_keys_when_struct_or_dataclass_then_its_fields_redacted(self) -> None:
        class Creds(msgspec.Struct):
            user: str
            api_key: str

        @dataclasses.dataclass
        class Conf:
            password: str
            retries: int

        result = keys({"event": "e", "creds": Creds("u", "k"), "conf": Conf("p", 2)})
        assert result == {
            "event": "e",
            "creds": {"user": "u", "api_key": REDACTED},
            "conf": {"password": REDACTED, "retries": 2},
        }


class TestContentRedactor:
    def test_content_when_logging_off_then_text_replaced_by_length(self) -> None:
        event = {"event": "chat", "message_text": "hello", "answer_text": "", "input_chars": 5}
        assert ContentRedactor(log_content=False)(None, "info", event) == {
            "event": "chat",
            "message_text": "[5 chars]",
            "answer_text": "[0 chars]",
            "input_chars": 5,
        }

    def test_content_when_logging_on_then_text_kept(self) -> None:
        event = {"event": "chat", "message_text": "hello", "prompt": "p"}
        assert ContentRedactor(log_content=True)(None, "info", dict(event)) == event

    def test_content_when_nested_messages_then_only_content_replaced(self) -> None:
        event = {"event": "e", "input": [{"role": "user", "content": "secret plan", "n": 1}]}
        assert ContentRedactor(False)(None, "info", event) == {
            "event": "e",
            "input": [{"role": "user", "content": "[11 chars]", "n": 1}],
        }

    def test_content_when_container_under_content_key_then_all_its_text_replaced(self) -> None:
        event = {"event": "e", "content": ["ab", {"type": "input_text", "x": "abc"}, 3]}
        assert ContentRedactor(False)(None, "info", event) == {
            "event": "e",
            "content": ["[2 chars]", {"type": "[10 chars]", "x": "[3 chars]"}, 3],
        }

    def test_content_when_key_differs_in_case_then_still_replaced(self) -> None:
        assert ContentRedactor(False)(None, "info", {"event": "e", "Text": "abc"}) == {
            "event": "e",
            "Text": "[3 chars]",
        }

    def test_content_when_event_key_then_never_touched(self) -> None:
        redactor = ContentRedactor(False, keys=["event", "text"])
        assert redactor(None, "info", {"event": "chat started", "text": "hi"}) == {
            "event": "chat started",
            "text": "[2 chars]",
        }

    def test_content_when_applied_twice_then_placeholder_kept(self) -> None:
        redactor = ContentRedactor(False)
        once = redactor(None, "info", {"event": "e", "text": "hello"})
        assert redactor(None, "info", dict(once)) == once

    def test_content_placeholder_when_text_then_its_length(self) -> None:
        assert content_placeholder("héllo") == "[5 chars]"


class TestLuhn:
    @pytest.mark.parametrize(
        ("digits", "expected"),
        [
            ("4111111111111111", True),
            ("4111111111111112", False),
            ("378282246310005", True),
            ("5500000000000004", True),
            ("79927398713", True),
            ("79927398710", False),
            ("0", True),
        ],
    )
    def test_luhn_valid_when_digits_then_checksum_decides(
        self, digits: str, expected: bool
    ) -> None:
        assert luhn_valid(digits) is expected

    @pytest.mark.parametrize(
        ("digits", "expected"),
        [
            ("4111111111111111", True),  # Visa, 16
            ("4222222222222", True),  # Visa, 13
            ("378282246310005", True),  # Amex, 15
            ("6011111111111117", True),  # Discover
            ("2223003122003222", True),  # Mastercard 2-series
            ("4111111111111112", False),  # Luhn fails
            ("1715240125123", False),  # millisecond timestamp: no card network starts with 1
            ("0000000000000000", False),  # passes Luhn, but zero padding is no card
            ("411111111111", False),  # 12 digits: too short
            ("41111111111111111111", False),  # 20 digits: too long
        ],
    )
    def test_is_card_number_when_digits_then_length_network_and_luhn_decide(
        self, digits: str, expected: bool
    ) -> None:
        assert is_card_number(digits) is expected


REDACTION_TABLE = [
    # OpenAI-style keys
    (f"key {OPENAI_KEY} rejected", "key [REDACTED:openai_key] rejected"),
    ("sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "[REDACTED:openai_key]"),
    ("svc=sk-svcacct-AbCdEf0123456789_-xyzXYZ", "svc=[REDACTED:openai_key]"),
    ("Incorrect API key provided: sk-proj-****************************abcd.", None),
    ("sk-learn is a library", None),
    ("task-abcdefghijklmnopqrstuvwxyz", None),
    # Bearer tokens: the scheme stays, the token goes
    ("Authorization: Bearer abc.DEF-123_x", "Authorization: Bearer [REDACTED:bearer]"),
    ("authorization: bearer   t0ken", "authorization: bearer   [REDACTED:bearer]"),
    ("expected 'Bearer <token>'", None),
    # JWTs
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "jwt [REDACTED:jwt]",
    ),
    # AWS access key ids
    ("AKIAIOSFODNN7EXAMPLE", "[REDACTED:aws_access_key]"),
    ("id=ASIAY34FZKBOKMUTVV7A;", "id=[REDACTED:aws_access_key];"),
    ("AKIAIOSFODNN7EXAMPLEX", None),  # 21 characters: not a key id
    # e-mail addresses
    ("mail john.doe+tag@example.co.uk.", "mail [REDACTED:email]."),
    ("<Ann@Example.COM>", "<[REDACTED:email]>"),
    ("user=ann@example.com, 'bob@example.org'", "user=[REDACTED:email], '[REDACTED:email]'"),
    ("@decorator and a@b", None),
    # credentials in URLs: user and password go, the host stays
    (
        "https://user:pa55@db.internal.example/x",
        "https://[REDACTED:url_credentials]@db.internal.example/x",
    ),
    ("redis://:hunter2@cache:6379/0", "redis://[REDACTED:url_credentials]@cache:6379/0"),
    ("postgres://app:s3cr@t@localhost/db", "postgres://[REDACTED:url_credentials]@localhost/db"),
    ("see https://example.com/a@b", None),
    # secret parameters: the name stays, the value goes
    ("GET /v1?api_key=abc123&limit=5", "GET /v1?api_key=[REDACTED]&limit=5"),
    ("connect password=hunter2 user=app", "connect password=[REDACTED] user=app"),
    ("X-Amz-Signature=fe5f80f77d5fa3", "X-Amz-Signature=[REDACTED]"),
    ("refresh_token=r1, id_token=i2", "refresh_token=[REDACTED], id_token=[REDACTED]"),
    ("max_tokens=100 tokens=5 keyboard=us", None),
    # payment cards: Luhn-valid on a card network, with spaces, dashes or nothing between
    (f"card {CARD} ok", "card [REDACTED:card] ok"),
    ("card 4111-1111-1111-1111", "card [REDACTED:card]"),
    ("4111111111111111", "[REDACTED:card]"),
    ("amex 3782 822463 10005", "amex [REDACTED:card]"),
    (f"{CARD} 12/27", "[REDACTED:card] 12/27"),  # followed by its expiry
    (f"item 12 {CARD}", "item 12 [REDACTED:card]"),
    ("4111 1111 1111 1112", None),  # Luhn fails
    ("order 1234567812345678", None),  # Luhn fails
    # things that must survive
    ("input_tokens: 12, output_tokens: 3", None),
    ("2026-05-09T07:35:25.123456Z", None),
    ("at 1715240125123 ms", None),  # Luhn-valid millisecond timestamp
    ("rid 7f3a9c1e2b4d4e8f9a0b1c2d3e4f5a6b", None),
    ("550e8400-e29b-41d4-a716-446655440000", None),
    ("deadbeef4111111111111111cafe", None),  # digits inside a hex id
    ("pi 3.4111111111111111", None),  # digits of a decimal
    ("", None),
    ("plain words only", None),
]


class TestRedactText:
    @pytest.mark.parametrize(("text", "expected"), REDACTION_TABLE)
    def test_redact_text_when_table_row_then_expected(
        self, text: str, expected: str | None
    ) -> None:
        assert redact_text(text) == (text if expected is None else expected)

    def test_redact_text_when_several_secrets_then_all_replaced(self) -> None:
        text = f"k={OPENAI_KEY} mail=a@b.io card={CARD}"
        assert redact_text(text) == (
            "k=[REDACTED:openai_key] mail=[REDACTED:email] card=[REDACTED:card]"
        )

    def test_redact_text_when_no_secret_then_same_object(self) -> None:
        text = "upstream_error after 3 attempts"
        assert redact_text(text) is text


class TestRedactSecretValues:
    def test_redact_values_when_secret_in_event_then_event_redacted(self) -> None:
        assert values({"event": f"calling with {OPENAI_KEY}"}) == {
            "event": "calling with [REDACTED:openai_key]"
        }

    def test_redact_values_when_nested_strings_then_redacted_and_other_values_kept(
        self,
    ) -> None:
        event = {
            "event": "e",
            "meta": {"users": ["a@b.io", ("x", "Bearer abc")], "n": 3, "ok": True, "f": 1.5},
        }
        assert values(event) == {
            "event": "e",
            "meta": {
                "users": ["[REDACTED:email]", ("x", "Bearer [REDACTED:bearer]")],
                "n": 3,
                "ok": True,
                "f": 1.5,
            },
        }

    def test_redact_values_when_rendered_exception_then_message_redacted(self) -> None:
        exception = [{"exc_type": "AuthenticationError", "exc_value": f"bad key {OPENAI_KEY}"}]
        assert values({"event": "failed", "exception": exception}) == {
            "event": "failed",
            "exception": [
                {"exc_type": "AuthenticationError", "exc_value": "bad key [REDACTED:openai_key]"}
            ],
        }

    def test_redact_values_when_object_then_its_repr_redacted(self) -> None:
        error = ValueError(f"upstream said {OPENAI_KEY}")
        assert values({"event": "e", "error": error}) == {
            "event": "e",
            "error": "ValueError('upstream said [REDACTED:openai_key]')",
        }

    def test_redact_values_when_bytes_then_only_their_size(self) -> None:
        assert values({"event": "e", "body": b"card 4111111111111111"}) == {
            "event": "e",
            "body": "<21 bytes>",
        }

    def test_redact_values_when_self_referencing_list_then_truncated_not_recursing(
        self,
    ) -> None:
        loop: list[Any] = ["a@b.io"]
        loop.append(loop)
        result = values({"event": "e", "loop": loop})
        assert result["loop"][0] == "[REDACTED:email]"
        flat = repr(result)
        assert "[TRUNCATED]" in flat
        assert "a@b.io" not in flat

    def test_redact_values_when_structlog_plumbing_then_left_alone(self) -> None:
        record = logging.LogRecord("x", logging.INFO, "f", 1, "a@b.io", None, None)
        exc_info = (ValueError, ValueError("a@b.io"), None)
        event = {"event": "e", "_record": record, "_from_structlog": False, "exc_info": exc_info}
        result = values(dict(event))
        assert result["_record"] is record
        assert result["exc_info"] is exc_info


# --- properties ------------------------------------------------------------------------------

_B62 = string.ascii_letters + string.digits
_URLSAFE = _B62 + "_-"
_SEPARATOR_LIKE = str.maketrans("'`{|}=/", "_______")


def _card_numbers() -> st.SearchStrategy[str]:
    def finish(first: str, body: str, layout: str) -> str:
        partial = first + body
        check = next(d for d in "0123456789" if luhn_valid(partial + d))
        digits = partial + check
        if layout == "plain":
            return digits
        separator = " " if layout == "spaces" else "-"
        return separator.join(digits[i : i + 4] for i in range(0, len(digits), 4))

    return st.builds(
        finish,
        st.sampled_from("23456"),
        st.text("0123456789", min_size=11, max_size=17),
        st.sampled_from(["plain", "spaces", "dashes"]),
    )


# Each strategy gives (what is embedded, the part that must never come out).
SECRETS = st.one_of(
    st.builds(
        lambda prefix, body: (prefix + body, prefix + body),
        st.sampled_from(["sk-", "sk-proj-", "sk-svcacct-", "sk-admin-"]),
        st.text(_URLSAFE, min_size=20, max_size=64),
    ),
    st.text(_B62 + "._~+/=-", min_size=8, max_size=64).map(lambda t: (f"Bearer {t}", t)),
    st.builds(
        lambda a, b, c: (f"eyJ{a}.eyJ{b}.{c}",) * 2,
        st.text(_URLSAFE, min_size=4, max_size=40),
        st.text(_URLSAFE, min_size=4, max_size=40),
        st.text(_URLSAFE, min_size=0, max_size=40),
    ),
    st.builds(
        lambda prefix, body: (prefix + body,) * 2,
        st.sampled_from(["AKIA", "ASIA"]),
        st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16),
    ),
    # Characters the redactor treats as separators (`user=a@b.io`) made ordinary.
    st.emails().map(lambda e: e.translate(_SEPARATOR_LIKE)).map(lambda e: (e, e)),
    _card_numbers().map(lambda c: (c, c)),
    st.text(_B62, min_size=8, max_size=32).map(lambda p: (f"redis://app:{p}@cache:6379/0", p)),
    st.builds(
        lambda name, value: (f"{name}={value}", value),
        st.sampled_from(["api_key", "password", "X-Amz-Signature", "access_token"]),
        st.text(_B62, min_size=8, max_size=32),
    ),
)


def _nest(value: object, path: list[tuple[str, str]]) -> object:
    for kind, key in reversed(path):
        if kind == "dict":
            value = {key: value, "other": "noise"}
        elif kind == "list":
            value = ["noise", value, 42]
        else:
            value = (value,)
    return value


PATHS = st.lists(
    st.tuples(st.sampled_from(["dict", "list", "tuple"]), st.text(max_size=8)), max_size=6
)


def _strings(value: object) -> list[str]:
    """Every string in a nested structure, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)
# Digit runs with separators, letters and dots around: the card rule's hard cases.
DIGIT_TEXT = st.text("0123456789 -.x", max_size=60)

_PROPERTY_SETTINGS = settings(
    database=None,  # no .hypothesis/ directory in the repository
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CONTENT_OFF = ContentRedactor(log_content=False)
PROCESSORS = [redact_sensitive_keys, CONTENT_OFF, redact_secret_values]


def _chain(event: dict[str, Any]) -> dict[str, Any]:
    for processor in PROCESSORS:
        event = processor(None, "info", event)
    return event


@_PROPERTY_SETTINGS
@given(secret=SECRETS, before=st.text(), after=st.text(), path=PATHS)
def test_redaction_when_secret_in_any_text_at_any_depth_then_never_survives(
    secret: tuple[str, str], before: str, after: str, path: list[tuple[str, str]]
) -> None:
    embedded, core = secret
    assume(core not in before and core not in after)
    assume(all(core not in key for _, key in path))
    for process in (values, _chain):
        event = {"event": "e", "payload": _nest(f"{before} {embedded} {after}", path)}
        result = process(event)
        assert not any(core in s for s in _strings(result)), process


@_PROPERTY_SETTINGS
@given(
    data=JSON_LIKE,
    secret=SECRETS,
    text=DIGIT_TEXT,
    key=st.sampled_from(["text", "token", "input_tokens", "note", "content"]),
)
def test_processors_when_applied_twice_then_same_as_once(
    data: object, secret: tuple[str, str], text: str, key: str
) -> None:
    event = {"event": f"x {secret[0]} {text}", key: data, "s": f"{text} {secret[0]}"}
    for processor in [*PROCESSORS, ContentRedactor(log_content=True)]:
        once = processor(None, "info", dict(event))
        twice = processor(None, "info", dict(once))
        assert twice == once, processor


@_PROPERTY_SETTINGS
@given(data=JSON_LIKE, text=DIGIT_TEXT)
def test_chain_when_arbitrary_json_like_data_then_never_raises_and_renders_json(
    data: object, text: str
) -> None:
    logger = logging.getLogger("tests.redaction")
    event: Any = {"event": text, "data": data, "text": data, "token": data}
    for processor in [*shared_processors("json", log_content=False), renderer("json")]:
        event = processor(logger, "info", event)
    assert json.loads(event)["event"] == redact_text(text)
