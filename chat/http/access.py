"""A run's figures in the access log line, written when its reader ends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from chat.run.control import RunStats
from chat.service.record import ChatRun
from chat.streams.manager import Reading


def record_run(access: dict[str, Any], run: ChatRun, *, delivered: bool, keep_text: bool) -> None:
    """The run's figures (and, with content logging on, its answer) into the access record."""
    stats: RunStats = run.stats
    access["ttft_ms"] = stats.ttft_ms()
    access["deltas"] = stats.deltas
    access["output_chars"] = stats.output_chars
    access["outcome"] = (stats.outcome or "incomplete") if delivered else "client_disconnected"
    if stats.finish_reason:
        access["finish_reason"] = stats.finish_reason
    if stats.usage is not None:
        access["input_tokens"] = stats.usage.input_tokens
        access["output_tokens"] = stats.usage.output_tokens
    if stats.upstream_request_id:
        access["upstream_request_id"] = stats.upstream_request_id
    access["stream_ms"] = round((time.perf_counter() - stats.started_at) * 1000, 2)
    if keep_text:
        access["answer_text"] = run.text()


async def reporting(
    frames: AsyncIterator[bytes], run: ChatRun, access: dict[str, Any], *, keep_text: bool
) -> AsyncIterator[bytes]:
    """Pass frames through; when the reader ends, put the run's figures in the access line."""
    delivered = False
    try:
        async with aclosing(frames):
            async for chunk in frames:
                yield chunk
        delivered = True
    finally:
        record_run(access, run, delivered=delivered, keep_text=keep_text)


async def reading(
    frames: AsyncIterator[bytes], seen: Reading, access: dict[str, Any]
) -> AsyncIterator[bytes]:
    """A resumed reader's access line: how many bytes it got and how its stream ended."""
    sent = 0
    try:
        async with aclosing(frames):
            async for chunk in frames:
                sent += len(chunk)
                yield chunk
        access["outcome"] = seen.outcome or "incomplete"
    finally:
        access.setdefault("outcome", "client_disconnected")
        access["bytes_sent"] = sent
