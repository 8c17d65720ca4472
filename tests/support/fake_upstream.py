"""Fast, local fake of the OpenAI HTTP API for end-to-end tests and benchmarks.

It listens on loopback only and speaks HTTP/1.1 (keep-alive, chunked streams) on raw asyncio
protocols, so it costs far less CPU than the service under test. Token frames are rendered once
per (format, model, token) and cached; a stream without delay is written with a single write.

Endpoints:

* ``POST /v1/chat/completions`` (or ``/chat/completions``): chat.completion(.chunk) JSON / SSE.
* ``POST /v1/responses`` (or ``/responses``): Response JSON / Responses API SSE events.
* ``GET /v1/models`` (or ``/models``): a small model list. Anything else: 404, OpenAI error shape.

Every response carries ``x-request-id: req_fake_<n>``. The answer is deterministic: token ``i``
is ``token_text(i)`` (``"tok{i} "``), the full answer of ``n`` tokens is ``expected_text(n)`` and
the prompt token count is ``prompt_tokens(body)`` (whitespace-separated words in every input
text, instructions and system messages included, plus 1). ``max_tokens`` /
``max_completion_tokens`` (chat) and ``max_output_tokens`` (responses) cap the answer, ending it
with ``finish_reason="length"`` / ``response.incomplete``.

Directive grammar
-----------------
A scenario is chosen per request by directives in the text of the LAST user message; the
constructor / CLI ``--directives`` sets server-wide defaults in the same syntax::

    block := "[[" item (sep item)* "]]"        sep  := "," | ";" | whitespace
    item  := name | name "=" value

Blocks may appear anywhere in the message and later items win. Unknown names or bad values
are answered with HTTP 400. Directives never appear in the answer text.

=======================  ================================================================
``tokens=N``             answer with N tokens (server default 64)
``delay_ms=F``           wait F ms before each token (0: the whole stream in one write)
``status=CODE``          answer HTTP CODE with an OpenAI-style JSON error body (429 also
                         sends ``retry-after: 0``)
``retry_after_ms=N``     also send ``retry-after-ms: N`` with a ``status`` error
``retry_after=N``        send ``retry-after: N`` (seconds) with a ``status`` error (for 429
                         instead of ``0``)
``location=URL``         send ``location: URL`` with a ``status`` answer: with a 3xx status,
                         a redirect (its body is still the JSON error)
``echo_key``             answer 401 whose error message contains the Authorization header
``fail_after=N``         stream N tokens, then close the connection without the final chunk
``error_event_after=N``  stream N tokens, then an in-band error (chat: ``data: {"error":..}``,
                         responses: ``event: error``) and end the body cleanly
``failed_after=N``       like ``error_event_after``; responses send ``response.failed``
``bad_utf8_after=N``     stream N tokens, then a delta whose text holds bytes that are not
                         UTF-8 (an overlong ``/`` and ``\\xff``), then the usual end
``hang``                 read the request, then send nothing until the client disconnects
``drop``                 read the request, then close the connection without a response
``hang_after=N``         send headers and N tokens, then stall until the client disconnects
``times=N``              failure directives (all but tokens/delay_ms/say) apply only to the
                         first N requests with the same last-user-message text, so retries
                         succeed
``say=A|B|...``          answer with these tokens instead of ``tok{i} `` (one per ``|``
                         piece; ``tokens`` becomes their count). Server-wide, it keeps a
                         text out of the prompt (log-secrecy tests)
=======================  ================================================================

``N`` above the answer's token count is clamped to it; with several positional failures the
smallest ``N`` wins. Non-streaming requests: ``delay_ms`` is waited once per token before the
answer; ``fail_after`` sends headers and half the body, ``hang_after`` sends headers only,
``error_event_after`` / ``failed_after`` / ``bad_utf8_after`` answer 500.

Usage::

    with FakeUpstream(tokens=8) as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        record = fake.wait_for_request(lambda r: r.path == "/v1/responses")

    python -m tests.support.fake_upstream --port 9001 --tokens 64 --delay-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import http
import ipaddress
import itertools
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Final, Literal, cast

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TOKENS",
    "FakeUpstream",
    "RequestRecord",
    "Scenario",
    "expected_text",
    "last_user_text",
    "main",
    "parse_directives",
    "prompt_tokens",
    "token_text",
]

DEFAULT_TOKENS: Final = 64
DEFAULT_MODEL: Final = "fake-model"
MODELS: Final = (DEFAULT_MODEL, "gpt-4o-mini", "gpt-4.1")

_MAX_HEADER_BYTES: Final = 64 * 1024
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_MAX_MODEL_CHARS: Final = 200
# Fixed-width stand-in for the per-request id inside cached frames: same width as the real
# id, so cached chunk-size prefixes stay valid after bytes.replace().
_ID_WIDTH: Final = 12
_PH: Final = "@" * _ID_WIDTH
_PH_B: Final = _PH.encode()
_CREATED: Final = int(time.time())
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

Kind = Literal["chat", "responses"]
_ROUTES: Final[dict[str, str]] = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/responses": "responses",
    "/responses": "responses",
    "/v1/models": "models",
    "/models": "models",
}


# --------------------------------------------------------------------------- pure helpers


def token_text(i: int) -> str:
    """Text of answer token ``i``."""
    return f"tok{i} "


def expected_text(tokens: int = DEFAULT_TOKENS) -> str:
    """Full answer text for an answer of ``tokens`` tokens."""
    return "".join(token_text(i) for i in range(tokens))


def _content_texts(content: Any) -> Iterator[str]:
    """Texts of a message ``content``: a string or a list of typed parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]


def _input_texts(body: Mapping[str, Any]) -> Iterator[str]:
    """Every input text of a chat-completions or responses request body."""
    if isinstance(body.get("instructions"), str):
        yield body["instructions"]
    messages = body.get("messages")
    items = body.get("input")
    if isinstance(items, str):
        yield items
    for group in (messages, items):
        if not isinstance(group, list):
            continue
        for item in group:
            if not isinstance(item, Mapping):
                continue
            yield from _content_texts(item.get("content"))
            if isinstance(item.get("output"), str):  # function_call_output items
                yield item["output"]


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Deterministic prompt token count: whitespace-separated words of all input texts + 1."""
    return sum(len(text.split()) for text in _input_texts(body)) + 1


def last_user_text(body: Mapping[str, Any]) -> str:
    """Text of the last user message of a chat-completions or responses request body."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    for group in (body.get("messages"), items):
        if isinstance(group, list):
            for item in reversed(group):
                if isinstance(item, Mapping) and item.get("role") == "user":
                    return "".join(_content_texts(item.get("content")))
    return ""


_BLOCK_RE: Final = re.compile(r"\[\[([^\[\]]*)\]\]")
_SEP_RE: Final = re.compile(r"[\s,;]+")


def parse_directives(text: str) -> dict[str, str]:
    """Directives ``[[name]]`` / ``[[name=value, ...]]`` in ``text`` as a dict; flags map to ""."""
    found: dict[str, str] = {}
    for block in _BLOCK_RE.findall(text):
        for item in _SEP_RE.split(block.strip()):
            if item:
                name, _, value = item.partition("=")
                found[name.strip().lower()] = value.strip()
    return found


_INT_DIRECTIVES: Final = frozenset(
    {
        "tokens",
        "status",
        "retry_after_ms",
        "fail_after",
        "error_event_after",
        "failed_after",
        "bad_utf8_after",
        "hang_after",
        "times",
        "retry_after",
    }
)
_FLAG_DIRECTIVES: Final = frozenset({"echo_key", "hang", "drop"})


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the fake does with one request; built from defaults plus request directives."""

    tokens: int = DEFAULT_TOKENS
    delay_ms: float = 0.0
    status: int | None = None
    retry_after_ms: int | None = None
    echo_key: bool = False
    fail_after: int | None = None
    error_event_after: int | None = None
    failed_after: int | None = None
    bad_utf8_after: int | None = None
    hang: bool = False
    drop: bool = False
    hang_after: int | None = None
    times: int | None = None
    retry_after: int | None = None
    location: str | None = None
    say: tuple[str, ...] | None = None

    def with_directives(self, directives: Mapping[str, str]) -> Scenario:
        """Copy with ``directives`` applied; ValueError on unknown names or bad values."""
        if not directives:
            return self
        changes: dict[str, Any] = {}
        for name, value in directives.items():
            if name in _FLAG_DIRECTIVES:
                if value not in ("", "1", "true"):
                    raise ValueError(f"directive {name!r} takes no value")
                changes[name] = True
            elif name == "delay_ms":
                delay = float(value)
                if not 0 <= delay < 3_600_000:
                    raise ValueError(f"bad delay_ms {value!r}")
                changes[name] = delay
            elif name == "location":
                if not value:
                    raise ValueError("directive 'location' needs a URL")
                changes[name] = value
            elif name == "say":
                pieces = tuple(value.split("|"))
                if not value or not all(pieces):
                    raise ValueError("directive 'say' needs non-empty pieces separated by |")
                changes[name] = pieces
                changes["tokens"] = len(pieces)
            elif name in _INT_DIRECTIVES:
                number = int(value)
                if number < 0 or (name == "status" and not 100 <= number <= 599):
                    raise ValueError(f"bad value for {name}: {value!r}")
                changes[name] = number
            else:
                raise ValueError(f"unknown fake-upstream directive {name!r}")
        return replace(self, **changes)

    @property
    def has_failure(self) -> bool:
        """Whether any failure directive is set."""
        return (
            self.status is not None
            or self.echo_key
            or self.hang
            or self.drop
            or self.cutoff(self.tokens)[1] is not None
        )

    def without_failures(self) -> Scenario:
        """Copy keeping only tokens, delay_ms and say."""
        return Scenario(tokens=self.tokens, delay_ms=self.delay_ms, say=self.say)

    def cutoff(self, tokens: int) -> tuple[int, str | None]:
        """Tokens to send before the positional failure mode (or None: a normal answer)."""
        modes = (
            (self.fail_after, "fail"),
            (self.error_event_after, "error"),
            (self.failed_after, "failed"),
            (self.bad_utf8_after, "bad_utf8"),
            (self.hang_after, "hang"),
        )
        chosen = [(min(after, tokens), mode) for after, mode in modes if after is not None]
        if not chosen:
            return tokens, None
        # Stable min: on a tie the order above decides.
        return min(chosen, key=lambda pair: pair[0])


@dataclass(slots=True, eq=False)
class RequestRecord:
    """One request as seen by the fake. Times are ``time.monotonic()`` seconds."""

    n: int
    request_id: str
    conn_id: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    started_at: float
    directives: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    status: int | None = None
    finished_at: float | None = None
    disconnected: bool = False
    tokens_sent: int = 0

    @property
    def finished(self) -> bool:
        """Whether the response ended (completely, by a failure mode, or by a disconnect)."""
        return self.finished_at is not None


# --------------------------------------------------------------------------- rendering


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_LAST_CHUNK: Final = b"0\r\n\r\n"


def _sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame, wrapped in an HTTP chunk."""
    payload = _JSON(data)
    text = f"event: {event}\ndata: {payload}\n\n" if event else f"data: {payload}\n\n"
    return _chunk(text.encode())


def _event(data: dict[str, Any]) -> bytes:
    """One Responses API SSE event, named after its ``type``."""
    return _sse(data, data["type"])


def _chat_chunk(
    rid: str, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    """A chat.completion.chunk with one choice."""
    return {
        "id": f"chatcmpl-fake{rid}",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _text_frame(kind: Kind, model: str, i: int, text: str) -> bytes:
    """Chunk-encoded frame of delta ``i`` saying ``text``, request id left as a placeholder."""
    if kind == "chat":
        return _sse(_chat_chunk(_PH, model, {"content": text}))
    return _event(
        {
            "type": "response.output_text.delta",
            "sequence_number": 4 + i,
            "item_id": f"msg_fake{_PH}",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        }
    )


@functools.lru_cache(maxsize=65536)
def _token_frame(kind: Kind, model: str, i: int) -> bytes:
    """Chunk-encoded frame of token ``i``, with the request id left as a placeholder."""
    return _text_frame(kind, model, i, token_text(i))


# Bytes that are not UTF-8 in a delta's text: an overlong "/" (C0 AF) and a lone 0xFF.
_BAD_UTF8: Final = b"bad\xc0\xaf\xff text"
_BAD_MARK: Final = "@BADUTF8@"


def _bad_utf8_frame(kind: Kind, model: str, i: int) -> bytes:
    """Frame of delta ``i`` whose JSON text holds invalid UTF-8 (chunk size recomputed)."""
    framed = _text_frame(kind, model, i, _BAD_MARK)
    size_end = framed.index(b"\r\n")
    payload = framed[size_end + 2 : -2].replace(_BAD_MARK.encode(), _BAD_UTF8)
    return _chunk(payload)


@functools.lru_cache(maxsize=1024)
def _token_run(kind: Kind, model: str, n: int) -> bytes:
    """Frames of tokens ``0..n-1`` joined, for the single-write path."""
    return b"".join(_token_frame(kind, model, i) for i in range(n))


def _chat_usage(prompt: int, completion: int) -> dict[str, Any]:
    """Chat-completions usage object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    """Responses API usage object (openai 3.x requires ``cache_write_tokens`` too)."""
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _error_body(
    message: str, err_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI-shaped error body."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


_STATUS_ERRORS: Final[dict[int, tuple[str, str, str | None]]] = {
    400: ("Invalid request (fake upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: sk-te****test. (fake upstream)",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("Permission denied (fake upstream).", "invalid_request_error", "unsupported_country"),
    404: ("The model does not exist (fake upstream).", "invalid_request_error", "model_not_found"),
    408: ("Request timed out (fake upstream).", "server_error", "timeout"),
    429: ("Rate limit reached (fake upstream).", "requests", "rate_limit_exceeded"),
    500: ("The server had an error (fake upstream).", "server_error", None),
    502: ("Bad gateway (fake upstream).", "server_error", None),
    503: ("The engine is currently overloaded (fake upstream).", "server_error", None),
}


def _status_error(status: int) -> dict[str, Any]:
    """Error body for a ``[[status=CODE]]`` directive."""
    message, err_type, code = _STATUS_ERRORS.get(
        status, (f"Fake upstream error {status}.", "server_error", None)
    )
    return _error_body(message, err_type, code)


@dataclass(slots=True)
class _Reply:
    """A complete JSON answer."""

    status: int
    payload: Any
    extra: tuple[tuple[str, str], ...] = ()


def _invalid(status: int, message: str, code: str | None = None) -> _Reply:
    """An ``invalid_request_error`` reply."""
    return _Reply(status, _error_body(message, "invalid_request_error", code))


def _reason(status: int) -> str:
    """HTTP reason phrase."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass(slots=True)
class _Call:
    """A parsed chat-completions / responses call and how to answer it."""

    kind: Kind
    record: RequestRecord
    rid: str
    model: str
    scenario: Scenario
    stream: bool
    prompt: int
    tokens: int
    truncated: bool
    include_usage: bool
    close: bool
    created_at: int

    @classmethod
    def build(
        cls,
        kind: Kind,
        record: RequestRecord,
        body: Mapping[str, Any],
        scenario: Scenario,
        close: bool,
    ) -> _Call:
        """Call for a validated request body."""
        model = body.get("model")
        if not isinstance(model, str) or not model or len(model) > _MAX_MODEL_CHARS:
            model = DEFAULT_MODEL
        limit_keys = (
            ("max_tokens", "max_completion_tokens") if kind == "chat" else ("max_output_tokens",)
        )
        limits = [body[k] for k in limit_keys if isinstance(body.get(k), int) and body[k] >= 0]
        tokens = min([scenario.tokens, *limits])
        stream_options = body.get("stream_options")
        record.stream = body.get("stream") is True
        return cls(
            kind=kind,
            record=record,
            rid=f"{record.n:0{_ID_WIDTH}d}",
            model=model,
            scenario=scenario,
            stream=record.stream,
            prompt=prompt_tokens(body),
            tokens=tokens,
            truncated=tokens < scenario.tokens,
            include_usage=isinstance(stream_options, Mapping)
            and stream_options.get("include_usage") is True,
            close=close,
            created_at=int(time.time()),
        )

    # ----- chat completions

    def chat_head(self) -> bytes:
        """Frames before the first token."""
        return _sse(_chat_chunk(self.rid, self.model, {"role": "assistant"}))

    def chat_tail(self) -> bytes:
        """Frames after the last token, including the terminating chunk."""
        finish = "length" if self.truncated else "stop"
        out = [_sse(_chat_chunk(self.rid, self.model, {}, finish))]
        if self.include_usage:
            usage_chunk = _chat_chunk(self.rid, self.model, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = _chat_usage(self.prompt, self.tokens)
            out.append(_sse(usage_chunk))
        out.append(_chunk(b"data: [DONE]\n\n"))
        out.append(_LAST_CHUNK)
        return b"".join(out)

    def chat_error(self, after: int) -> bytes:
        """In-band error frame after ``after`` tokens, plus the terminating chunk."""
        body = _error_body(
            f"The server had an error while processing your request after {after} tokens "
            "(fake upstream).",
            "server_error",
            "server_error",
        )
        return _sse(body) + _LAST_CHUNK

    def chat_completion(self) -> dict[str, Any]:
        """Non-streaming chat.completion."""
        return {
            "id": f"chatcmpl-fake{self.rid}",
            "object": "chat.completion",
            "created": _CREATED,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self.answer(self.tokens),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "length" if self.truncated else "stop",
                }
            ],
            "usage": _chat_usage(self.prompt, self.tokens),
            "service_tier": "default",
        }

    # ----- responses

    def _message(self, text: str | None, status: str) -> dict[str, Any]:
        """The assistant output message item (``text=None``: no content part yet)."""
        content = [] if text is None else [self._text_part(text)]
        return {
            "id": f"msg_fake{self.rid}",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    @staticmethod
    def _text_part(text: str) -> dict[str, Any]:
        """An output_text content part."""
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def response(
        self,
        status: str,
        *,
        text: str | None = None,
        completion: int | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A Response object; ``text`` adds the output message, ``completion`` the usage."""
        body = self.record.body
        now = time.time()
        item_status = {"completed": "completed", "incomplete": "incomplete"}.get(
            status, "in_progress"
        )
        return {
            "id": f"resp_fake{self.rid}",
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(now) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": None,
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model,
            "output": [] if text is None else [self._message(text, item_status)],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None if completion is None else _responses_usage(self.prompt, completion),
            "user": None,
            "metadata": {},
        }

    def responses_head(self) -> bytes:
        """Events before the first delta (sequence numbers 0..3)."""
        created = self.response("in_progress")
        return b"".join(
            (
                _event({"type": "response.created", "sequence_number": 0, "response": created}),
                _event({"type": "response.in_progress", "sequence_number": 1, "response": created}),
                _event(
                    {
                        "type": "response.output_item.added",
                        "sequence_number": 2,
                        "output_index": 0,
                        "item": self._message(None, "in_progress"),
                    }
                ),
                _event(
                    {
                        "type": "response.content_part.added",
                        "sequence_number": 3,
                        "item_id": f"msg_fake{self.rid}",
                        "output_index": 0,
                        "content_index": 0,
                        "part": self._text_part(""),
                    }
                ),
            )
        )

    def responses_tail(self) -> bytes:
        """Events after the last delta, including the terminating chunk."""
        seq = 4 + self.tokens
        text = self.answer(self.tokens)
        status = "incomplete" if self.truncated else "completed"
        item_id = f"msg_fake{self.rid}"
        return b"".join(
            (
                _event(
                    {
                        "type": "response.output_text.done",
                        "sequence_number": seq,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    }
                ),
                _event(
                    {
                        "type": "response.content_part.done",
                        "sequence_number": seq + 1,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "part": self._text_part(text),
                    }
                ),
                _event(
                    {
                        "type": "response.output_item.done",
                        "sequence_number": seq + 2,
                        "output_index": 0,
                        "item": self._message(text, status),
                    }
                ),
                _event(
                    {
                        "type": f"response.{status}",
                        "sequence_number": seq + 3,
                        "response": self.response(status, text=text, completion=self.tokens),
                    }
                ),
                _LAST_CHUNK,
            )
        )

    def responses_error(self, after: int, failed: bool) -> bytes:
        """``error`` or ``response.failed`` event after ``after`` deltas, plus the last chunk."""
        message = f"The server had an error after {after} tokens (fake upstream)."
        if failed:
            error = {"code": "server_error", "message": message}
            payload = {
                "type": "response.failed",
                "sequence_number": 4 + after,
                "response": self.response(
                    "failed", text=self.answer(after), completion=after, error=error
                ),
            }
        else:
            payload = {
                "type": "error",
                "sequence_number": 4 + after,
                "code": "server_error",
                "message": message,
                "param": None,
            }
        return _event(payload) + _LAST_CHUNK

    # ----- shared

    def head(self) -> bytes:
        """Stream frames before the first token."""
        return self.chat_head() if self.kind == "chat" else self.responses_head()

    def tail(self) -> bytes:
        """Stream frames after the last token."""
        return self.chat_tail() if self.kind == "chat" else self.responses_tail()

    def error_frames(self, after: int, mode: str) -> bytes:
        """In-band error frames for ``error`` / ``failed`` modes."""
        if self.kind == "chat":
            return self.chat_error(after)
        return self.responses_error(after, failed=mode == "failed")

    def answer(self, n: int) -> str:
        """The text of the first ``n`` tokens."""
        if self.scenario.say is not None:
            return "".join(self.scenario.say[:n])
        return expected_text(n)

    def token_run(self, n: int) -> bytes:
        """Frames of the first ``n`` tokens with this request's id filled in."""
        if self.scenario.say is not None:
            return b"".join(self.token_frame(i) for i in range(n))
        return _token_run(self.kind, self.model, n).replace(_PH_B, self.rid.encode())

    def token_frame(self, i: int) -> bytes:
        """Frame of token ``i`` with this request's id filled in."""
        if self.scenario.say is not None:
            frame = _text_frame(self.kind, self.model, i, self.scenario.say[i])
        else:
            frame = _token_frame(self.kind, self.model, i)
        return frame.replace(_PH_B, self.rid.encode())

    def bad_utf8_frame(self, i: int) -> bytes:
        """A delta frame at position ``i`` whose text is not UTF-8."""
        return _bad_utf8_frame(self.kind, self.model, i).replace(_PH_B, self.rid.encode())

    def complete_body(self) -> dict[str, Any]:
        """Non-streaming answer body."""
        if self.kind == "chat":
            return self.chat_completion()
        status = "incomplete" if self.truncated else "completed"
        return self.response(status, text=self.answer(self.tokens), completion=self.tokens)


def _head(
    status: int,
    request_id: str,
    content_type: str,
    *,
    length: int | None,
    close: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """Status line and headers; ``length=None`` means a chunked body."""
    lines = [
        f"HTTP/1.1 {status} {_reason(status)}",
        f"content-type: {content_type}",
        f"x-request-id: {request_id}",
        "openai-processing-ms: 0",
    ]
    if length is None:
        lines.append("transfer-encoding: chunked")
        lines.append("cache-control: no-cache")
    else:
        lines.append(f"content-length: {length}")
    if close:
        lines.append("connection: close")
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_SSE_TYPE: Final = "text/event-stream; charset=utf-8"
_JSON_TYPE: Final = "application/json"


# --------------------------------------------------------------------------- HTTP protocol


@dataclass(slots=True)
class _Request:
    """A parsed HTTP request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _BadRequest(Exception):
    """Unparseable request: answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _resolve(waiter: asyncio.Future[None]) -> None:
    """Wake ``waiter`` unless already woken."""
    if not waiter.done():
        waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests in order and runs one response at a time."""

    def __init__(self, fake: FakeUpstream) -> None:
        self._fake = fake
        self._loop = asyncio.get_running_loop()
        self.conn_id = next(fake._conn_ids)
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False
        self.closed = False
        self._paused = False
        self._sleep_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.active: RequestRecord | None = None
        self.task: asyncio.Task[None] | None = None

    # ----- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Track the connection so stop() can abort it."""
        # uvloop's transports are not asyncio.Transport subclasses, so cast, don't check.
        self._transport = cast(asyncio.Transport, transport)
        self._fake._conns.add(self)

    def data_received(self, data: bytes) -> None:
        """Buffer bytes; parse and answer when idle (pipelined requests wait their turn)."""
        self._buf += data
        if not self._busy:
            self._process()

    def eof_received(self) -> bool:
        """A half-closing client has gone away for our purposes; close our side too."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Record a disconnect of an unfinished response and wake any waiting handler."""
        self.closed = True
        self._fake._conns.discard(self)
        if self.active is not None:
            self.finish(None, disconnected=True)
        for waiter in (self._sleep_waiter, self._drain_waiter):
            if waiter is not None:
                _resolve(waiter)

    def pause_writing(self) -> None:
        """Transport buffer is full."""
        self._paused = True

    def resume_writing(self) -> None:
        """Transport buffer drained."""
        self._paused = False
        if self._drain_waiter is not None:
            _resolve(self._drain_waiter)

    # ----- helpers for handlers

    def write(self, data: bytes) -> None:
        """Write unless the connection is gone."""
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    def send_json(
        self,
        status: int,
        payload: Any,
        *,
        close: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer the active request with a complete JSON response."""
        data = _JSON(payload).encode()
        request_id = self.active.request_id if self.active is not None else "req_fake_0"
        self.write(
            _head(status, request_id, _JSON_TYPE, length=len(data), close=close, extra=extra) + data
        )
        self.finish(status)

    def close(self) -> None:
        """Close after flushing what was written (a FIN, not an RST)."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection immediately."""
        if self._transport is not None:
            self._transport.abort()

    def finish(self, status: int | None, *, disconnected: bool = False) -> None:
        """Mark the active request's response as ended."""
        record = self.active
        if record is not None:
            self.active = None
            self._fake._finish(record, status, disconnected)

    async def sleep(self, delay: float | None) -> bool:
        """Wait ``delay`` seconds (None: forever); return False as soon as the client is gone."""
        if self.closed:
            return False
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._sleep_waiter = waiter
        handle = None if delay is None else self._loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            self._sleep_waiter = None
            if handle is not None:
                handle.cancel()
        return not self.closed

    async def drain(self) -> bool:
        """Wait until the transport buffer is below its high-water mark; False if gone."""
        while self._paused and not self.closed:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None
        return not self.closed

    # ----- request loop

    def _process(self) -> None:
        """Answer buffered requests until one needs a task or the buffer runs dry."""
        while not self._busy and not self.closed:
            try:
                request = self._parse()
            except _BadRequest as exc:
                body = _JSON(_error_body(str(exc), "invalid_request_error", None)).encode()
                request_id = f"req_fake_{next(self._fake._request_ids)}"
                head = _head(exc.status, request_id, _JSON_TYPE, length=len(body), close=True)
                self.write(head + body)
                self.close()
                return
            if request is None:
                return
            work = self._fake._dispatch(self, request)
            if work is not None:
                self._busy = True
                self.task = self._loop.create_task(self._run(work, request.keep_alive))
                return
            if not request.keep_alive:
                self.close()

    async def _run(self, work: Coroutine[Any, Any, None], keep_alive: bool) -> None:
        """Run one slow response, then carry on with pipelined requests."""
        try:
            await work
        except Exception:
            # A bug here must not leave the client waiting forever.
            self.finish(500)
            self.abort()
            raise
        finally:
            self._busy = False
            self.task = None
        if self.closed:
            return
        if not keep_alive:
            self.close()
        elif self._buf:
            self._process()

    def _parse(self) -> _Request | None:
        """Take one complete request off the buffer (None: need more bytes)."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEADER_BYTES:
                raise _BadRequest(431, "Request header fields too large.")
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            raise _BadRequest(400, "Malformed request line.") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _BadRequest(400, "Malformed header line.")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequest(411, "Chunked request bodies are not supported; send content-length.")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest(400, "Bad content-length.") from None
        if not 0 <= length <= _MAX_BODY_BYTES:
            raise _BadRequest(413, "Request body too large.")
        start = end + 4
        if len(buf) < start + length:
            return None
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        return _Request(method, target.split("?", 1)[0], headers, body, keep_alive)


# --------------------------------------------------------------------------- the server


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop factory when wanted and importable, else asyncio's."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def _check_loopback(host: str) -> None:
    """Refuse to listen beyond this machine."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"fake upstream only binds loopback addresses, not {host!r}")


class FakeUpstream:
    """Fake OpenAI upstream; runs in a background thread (``with``) or in a loop (``serve``)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: int = DEFAULT_TOKENS,
        delay_ms: float = 0.0,
        directives: str = "",
        max_records: int | None = 10_000,
        use_uvloop: bool = True,
    ) -> None:
        _check_loopback(host)
        self.host = host
        self._port = port
        text = directives if "[[" in directives else f"[[{directives}]]"
        self.defaults = Scenario(tokens=tokens, delay_ms=delay_ms).with_directives(
            parse_directives(text)
        )
        self._use_uvloop = use_uvloop
        self._cond = threading.Condition()
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=max_records)
        self._request_count = 0
        self._times_seen: collections.Counter[tuple[str, str]] = collections.Counter()
        self._request_ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._conns: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # ----- addresses

    @property
    def port(self) -> int:
        """Bound port (after start)."""
        return self._port

    @property
    def origin(self) -> str:
        """``http://host:port`` without the API prefix."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def base_url(self) -> str:
        """OpenAI client base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.origin}/v1"

    # ----- lifecycle

    def start(self) -> FakeUpstream:
        """Start serving in a daemon thread with its own event loop; returns when listening."""
        if self._thread is not None:
            raise RuntimeError("fake upstream already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with asyncio.Runner(loop_factory=_loop_factory(self._use_uvloop)) as runner:
                    runner.run(self.serve(ready.set))
            except BaseException as exc:  # surfaced to start()'s caller below
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("fake upstream did not start within 10 s")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, abort open connections and join the thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def request_stop(self) -> None:
        """Ask ``serve()`` to return; callable from any thread or a signal handler."""
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to stop
            loop.call_soon_threadsafe(event.set)

    async def serve(self, ready: Callable[[], object] | None = None) -> None:
        """Serve on the running loop until ``request_stop()``; ``ready()`` once listening."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server = await loop.create_server(
            lambda: _Connection(self), self.host, self._port, backlog=1024, reuse_address=True
        )
        self._port = server.sockets[0].getsockname()[1]
        self._loop = loop
        try:
            if ready is not None:
                ready()
            await self._stop_event.wait()
        finally:
            server.close()
            for conn in list(self._conns):
                conn.abort()
            tasks = [conn.task for conn in list(self._conns) if conn.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        # Still a separate thread: keeps the fake's CPU and blocking waits off the caller's loop.
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ----- observability (thread-safe)

    @property
    def request_count(self) -> int:
        """Requests received since start (or ``reset``), however many records are kept."""
        with self._cond:
            return self._request_count

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the request records, oldest first."""
        with self._cond:
            return list(self._records)

    def reset(self) -> None:
        """Forget all records and ``times=`` counters."""
        with self._cond:
            self._records.clear()
            self._times_seen.clear()
            self._request_count = 0

    def wait_for_request(
        self, predicate: Callable[[RequestRecord], bool] | None = None, timeout: float = 5.0
    ) -> RequestRecord:
        """Oldest record matching ``predicate`` (any if None), waiting for it; TimeoutError."""
        found: list[RequestRecord] = []

        def match() -> bool:
            for record in self._records:
                if predicate is None or predicate(record):
                    found.append(record)
                    return True
            return False

        with self._cond:
            if not self._cond.wait_for(match, timeout):
                raise TimeoutError(f"no matching request within {timeout} s")
        return found[0]

    def wait_for_finish(self, record: RequestRecord, timeout: float = 5.0) -> bool:
        """Wait until ``record``'s response ended in any way; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: record.finished, timeout)

    def wait_for_disconnect(self, record: RequestRecord, timeout: float = 2.0) -> bool:
        """Whether the client disconnected before ``record``'s response ended (waits for it)."""
        with self._cond:
            self._cond.wait_for(lambda: record.finished, timeout)
            return record.disconnected

    # The waits run in a worker thread, which asyncio.timeout() could not interrupt, hence the
    # explicit timeout parameters.
    async def await_request(
        self,
        predicate: Callable[[RequestRecord], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RequestRecord:
        """``wait_for_request`` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for_request, predicate, timeout)

    async def await_disconnect(
        self,
        record: RequestRecord,
        timeout: float = 2.0,  # noqa: ASYNC109
    ) -> bool:
        """``wait_for_disconnect`` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for_disconnect, record, timeout)

    def _add(self, record: RequestRecord) -> None:
        with self._cond:
            self._records.append(record)
            self._request_count += 1
            self._cond.notify_all()

    def _finish(self, record: RequestRecord, status: int | None, disconnected: bool) -> None:
        with self._cond:
            if record.finished_at is not None:
                return
            if status is not None:
                record.status = status
            record.disconnected = disconnected
            record.finished_at = time.monotonic()
            self._cond.notify_all()

    # ----- request handling (event-loop thread only)

    def _dispatch(self, conn: _Connection, request: _Request) -> Coroutine[Any, Any, None] | None:
        """Answer ``request``: synchronously (None) or via the returned coroutine."""
        n = next(self._request_ids)
        body: Any = None
        body_ok = True
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body_ok = False
        record = RequestRecord(
            n=n,
            request_id=f"req_fake_{n}",
            conn_id=conn.conn_id,
            method=request.method,
            path=request.path,
            headers=request.headers,
            body=body,
            started_at=time.monotonic(),
        )
        conn.active = record
        self._add(record)
        close = not request.keep_alive
        outcome = self._plan(record, body_ok, close)
        if isinstance(outcome, _Reply):
            conn.send_json(outcome.status, outcome.payload, close=close, extra=outcome.extra)
            return None
        call = outcome
        if call.scenario.hang:
            return conn.sleep(None)  # the record ends when the client disconnects
        if call.scenario.drop:
            conn.abort()
            return None
        if call.scenario.delay_ms == 0 and call.scenario.cutoff(call.tokens)[1] is None:
            # The common (benchmark) case: answer inline, no task, one write.
            record.tokens_sent = call.tokens
            if call.stream:
                head = _head(200, record.request_id, _SSE_TYPE, length=None, close=close)
                conn.write(head + call.head() + call.token_run(call.tokens) + call.tail())
                conn.finish(200)
            else:
                conn.send_json(200, call.complete_body(), close=close)
            return None
        return self._stream(conn, call) if call.stream else self._complete(conn, call)

    def _plan(self, record: RequestRecord, body_ok: bool, close: bool) -> _Call | _Reply:
        """Decide how to answer: a plain JSON reply, or a completion call to render."""
        route = _ROUTES.get(record.path)
        if route is None:
            return _invalid(404, f"Unknown path {record.path} (fake upstream).", "unknown_url")
        if record.method != ("GET" if route == "models" else "POST"):
            return _invalid(405, "Method not allowed.")
        if route == "models":
            data = [
                {"id": m, "object": "model", "created": _CREATED, "owned_by": "fake"}
                for m in MODELS
            ]
            return _Reply(200, {"object": "list", "data": data})
        body = record.body
        if not body_ok or not isinstance(body, dict):
            return _invalid(400, "We could not parse the JSON body of your request.")
        user_text = last_user_text(body)
        record.directives = parse_directives(user_text)
        try:
            scenario = self.defaults.with_directives(record.directives)
        except ValueError as exc:
            return _invalid(400, str(exc), "fake_directive")
        if scenario.times is not None and scenario.has_failure:
            with self._cond:
                seen = self._times_seen[(route, user_text)]
                self._times_seen[(route, user_text)] = seen + 1
            if seen >= scenario.times:
                scenario = scenario.without_failures()
        if scenario.echo_key:
            # Deliberately leaks the credential: log-secrecy tests look for it downstream.
            key = record.headers.get("authorization", "")
            return _invalid(401, f"Incorrect API key provided: {key}", "invalid_api_key")
        if scenario.status is not None:
            extra: list[tuple[str, str]] = []
            if scenario.retry_after is not None:
                extra.append(("retry-after", str(scenario.retry_after)))
            elif scenario.status == 429:
                extra.append(("retry-after", "0"))
            if scenario.location is not None:
                extra.append(("location", scenario.location))
            if scenario.retry_after_ms is not None:
                extra.append(("retry-after-ms", str(scenario.retry_after_ms)))
            return _Reply(scenario.status, _status_error(scenario.status), tuple(extra))
        kind: Kind = "chat" if route == "chat" else "responses"
        return _Call.build(kind, record, body, scenario, close)

    async def _stream(self, conn: _Connection, call: _Call) -> None:
        """Stream with delays and/or a positional failure mode."""
        record = call.record
        cut, mode = call.scenario.cutoff(call.tokens)
        conn.write(
            _head(200, record.request_id, _SSE_TYPE, length=None, close=call.close) + call.head()
        )
        delay = call.scenario.delay_ms / 1000
        if delay <= 0:
            conn.write(call.token_run(cut))
            record.tokens_sent = cut
        else:
            for i in range(cut):
                if not await conn.sleep(delay):
                    return
                conn.write(call.token_frame(i))
                record.tokens_sent = i + 1
                if not await conn.drain():
                    return
        if mode is None:
            conn.write(call.tail())
            conn.finish(200)
        elif mode == "fail":
            conn.finish(200)
            conn.close()
        elif mode == "hang":
            await conn.drain()
            await conn.sleep(None)
        elif mode == "bad_utf8":
            conn.write(call.bad_utf8_frame(cut) + call.tail())
            conn.finish(200)
        else:
            conn.write(call.error_frames(cut, mode))
            conn.finish(200)

    async def _complete(self, conn: _Connection, call: _Call) -> None:
        """Non-streaming answer with delays and/or a failure mode."""
        record = call.record
        cut, mode = call.scenario.cutoff(call.tokens)
        delay = call.scenario.delay_ms / 1000
        if delay > 0 and not await conn.sleep(delay * cut):
            return
        if mode in ("error", "failed", "bad_utf8"):
            conn.send_json(500, _status_error(500), close=call.close)
            return
        if mode is None:
            record.tokens_sent = call.tokens
            conn.send_json(200, call.complete_body(), close=call.close)
            return
        data = _JSON(call.complete_body()).encode()
        head = _head(200, record.request_id, _JSON_TYPE, length=len(data), close=call.close)
        if mode == "fail":
            conn.write(head + data[: len(data) // 2])
            record.tokens_sent = cut
            conn.finish(200)
            conn.close()
        else:  # hang
            conn.write(head)
            await conn.sleep(None)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run the fake upstream until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_upstream", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="tokens per answer")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before each token")
    parser.add_argument(
        "--directives", default="", help='server-wide directives, e.g. "fail_after=3"'
    )
    parser.add_argument("--max-records", type=int, default=1000, help="request records kept")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio loop")
    args = parser.parse_args(argv)
    fake = FakeUpstream(
        host=args.host,
        port=args.port,
        tokens=args.tokens,
        delay_ms=args.delay_ms,
        directives=args.directives,
        max_records=args.max_records,
        use_uvloop=not args.no_uvloop,
    )

    def ready() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, fake.request_stop)
        print(f"fake upstream listening on {fake.base_url}", flush=True)

    with asyncio.Runner(loop_factory=_loop_factory(not args.no_uvloop)) as runner:
        runner.run(fake.serve(ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
