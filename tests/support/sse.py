"""A small, strict SSE reader for tests: frames as the bytes arrive, comments included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    """One SSE frame: its fields, or a comment line."""

    event: str | None = None
    id: str | None = None
    data_lines: list[str] = field(default_factory=list)
    retry: int | None = None
    comment: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        return json.loads("\n".join(self.data_lines))


class FrameParser:
    """Feed SSE lines one at a time; complete frames come back."""

    def __init__(self) -> None:
        self._frame = Frame()
        self._dirty = False

    def feed(self, line: str) -> Frame | None:
        """One line in; a frame out when a blank line ends it, or at once for a comment."""
        if line == "":
            frame, dirty = self._frame, self._dirty
            self._frame, self._dirty = Frame(), False
            return frame if dirty else None
        if line.startswith(":"):
            return Frame(comment=line[1:].strip())
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._dirty = True
        if name == "event":
            self._frame.event = value
        elif name == "id":
            self._frame.id = value
        elif name == "data":
            self._frame.data_lines.append(value)
        elif name == "retry":
            self._frame.retry = int(value)
        return None


def parse_lines(lines: Iterator[str]) -> Iterator[Frame]:
    """Turn SSE lines into frames."""
    parser = FrameParser()
    for line in lines:
        frame = parser.feed(line)
        if frame is not None:
            yield frame


def read_frames(response: httpx.Response) -> list[Frame]:
    """All frames of a (synchronous, streamed) response until the server closes it."""
    return list(parse_lines(response.iter_lines()))


async def aiter_frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Frames of an async streamed response, as they arrive."""
    parser = FrameParser()
    async for line in response.aiter_lines():
        frame = parser.feed(line)
        if frame is not None:
            yield frame


def answer_text(frames: list[Frame]) -> str:
    """The concatenated delta texts."""
    return "".join(f.data["text"] for f in frames if f.event == "delta")


def events_only(frames: list[Frame]) -> list[Frame]:
    """Frames that are events: no comments (pings), no bare ``retry:`` fields."""
    return [f for f in frames if f.comment is None and f.event is not None]
