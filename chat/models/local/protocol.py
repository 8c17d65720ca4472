"""Frames between the service and its llama.cpp worker process, and their byte framing.

The engine runs in a child process (``worker.py``) so that a native crash in llama.cpp
(a segfault in a CPU kernel, an OOM kill) ends one process we can restart, not the HTTP server.
Both sides speak length-prefixed msgpack frames over the child's stdin and stdout: a 4-byte
big-endian length, then one tagged msgspec Struct. Pure code, no I/O: both sides import it.
"""

from __future__ import annotations

import struct
from typing import Final

import msgspec

HEADER: Final = struct.Struct(">I")
# A token is a few bytes; the largest frame is a prompt of CHAT_MAX_BODY_BYTES, well below this.
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024

Message = dict[str, str]


# --- service -> worker --------------------------------------------------------------------------


class WorkerConfig(msgspec.Struct, frozen=True):
    """What the engine tells the worker at start (JSON, its one command-line argument)."""

    model_path: str
    threads: int
    context: int


class Generate(msgspec.Struct, tag="generate", array_like=True, frozen=True):
    """Generate an answer to ``messages``; the worker queues it behind the one generating."""

    id: int
    messages: list[Message]
    max_tokens: int
    temperature: float
    top_p: float


class Cancel(msgspec.Struct, tag="cancel", array_like=True, frozen=True):
    """Stop job ``id`` within a token (or drop it from the queue)."""

    id: int


class Count(msgspec.Struct, tag="count", array_like=True, frozen=True):
    """Count the prompt tokens of each message list in ``prompts``, chat template applied.

    Several prompts a frame: trimming a conversation's history counts its messages in one go.
    """

    id: int
    prompts: list[list[Message]]


Command = Generate | Cancel | Count


# --- worker -> service --------------------------------------------------------------------------


class Loaded(msgspec.Struct, tag="loaded", array_like=True, frozen=True):
    """The model is loaded; jobs are taken from now on."""

    load_s: float
    system_info: str


class LoadFailed(msgspec.Struct, tag="load_failed", array_like=True, frozen=True):
    """The model could not be loaded; ``message`` is one line, safe to show."""

    message: str


class Started(msgspec.Struct, tag="started", array_like=True, frozen=True):
    """Job ``id`` left the queue: its prompt is evaluating."""

    id: int


class Piece(msgspec.Struct, tag="piece", array_like=True, frozen=True):
    """Answer text of job ``id`` (one token, or what completes a UTF-8 sequence)."""

    id: int
    text: str


class Finished(msgspec.Struct, tag="finished", array_like=True, frozen=True):
    """The last item of a generation: llama.cpp's token counts and why it stopped."""

    id: int
    prompt_tokens: int
    completion_tokens: int
    hit_max_tokens: bool
    queued_s: float = 0.0  # waiting in the worker's FIFO
    generation_s: float = 0.0  # prompt evaluation and generation


class Failed(msgspec.Struct, tag="failed", array_like=True, frozen=True):
    """Job ``id`` failed. ``kind``: ``overflow`` (prompt too long) or ``generation``."""

    id: int
    kind: str
    message: str
    prompt_tokens: int = 0
    context: int = 0


class Ended(msgspec.Struct, tag="ended", array_like=True, frozen=True):
    """The worker is done with job ``id`` (finished, failed or cancelled); for observers."""

    id: int
    completion_tokens: int
    cancelled: bool


class Counted(msgspec.Struct, tag="counted", array_like=True, frozen=True):
    """The answer to ``Count`` ``id``: a count per prompt, -1 where one could not be formatted."""

    id: int
    tokens: list[int]


class Log(msgspec.Struct, tag="log", array_like=True, frozen=True):
    """A warning or error of the worker or llama.cpp, to be logged by the service."""

    level: str
    event: str
    fields: dict[str, str | int | float]


Report = Loaded | LoadFailed | Started | Piece | Finished | Failed | Ended | Counted | Log

_encoder: Final = msgspec.msgpack.Encoder()
command_decoder: Final = msgspec.msgpack.Decoder(Command)
report_decoder: Final = msgspec.msgpack.Decoder(Report)


def frame(message: Command | Report) -> bytes:
    """One frame: the length header, then the msgpack body."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def body_length(header: bytes) -> int:
    """The body length a header announces; ValueError when it is out of bounds."""
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {length} bytes is over the {MAX_FRAME_BYTES} limit")
    return int(length)
