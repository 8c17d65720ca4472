"""Who a conversation belongs to: a keyed hash of the API key that started it, never the key.

The hash key is a random secret made once per deployment and kept in the conversation store
itself, so every worker and replica computes the same owner, and the store alone (without the
secret's row) tells nothing about the keys. Without ``CHAT_API_KEYS`` every caller is the same
anonymous owner.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

ANONYMOUS: Final = "-"


def bearer_token(authorization: str | None) -> str | None:
    """The token of a ``Bearer`` Authorization header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def owner_of(secret: bytes, api_key: str | None) -> str:
    """The owner id for a caller: HMAC-SHA256 of its key (hex), or ANONYMOUS without a key."""
    if not api_key:
        return ANONYMOUS
    return hmac.new(secret, api_key.encode(), hashlib.sha256).hexdigest()
