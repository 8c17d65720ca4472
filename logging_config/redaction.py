"""structlog processors that keep secrets, personal data and chat text out of log lines.

Three processors, meant to run in this order after exceptions were rendered into the event
dict (so exception messages and tracebacks are covered too):

1. `redact_sensitive_keys`: values under keys such as ``Authorization`` or ``api_key``.
2. `ContentRedactor`: chat text under content keys becomes its length.
3. `redact_secret_values`: secret-looking substrings in every string, ``event`` included:
   API keys, bearer tokens, JWTs, AWS key ids, URL credentials, secret query parameters,
   e-mail addresses and Luhn-valid card numbers.

Nested dicts, lists and tuples are rebuilt where something changed and shared where nothing
did, so objects the caller still holds are never mutated.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import msgspec
from structlog.typing import EventDict, WrappedLogger

from chat.seams import STRUCTLOG_PLUMBING_KEYS

__all__ = [
    "CONTENT_KEYS",
    "REDACTED",
    "ContentRedactor",
    "content_placeholder",
    "is_card_number",
    "is_sensitive_key",
    "luhn_valid",
    "redact_secret_values",
    "redact_sensitive_keys",
    "redact_text",
]

REDACTED: Final = "[REDACTED]"

CONTENT_KEYS: Final = frozenset(
    {
        "answer",
        "answer_text",
        "content",
        "delta_text",
        "input_text",
        "instructions",
        "message_text",
        "messages",
        "output_text",
        "prompt",
        "text",
    }
)

# structlog's plumbing (chat.seams): `ProcessorFormatter` needs `_record` intact, and an
# `exc_info` still present means a chain renders exceptions later (then that renderer owns it).
_UNTOUCHED_KEYS: Final = STRUCTLOG_PLUMBING_KEYS | {"exc_info"}
_EVENT_KEY: Final = "event"

# Deeper than any real event dict; also what stops a self-referencing container.
_MAX_DEPTH: Final = 32
_TRUNCATED: Final = "[TRUNCATED]"

# Values that cannot hold free text, so every rule leaves them as they are.
_SCALARS: Final = (
    str,
    int,
    float,
    type(None),
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    decimal.Decimal,
    enum.Enum,
)

# Exact types for a set lookup, ahead of the slower isinstance() on `_SCALARS`.
_LEAVES: Final = frozenset({str, int, float, bool, type(None)})

_DESCEND: Final = object()
"""A rule's answer meaning: no decision here, look inside the value."""

_Rule = Callable[[object, object], object]


# --- keys ------------------------------------------------------------------------------------

# Matched against the key lowercased with separators removed, so `X-Api-Key`, `openai_api_key`
# and `apiKey` all read `...apikey...`. `token` followed by `s` or `iz` is a count or a
# tokenizer (`input_tokens`, `prompt_tokens_details`, `tokenizer`), not a credential.
_SECRET_KEY = re.compile(
    r"authorization|apikey|passw(?:or)?d|passphrase|secret|cookie|privatekey|credential"
)
_TOKEN_KEY = re.compile(r"token(?!s|iz)")
_KEY_SEPARATORS = str.maketrans("", "", "-_. ")

_PLAIN, _SECRET, _TOKEN = 0, 1, 2


# The same few dozen keys come back on every line: classify each once. A plain dict is
# cheaper per lookup than lru_cache; it is emptied when odd data floods it with keys.
_KEY_KINDS: dict[str, int] = {}
_KEY_KINDS_MAX: Final = 4096


def _key_kind(key: str) -> int:
    kind = _KEY_KINDS.get(key)
    if kind is None:
        folded = key.lower().translate(_KEY_SEPARATORS)
        if _SECRET_KEY.search(folded):
            kind = _SECRET
        elif _TOKEN_KEY.search(folded):
            kind = _TOKEN
        else:
            kind = _PLAIN
        if len(_KEY_KINDS) >= _KEY_KINDS_MAX:
            _KEY_KINDS.clear()
        _KEY_KINDS[key] = kind
    return kind


def is_sensitive_key(key: str) -> bool:
    """Whether values under *key* are credentials (case-insensitive, substring-aware)."""
    return _key_kind(key) != _PLAIN


def _keeps_value(kind: int, value: object) -> bool:
    """Whether a value under a sensitive key says nothing secret (a flag, a count)."""
    if value is None or isinstance(value, bool):
        return True
    # `token_count: 12` is a number of tokens; a credential is text.
    return kind == _TOKEN and isinstance(value, (int, float))


def _key_rule(key: object, value: object) -> object:
    if type(key) is str:
        kind = _key_kind(key)
        if kind != _PLAIN and not _keeps_value(kind, value):
            return REDACTED
    # Header lists: [("x-api-key", "..."), ...] carry the key in the first item.
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        kind = _key_kind(value[0])
        if kind != _PLAIN and not _keeps_value(kind, value[1]):
            # A plain pair: a namedtuple's constructor would not take one argument.
            return [value[0], REDACTED] if isinstance(value, list) else (value[0], REDACTED)
    return _DESCEND


def redact_sensitive_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace values under credential keys (``Authorization``, ``api_key``...) at any depth."""
    return _apply(event_dict, _key_rule, skip_event=True)


# --- content ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\[\d+ chars\]")


def content_placeholder(text: str) -> str:
    """What logs show instead of chat text: its length."""
    return f"[{len(text)} chars]"


def _hide_text(_: object, value: object) -> object:
    if isinstance(value, str):
        # A placeholder stays as it is, so running the chain twice changes nothing.
        return value if _PLACEHOLDER.fullmatch(value) else content_placeholder(value)
    return _DESCEND


class ContentRedactor:
    """Show chat text under content keys only as its length, unless content logging is on."""

    def __init__(self, log_content: bool, keys: Iterable[str] = CONTENT_KEYS) -> None:
        self._log_content = log_content
        self._keys = frozenset(k.lower() for k in keys)
        self._is_content: dict[str, bool] = {}  # per key, so lower() runs once per key

    def _rule(self, key: object, value: object) -> object:
        if type(key) is not str:
            return _DESCEND
        is_content = self._is_content.get(key)
        if is_content is None:
            if len(self._is_content) >= _KEY_KINDS_MAX:
                self._is_content.clear()
            is_content = self._is_content[key] = key.lower() in self._keys
        if is_content:
            # Everything under a content key is content: `content=["..."]` as well as "...".
            return _hide_text(key, value) if isinstance(value, str) else _walk(value, _hide_text, 0)
        return _DESCEND

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if self._log_content:
            return event_dict
        return _apply(event_dict, self._rule, skip_event=True)


# --- values ----------------------------------------------------------------------------------

# One alternation, one pass. Quantifiers are bounded and runs are anchored by look-behinds so
# that a long line without a match costs linear time.
# RFC 5322 also allows ' ` { | } = / in the local part; leaving them out keeps `user=a@b.io`
# and quoted JSON readable, at the price of missing addresses nobody uses.
_EMAIL_LOCAL = r"[A-Za-z0-9!#$%&*+?^_~.-]"
_PARAM_NAME = r"passw(?:or)?d|secret|token|api[_-]?key|access[_-]?key|signature|credential"
_SECRET_PATTERN = re.compile(
    r"(?P<bearer>(?P<scheme>(?i:\bbearer)[ \t]+)[A-Za-z0-9._~+/=-]+)"
    r"|(?P<openai_key>(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{20,})"
    r"|(?P<jwt>(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"
    r"|(?P<aws_access_key>(?<![A-Za-z0-9])A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9]))"
    # `scheme://user:password@host`, also `redis://:password@host`: the host stays. The
    # password runs to the last `@` before the path, for passwords with a raw `@` in them.
    r"|(?P<url_credentials>(?<=://)[^\s/@:]{0,256}:[^\s/]{1,256}(?=@))"
    # `?api_key=...`, `password=...`, `X-Amz-Signature=...`: the name stays, the value goes.
    rf"|(?P<param>(?P<param_name>(?<![A-Za-z0-9_.-])(?i:[A-Za-z0-9_.-]{{0,64}}(?:{_PARAM_NAME}))=)"
    r"[^\s&;,\"'<>]+)"
    rf"|(?P<email>(?<!{_EMAIL_LOCAL}){_EMAIL_LOCAL}{{1,64}}@[A-Za-z0-9-]{{1,63}}(?:\.[A-Za-z0-9-]{{1,63}}){{1,126}})"
    # A run of 13+ digits with single spaces or dashes between; which part of it is a card
    # number is decided in `_redact_card_run`.
    r"|(?P<card>(?<![0-9A-Za-z.])[0-9](?:[ -]?[0-9]){12,})"
)
_BEARER_WORD = re.compile(r"(?i)bearer")
_DIGIT_RUN = re.compile(r"[0-9][0-9 -]{12}")  # loose on purpose: a pre-check may over-match


def _may_hold_secret(text: str) -> bool:
    """A cheap test that most strings fail, so they skip the big pattern.

    Substring checks run in C and beat one case-insensitive alternation by 2-3x.
    """
    return (
        "@" in text
        or "=" in text
        or "sk-" in text
        or "eyJ" in text
        or "AKIA" in text
        or "ASIA" in text
        or _BEARER_WORD.search(text) is not None
        or _DIGIT_RUN.search(text) is not None
    )


_CARD_SEPARATOR = re.compile(r"([ -])")
_CARD_NETWORK_DIGITS = frozenset("23456")  # Mastercard 2/5, Amex 3, Visa 4, Discover/UnionPay 6


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """Whether 13-19 digits look like a payment card: a card network's first digit and Luhn.

    The first-digit rule keeps Unix timestamps in milliseconds (starting with 1) and zero-padded
    ids, which pass Luhn one time in ten, out of the redaction.
    """
    return 13 <= len(digits) <= 19 and digits[0] in _CARD_NETWORK_DIGITS and luhn_valid(digits)


def _card_window_end(groups: list[str], start: int, stop: int) -> int | None:
    """End (exclusive) of the longest card number made of whole groups from *start*, if any."""
    if groups[start][0] not in _CARD_NETWORK_DIGITS:
        return None  # cheap exit that keeps long digit runs linear in practice
    digits = ""
    end = None
    for index in range(start, stop):
        digits += groups[index]
        if len(digits) > 19:
            break
        if is_card_number(digits):
            end = index + 1
    return end


def _redact_card_run(run: str, last_group_usable: bool) -> str:
    """Redact card numbers inside a digit run, on group boundaries.

    Cards are written in groups, so a card followed by an expiry (`4111 1111 1111 1111 12`)
    is found, while windows that cut through a group are not tried, which keeps false
    positives on long digit strings rare.
    """
    parts = _CARD_SEPARATOR.split(run)
    groups, separators = parts[0::2], parts[1::2]
    stop = len(groups) if last_group_usable else len(groups) - 1
    out: list[str] = []
    index = 0
    while index < len(groups):
        end = _card_window_end(groups, index, stop)
        if end is None:
            out.append(groups[index])
            end = index + 1
        else:
            out.append("[REDACTED:card]")
        if end < len(groups):
            out.append(separators[end - 1])
        index = end
    return "".join(out)


def _replace_secret(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "card":
        following = match.string[match.end() : match.end() + 2]
        # A run glued to letters is part of an identifier (hex ids); "1234.5" is a decimal.
        glued = following[:1].isalnum() or (following[:1] == "." and following[1:].isdigit())
        return _redact_card_run(match.group(), last_group_usable=not glued)
    if kind == "bearer":
        return match.group("scheme") + "[REDACTED:bearer]"  # the scheme helps debugging
    if kind == "param":
        return match.group("param_name") + REDACTED
    return f"[REDACTED:{kind}]"


def redact_text(text: str) -> str:
    """Replace keys, tokens, credentials, e-mail addresses and card numbers found in *text*."""
    if not _may_hold_secret(text):
        return text
    return _SECRET_PATTERN.sub(_replace_secret, text)


def _value_rule(_: object, value: object) -> object:
    return redact_text(value) if isinstance(value, str) else _DESCEND


def redact_secret_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Redact secret-looking substrings in every string of the event, ``event`` included."""
    return _apply(event_dict, _value_rule, skip_event=False)


# --- walking ---------------------------------------------------------------------------------


def _apply(event_dict: EventDict, rule: _Rule, *, skip_event: bool) -> EventDict:
    for key, value in event_dict.items():
        if key in _UNTOUCHED_KEYS or (skip_event and key == _EVENT_KEY):
            continue
        new = rule(key, value)
        if new is _DESCEND:
            if type(value) in _LEAVES:
                continue  # the common case, kept cheap: a number or text the rule passed
            new = _walk(value, rule, 0)
        if new is not value:
            event_dict[key] = new  # replacing a value while iterating is allowed
    return event_dict


def _walk_item(key: object, value: object, rule: _Rule, depth: int) -> object:
    decided = rule(key, value)
    return _walk(value, rule, depth) if decided is _DESCEND else decided


def _walk(value: object, rule: _Rule, depth: int) -> object:
    """Apply *rule* below *value*; return *value* itself when nothing changed."""
    if type(value) in _LEAVES or isinstance(value, _SCALARS):
        return value
    if depth >= _MAX_DEPTH:
        return _TRUNCATED
    if isinstance(value, dict):
        changed: dict[object, object] | None = None
        for key, item in value.items():
            new = _walk_item(key, item, rule, depth + 1)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return value if changed is None else changed
    if isinstance(value, (list, tuple)):
        items = [_walk_item(None, item, rule, depth + 1) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    # Anything else would reach the renderer as a repr() or a msgspec-encoded struct that no
    # rule has seen: turn it into plain data first, then apply the rule to that.
    return _walk_item(None, _to_plain(value), rule, depth + 1)


def _to_plain(value: object) -> object:
    """Plain data for an object a renderer would otherwise serialize unseen."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"  # bodies and raw headers: size only, never content
    if isinstance(value, memoryview):
        return f"<{value.nbytes} bytes>"
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    try:
        return msgspec.to_builtins(value, builtin_types=(bytes, bytearray), enc_hook=repr)
    except Exception:  # a broken __repr__ must not take the log line (or the request) down
        return f"<unloggable {type(value).__name__}>"
