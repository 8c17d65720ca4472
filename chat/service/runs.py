"""The run owner: admit a chat request, start its run into the stream log, release it once.

``ChatService.start`` takes what a run holds (an admission slot, an agent, the drainer's
registration, the open-run gauge) in one ``RunLease``, and the lease gives all of it back from
one place, ``RunLease.release``, whichever way the run ends: its events run out (done, an
error, a stop from outside) or it never started. A conversation's lock stays with its turn
(``chat.conversations.turn``), which saves what was delivered and then lets go.

What the run produced that a caller needs afterwards (the terminal event, the answer's text
when asked for) is recorded on its ``ChatRun`` as data while the events pass, so nobody parses
the frames back.

Nothing here knows HTTP: refusals are contract errors (``ChatError``) and ``StoreUnavailable``,
which the HTTP layer renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Final, Protocol

from agents import Agent, ModelSettings

from chat.conversations.edge import begin_turn
from chat.conversations.service import Conversations
from chat.conversations.turn import ConversationTurn
from chat.errors import ChatError
from chat.models.backend import Backend
from chat.models.errors import InputTooLongError
from chat.requests import ChatRequest
from chat.run.agent_pool import AgentPool
from chat.run.consumer import stream_chat
from chat.run.control import RunControl, RunStats
from chat.run.deadlines import Deadlines
from chat.service.admission import StreamSlots
from chat.service.drain import Drainer
from chat.service.record import ChatRun
from chat.settings import Settings
from chat.streams.manager import StreamManager
from chat.streams.store import StoreUnavailable

# A refused stream may try again in a second: slots free up as streams end.
RETRY_SOON: Final = {"Retry-After": "1"}
# Draining or loading takes longer than a slot does.
RETRY_LATER: Final = {"Retry-After": "5"}


class RunRecorder(Protocol):
    """What the service tells the metrics about runs (``chat.metrics``, or nothing)."""

    def run_started(self) -> None:
        """A run took its slot."""

    def run_released(self) -> None:
        """A run gave its slot back."""


class RunLease:
    """Everything one run holds, given back exactly once by ``release``."""

    __slots__ = ("_service", "agent", "control", "held")

    def __init__(self, service: ChatService, control: RunControl) -> None:
        self._service = service
        self.control = control
        self.agent = service.agents.acquire()
        service.drainer.register(control.stop)
        service.recorder.run_started()
        self.held = True

    def release(self) -> None:
        """Free the slot, the agent and the drain registration (again: nothing happens)."""
        if not self.held:
            return
        self.held = False
        service = self._service
        service.drainer.unregister(self.control.stop)
        # The run is closed. A cancelled SDK task may still be unwinding: sharing an agent for
        # that moment is allowed, only slower.
        service.agents.release(self.agent)
        service.slots.release()
        service.recorder.run_released()


class ChatService:
    """Admission, the runs, and their release; the stream manager keeps their logs."""

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        streams: StreamManager,
        slots: StreamSlots,
        drainer: Drainer,
        recorder: RunRecorder,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.streams = streams
        self.slots = slots
        self.drainer = drainer
        self.recorder = recorder
        self.agents = AgentPool(
            Agent(name="assistant", instructions=settings.instructions, model=backend.model)
        )
        self.deadlines = Deadlines(
            first_token_s=settings.first_token_timeout_s,
            idle_s=settings.idle_timeout_s,
            total_s=settings.total_timeout_s,
        )
        # Opened in the lifespan (it needs I/O): the SQLite file or Redis.
        self.conversations: Conversations | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    # --- admission ------------------------------------------------------------------------

    def refuse_when_full(self) -> None:
        """``overloaded`` at once when no slot is free: before any body is read or decoded.

        A draining server lets the request through to say ``shutting_down`` instead.
        """
        if self.slots.full and not self.drainer.draining:
            raise ChatError("overloaded", headers=RETRY_SOON)

    def unready_code(self) -> str | None:
        """Why the service cannot take runs now (a contract code), or None when it can."""
        if self.drainer.draining:
            return "shutting_down"
        if not self.backend.ready:
            return "not_ready"
        if not self.streams.store.available:
            return "store_unavailable"
        return None

    @property
    def open_streams(self) -> int:
        """Runs holding a slot now."""
        return self.slots.in_use

    # --- runs -----------------------------------------------------------------------------

    async def start(
        self,
        request: ChatRequest,
        *,
        request_id: str,
        authorization: str | None,
        keep_text: bool = False,
    ) -> ChatRun:
        """Admit ``request`` and start its run; a ``ChatError`` or ``StoreUnavailable`` if not."""
        if self.drainer.draining:
            raise ChatError("shutting_down", headers=RETRY_LATER)
        if not self.backend.ready:
            raise ChatError("not_ready", headers=RETRY_LATER)
        if not self.streams.store.available:
            raise StoreUnavailable("known to be away")
        try:
            await self.backend.check_input(self.settings.instructions, request.message)
        except InputTooLongError as exc:
            raise ChatError(
                "invalid_request", details=[{"path": exc.path, "message": exc.message}]
            ) from None
        if not self.slots.try_acquire():  # checked before the body was read; others came in
            raise ChatError("overloaded", headers=RETRY_SOON)
        try:
            turn = await begin_turn(
                self.conversations,
                request.conversation_id,
                authorization=authorization,
                message=request.message,
            )
        except BaseException:
            self.slots.release()
            raise
        run = ChatRun(keep_text=keep_text)
        control = RunControl()
        stats = RunStats()
        lease = RunLease(self, control)
        try:
            events = stream_chat(
                agent=lease.agent,
                model=self.backend.model,
                message=request.message,
                request_id=request_id,
                deadlines=self.deadlines,
                model_settings=self.model_settings_for(request_id),
                tracing=self.settings.tracing,
                stats=stats,
                control=control,
                session=turn.run_session if turn is not None else None,
            )
            if turn is not None:
                events = turn.events(events)
                run.conversation_id = turn.conversation_id
                run.history_turns = turn.history.turns_sent
            run.stream = await self.streams.start(
                run.recording(events, lease.release), control=control, stats=stats
            )
        except BaseException:
            lease.release()
            if turn is not None:
                await turn.abandon()
            raise
        if run.stream.task is not None:
            run.stream.task.add_done_callback(lambda _: self._never_ran(lease, turn))
        return run

    def _never_ran(self, lease: RunLease, turn: ConversationTurn | None) -> None:
        """The pump ended. If it never ran the events (cancelled before its first step), their
        own clean-up never ran either: give the lease back, and the conversation's lock."""
        if not lease.held:
            return  # the events ended and released everything
        lease.release()
        if turn is not None:
            with contextlib.suppress(RuntimeError):  # no loop left to run it on: it expires
                task = asyncio.get_running_loop().create_task(turn.abandon())
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)

    def model_settings_for(self, request_id: str) -> ModelSettings:
        """The backend's settings plus our request id, so the provider's logs can be joined."""
        base = self.backend.model_settings
        headers = dict(base.extra_headers or {})
        headers["X-Request-ID"] = request_id
        return dataclasses.replace(base, extra_headers=headers)
