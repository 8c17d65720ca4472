"""OpenAI streaming wire formats: SSE body bytes -> answer text and terminal facts, via msgspec.

Pure: no I/O. ``feed()`` takes whatever one network read returned and gives back the answer text
of every event that read completed, joined: deltas that arrive together leave as one. The
decoders only look at what the service needs (text, finish reason, usage, ids, errors); msgspec
skips every other field without building it, which is what makes a token cheap.

Lines end in LF or CRLF (a bare CR, legal in SSE but sent by no LLM server, is not a line end);
``event:``, ``id:`` and comments are ignored because the JSON payload names its own type.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

FinishReason = Literal["stop", "length"]

# A line longer than this without a newline is not an SSE stream we can serve.
MAX_LINE_BYTES: Final = 8 * 1024 * 1024


class Failure(msgspec.Struct, frozen=True):
    """The upstream reported an error inside a 200 stream."""

    message: str
    body: Any = None


# --- Chat Completions: data: {"choices":[{"delta":{"content":..}}],..} ... data: [DONE] --------


class _ChatDelta(msgspec.Struct, gc=False):
    content: str | None = None


class _ChatChoice(msgspec.Struct, gc=False):
    index: int = 0
    delta: _ChatDelta | None = None
    finish_reason: str | None = None


class _ChatUsage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0


class ChatChunk(msgspec.Struct, gc=False):
    """The fields of a ``chat.completion.chunk`` the service reads."""

    choices: list[_ChatChoice] = []
    usage: _ChatUsage | None = None
    error: Any = None


# --- Responses: data: {"type":"response.output_text.delta","delta":..} ... response.completed --


class _ResponsesUsage(msgspec.Struct, gc=False):
    input_tokens: int | None = 0
    output_tokens: int | None = 0


class _IncompleteDetails(msgspec.Struct, gc=False):
    reason: str | None = None


class _ResponseBody(msgspec.Struct, gc=False):
    id: str = ""
    usage: _ResponsesUsage | None = None
    incomplete_details: _IncompleteDetails | None = None
    error: Any = None


class ResponsesEvent(msgspec.Struct, gc=False):
    """The fields of a Responses stream event the service reads."""

    type: str = ""
    delta: str | None = None
    response: _ResponseBody | None = None
    code: Any = None
    message: Any = None


_chat_decoder: Final = msgspec.json.Decoder(ChatChunk)
_responses_decoder: Final = msgspec.json.Decoder(ResponsesEvent)

_DONE: Final = b"[DONE]"
_DATA: Final = b"data:"
_TEXT_DELTA: Final = "response.output_text.delta"


class StreamDecoder:
    """Splits body bytes into SSE events and keeps what the stream said about its end."""

    __slots__ = (
        "_data",
        "_tail",
        "failure",
        "finish_reason",
        "finished",
        "input_tokens",
        "output_tokens",
        "response_id",
    )

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []
        self.finished = False  # the stream's last event arrived; nothing after it matters
        self.finish_reason: FinishReason | None = None
        self.input_tokens: int | None = None  # None: the stream carried no usage
        self.output_tokens: int | None = None
        self.response_id: str | None = None
        self.failure: Failure | None = None

    def feed(self, chunk: bytes) -> str:
        """The answer text completed by this chunk; check ``finished`` and ``failure`` after."""
        parts: list[str] = []
        for payload in self._payloads(chunk):
            try:
                text = self._event(payload)
            except msgspec.DecodeError:
                self.failure = Failure("The upstream sent malformed JSON.")
                break
            except UnicodeDecodeError:
                # msgspec raises this, not DecodeError, for bytes in a string that are not
                # UTF-8. Text decoded before it in this chunk is kept: it reached us intact.
                self.failure = Failure("The upstream sent text that is not UTF-8.")
                break
            if text:
                parts.append(text)
            if self.finished or self.failure is not None:
                break
        if not parts:
            return ""
        return parts[0] if len(parts) == 1 else "".join(parts)

    def end(self) -> str:
        """The body ended: the text of a last event that lacked its closing blank line."""
        if self.finished or self.failure is not None or not (self._tail or self._data):
            return ""
        # SSE drops such an event; servers that close right after their last line expect it kept.
        return self.feed(b"\n\n")

    def _payloads(self, chunk: bytes) -> list[bytes]:
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if len(tail) > MAX_LINE_BYTES:
            self.failure = Failure("The upstream sent an over-long SSE line.")
            return []
        self._tail = tail
        payloads: list[bytes] = []
        data = self._data
        for line in lines:
            if not line or line == b"\r":
                if data:
                    payloads.append(self._take_data())
                    data = self._data
            elif line.startswith(_DATA):
                # One optional space after the colon belongs to the field syntax; a trailing CR
                # stays: JSON treats it as whitespace and [DONE] is matched as a prefix.
                value = line[6:] if line[5:6] == b" " else line[5:]
                data.append(value)
        return payloads

    def _take_data(self) -> bytes:
        data = self._data
        self._data = []
        return data[0] if len(data) == 1 else b"\n".join(data)

    def _event(self, payload: bytes) -> str | None:
        raise NotImplementedError


class ChatCompletionsDecoder(StreamDecoder):
    """``chat.completion.chunk`` events; ``[DONE]`` ends the stream."""

    __slots__ = ()

    def _event(self, payload: bytes) -> str | None:
        if payload.startswith(_DONE):
            self.finished = True
            return None
        chunk = _chat_decoder.decode(payload)
        if chunk.error is not None:
            self.failure = _failure_of(chunk.error, "The upstream reported an error.")
            return None
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens or 0
            self.output_tokens = chunk.usage.completion_tokens or 0
        text = None
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # n > 1 is never asked for; other choices are not the answer
            if choice.delta is not None and choice.delta.content:
                text = choice.delta.content
            if choice.finish_reason is not None:
                self.finish_reason = "length" if choice.finish_reason == "length" else "stop"
        return text

    def end(self) -> str:
        """Without ``[DONE]``, a finish reason still marks a complete answer (some servers)."""
        text = super().end()
        if self.finish_reason is not None and self.failure is None:
            self.finished = True
        return text


class ResponsesDecoder(StreamDecoder):
    """Responses API events; ``response.completed`` or ``response.incomplete`` ends the stream."""

    __slots__ = ()

    def _event(self, payload: bytes) -> str | None:
        event = _responses_decoder.decode(payload)
        kind = event.type
        if kind == _TEXT_DELTA:
            return event.delta
        response = event.response
        if kind == "response.created" and response is not None:
            self.response_id = response.id or None
        elif kind == "response.completed":
            self._finish(response, "stop")
        elif kind == "response.incomplete":
            details = response.incomplete_details if response is not None else None
            if details is not None and details.reason == "max_output_tokens":
                self._finish(response, "length")
            else:
                reason = details.reason if details is not None else None
                self.failure = Failure(f"The upstream response is incomplete ({reason}).", None)
        elif kind == "response.failed":
            error = response.error if response is not None else None
            self.failure = _failure_of(error, "The upstream response failed.")
        elif kind in {"error", "response.error"}:
            self.failure = _failure_of(
                {"code": event.code, "message": event.message}, "The upstream reported an error."
            )
        return None

    def _finish(self, response: _ResponseBody | None, reason: FinishReason) -> None:
        self.finished = True
        self.finish_reason = reason
        if response is None:
            return
        if response.id:
            self.response_id = response.id
        if response.usage is not None:
            self.input_tokens = response.usage.input_tokens or 0
            self.output_tokens = response.usage.output_tokens or 0


def _failure_of(error: Any, default: str) -> Failure:
    """An in-band error object -> a Failure with its message (used for logs, never for clients)."""
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message:
        message = default
    return Failure(message, error)
