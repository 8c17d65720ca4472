"""Owner ids: a keyed hash of the bearer token, never the token."""

from __future__ import annotations

import pytest

from chat.conversations.ownership import ANONYMOUS, bearer_token, owner_of


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer k1", "k1"),
        ("bearer  k1 ", "k1"),
        ("Basic k1", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_bearer_token_when_header_given_then_token_or_none(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_owner_of_when_keys_differ_then_owners_differ_and_hold_no_key() -> None:
    secret = b"s" * 32
    one, two = owner_of(secret, "key-one"), owner_of(secret, "key-two")
    assert one != two
    assert "key-one" not in one
    assert len(one) == 64
    assert owner_of(secret, "key-one") == one
    assert owner_of(b"t" * 32, "key-one") != one  # another deployment, another owner


def test_owner_of_when_no_key_then_anonymous() -> None:
    assert owner_of(b"s" * 32, None) == ANONYMOUS
