"""Every use of a dependency's private or undocumented API, in one place, each with its reason.

An upgrade of openai-agents, openai, sse-starlette or uvicorn may change any of these without
notice. ``tests/unit/test_seams.py`` checks each one against the installed versions and fails
naming the seam and the package, so a broken upgrade says what broke instead of misbehaving.
Nothing else in the project touches another package's underscored names (the same test fails
on any other module that imports one).
"""

from __future__ import annotations

import dis
import inspect
import logging
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from types import CodeType, CoroutineType, FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agents import ModelSettings, RunConfig, SQLiteSession
from agents.memory import SessionSettings
from agents.models.chatcmpl_converter import Converter
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.result import RunResultStreaming
from agents.usage import _mark_request_completed_without_usage
from openai._models import add_request_id

if TYPE_CHECKING:  # the HTTP layer passes its responses in; models never need Starlette
    from starlette.responses import Response

__all__ = [
    "FAKE_RESPONSES_ID",
    "REDIS_SESSION_APPEND_LUA",
    "SSE_SEND_WITH_TIMEOUT",
    "STRUCTLOG_PLUMBING_KEYS",
    "Converter",
    "SQLiteSessionOnConnections",
    "drop_connection_header",
    "empty_hook_codes",
    "install_sdk_fast_paths",
    "is_structlog_record",
    "mark_completed_without_usage",
    "openai_request_options",
    "provider_request_id",
    "redis_session_keys",
    "release_sqlite_session_file_lock",
    "route_event_sends",
    "run_config",
    "set_provider_request_id",
    "sqlite_session_file_lock",
    "static_prompt_codes",
    "uvicorn_is_exiting",
    "uvicorn_sigterm_handler",
]

SignalHandler = Callable[[int, FrameType | None], Any]

# agents.models.chatcmpl_converter.Converter (internal module): turns Responses-format input
# items into Chat Completions messages exactly as the SDK's own Chat Completions model does, so
# our msgspec-decoding model sends the same request the stock one would.
# agents.models.fake_id.FAKE_RESPONSES_ID: the placeholder id the SDK gives responses of
# providers that have none (Chat Completions); ours carry the same.

# The name of sse-starlette's per-event send method, which ``route_event_sends`` replaces on our
# EventSourceResponse subclass.
SSE_SEND_WITH_TIMEOUT = "_send_with_timeout"

ResponseClass = TypeVar("ResponseClass", bound=type)


def route_event_sends(cls: ResponseClass) -> ResponseClass:
    """Class decorator for an ``EventSourceResponse`` subclass: its sends go to ``send_event``.

    sse-starlette sends every event (and every ping) through
    ``EventSourceResponse._send_with_timeout``, which opens an ``anyio.move_on_after`` scope per
    event, even when ``send_timeout`` is None: 4-7 us of CPU per event, 7 % of the server's
    CPU at 1,000 paced streams (py-spy). The subclass's ``send_event(send, message)`` takes that
    place and may call the library's own method, kept as ``library_send_event``.
    sse-starlette offers no public hook for this.
    """
    cls.library_send_event = getattr(cls, SSE_SEND_WITH_TIMEOUT)  # type: ignore[attr-defined]
    setattr(cls, SSE_SEND_WITH_TIMEOUT, cls.send_event)  # type: ignore[attr-defined]
    return cls


# structlog's stdlib plumbing. ``ProcessorFormatter.wrap_for_formatter`` hands a structlog event to
# logging with the event dict as the record's message and the bound logger in the record's
# ``_logger`` attribute; ``ProcessorFormatter`` then puts ``_record`` and ``_from_structlog`` in
# the event dict it renders. Our filter tells our records from libraries' by the first, and the
# redaction leaves the other two alone (the formatter needs them intact).
STRUCTLOG_PLUMBING_KEYS: Final = frozenset({"_record", "_from_structlog"})


def is_structlog_record(record: logging.LogRecord) -> bool:
    """Whether a stdlib log record came from structlog (our code), not from a library."""
    return getattr(record, "_logger", None) is not None


def mark_completed_without_usage(response: Any) -> None:
    """Count a provider response that reported no usage as one request.

    The SDK's helper ``agents.usage._mark_request_completed_without_usage``: without it, a run
    whose stream had no usage chunk reports ``requests=0``.
    """
    _mark_request_completed_without_usage(response)


def set_provider_request_id(response: Any, request_id: str | None) -> None:
    """Attach the provider's ``x-request-id`` to a response we built ourselves.

    The openai client keeps it in the private ``_request_id`` of the models it parses, set by
    its private ``openai._models.add_request_id``; our decoder builds the response objects
    directly, so it uses the same helper, and ``ModelResponse.request_id`` is filled from it.
    """
    add_request_id(response, request_id)


def provider_request_id(response: Any) -> str | None:
    """The provider's request id of a response (see ``set_provider_request_id``)."""
    value = getattr(response, "_request_id", None)
    return value if isinstance(value, str) else None


def drop_connection_header(response: Response) -> None:
    """Remove the ``Connection: keep-alive`` that sse-starlette adds to every stream.

    It is hop-by-hop and forbidden in HTTP/2 (a proxy forwarding it breaks the stream), and
    HTTP/1.1 keeps connections alive by default. sse-starlette documents no way to leave it out.
    """
    del response.headers["connection"]


def uvicorn_is_exiting() -> bool:
    """True once uvicorn has been told to exit (SIGTERM/SIGINT), seen from inside the app.

    Neither library says so publicly. sse-starlette keeps a process-global
    ``sse_starlette.sse.AppStatus.should_exit`` that its own patch of uvicorn's signal handler
    sets; when that patch is not in place, uvicorn's handler is the bound method
    ``Server.handle_exit`` and its server has ``should_exit``.
    """
    from sse_starlette.sse import AppStatus

    if AppStatus.should_exit:
        return True
    handler: Any = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


def uvicorn_sigterm_handler() -> SignalHandler | None:
    """uvicorn's SIGTERM handler, to be wrapped now and called later; None when there is none.

    uvicorn offers no hook to run before its shutdown. Its ``Server.capture_signals`` installs
    the bound method ``Server.handle_exit`` with ``signal.signal`` (never the loop's
    ``add_signal_handler``), so the handler can be read back, replaced by ours, and called with
    ``(signum, frame)`` once we are ready: uvicorn then shuts down as if the signal came then.
    """
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


def run_config(*, model: Any, tracing: bool, model_settings: ModelSettings) -> RunConfig:
    """A RunConfig whose ``model_settings`` skips ``RunConfig.__post_init__``'s re-validation.

    ``__post_init__`` resolves the dataclass's type hints (``typing.get_type_hints``, 0.5-1 ms a
    run) only to check a ModelSettings we built ourselves; set after construction, it is not.
    """
    config = RunConfig(
        model=model, tracing_disabled=not tracing, trace_include_sensitive_data=False
    )
    config.model_settings = model_settings
    return config


def openai_request_options(settings: ModelSettings) -> dict[str, Any]:
    """Per-request options for the openai client's low-level ``post(..., options=...)``.

    The keys are fields of the client's private ``openai._models.FinalRequestOptions``:
    ``security`` (send the bearer key), ``headers`` (X-Request-ID), ``params`` (query) and
    ``extra_json`` (extra body fields), as its public ``create()`` methods fill them.
    """
    options: dict[str, Any] = {"security": {"bearer_auth": True}}
    if settings.extra_headers:
        options["headers"] = settings.extra_headers
    if settings.extra_query:
        options["params"] = settings.extra_query
    if settings.extra_body:
        options["extra_json"] = settings.extra_body
    return options


def _single_agent_identity_map(
    build: Callable[[Any], dict[str, Any]],
) -> Callable[[Any], dict[str, Any]]:
    """``build``, answering at once for an agent that reaches no other agent.

    The SDK's ``agents._run_state_agent_identity._build_agent_identity_map`` names every agent
    reachable through handoffs and agents-as-tools, ordering agents of one name by a JSON
    signature of their whole configuration (``dataclasses.asdict`` of the model settings, two
    ``json.dumps``). It runs twice per run even when nothing is resumed (the sandbox session
    manager and the tool-use snapshot): ~75 us each here, for a graph of one agent whose map is
    always ``{agent.name: agent}``. Any other graph goes to the SDK's own function.
    """

    def build_identity_map(initial_agent: Any) -> dict[str, Any]:
        if not initial_agent.handoffs and not any(
            getattr(tool, "_is_agent_tool", False) for tool in initial_agent.tools or ()
        ):
            return {initial_agent.name: initial_agent}
        return build(initial_agent)

    build_identity_map.__wrapped__ = build  # type: ignore[attr-defined]
    return build_identity_map


# The SDK modules that gather hooks (or nothing) on every run, each importing
# agents.util._asyncio_tasks.gather_with_cancel by name.
SDK_GATHERING_MODULES: tuple[str, ...] = (
    "agents.agent",
    "agents.run_internal.run_loop",
    "agents.run_internal.tool_planning",
    "agents.run_internal.turn_preparation",
    "agents.run_internal.turn_resolution",
)


def _is_empty_coroutine_function(function: Any) -> bool:
    """Whether ``function`` is ``async def f(...): pass`` (docstrings allowed): no effects."""
    if not inspect.iscoroutinefunction(function):
        return False
    steps = [(i.opname, i.argval) for i in dis.get_instructions(function) if i.opname != "CACHE"]
    return steps == [
        ("RETURN_GENERATOR", None),
        ("POP_TOP", None),
        ("RESUME", 0),
        ("LOAD_CONST", None),
        ("RETURN_VALUE", None),
    ]


def empty_hook_codes() -> frozenset[CodeType]:
    """The code of every SDK hook default, and of its no-op coroutine, whose body is empty."""
    from agents.lifecycle import AgentHooksBase, RunHooksBase
    from agents.util import _coro

    candidates = [_coro.noop_coroutine]
    for cls in (RunHooksBase, AgentHooksBase):
        candidates.extend(vars(cls).values())
    return frozenset(f.__code__ for f in candidates if _is_empty_coroutine_function(f))


def static_prompt_codes() -> frozenset[CodeType]:
    """The code of ``Agent.get_system_prompt`` and ``Agent.get_prompt``."""
    from agents import Agent

    return frozenset({Agent.get_system_prompt.__code__, Agent.get_prompt.__code__})


def _is_unstarted_call(awaitable: Any, codes: frozenset[CodeType]) -> bool:
    """Whether ``awaitable`` is a coroutine of one of ``codes`` that has not started yet."""
    return (
        type(awaitable) is CoroutineType
        and awaitable.cr_code in codes
        and inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED
    )


def _is_static_prompt_call(awaitable: Any, codes: frozenset[CodeType]) -> bool:
    """Whether ``awaitable`` is a not yet started ``get_system_prompt``/``get_prompt`` of an
    agent whose instructions are a string (or none) and that has no prompt: such a call only
    returns that string (or None), running no code of the user's and never suspending."""
    if not _is_unstarted_call(awaitable, codes):
        return False
    agent = awaitable.cr_frame.f_locals.get("self")
    instructions = getattr(agent, "instructions", None)
    return (instructions is None or isinstance(instructions, str)) and (
        getattr(agent, "prompt", None) is None
    )


def _gather_without_idle_tasks(
    gather: Callable[..., Awaitable[tuple[Any, ...]]],
    empty: frozenset[CodeType],
    prompts: frozenset[CodeType] = frozenset(),
) -> Callable[..., Awaitable[tuple[Any, ...]]]:
    """``gather``, without tasks when there is nothing to run but empty hooks or static prompts.

    The SDK's ``gather_with_cancel`` runs every hook call as a task and waits for them all, also
    when there are none and when each is a default hook whose body is ``pass``: eight gathers a
    run here (agent start, prompt, LLM start and end, tools, handoffs, agent end), 16 tasks and a
    turn of the event loop each (~22 us apiece), two of them before the model request goes out.
    An empty coroutine that never started returns None and does nothing else: closing it is
    the same. The agent's system prompt and prompt are gathered the same way before every model
    request; for string instructions and no prompt they only return values, so they are awaited
    in turn, in this task. Anything else (a user's hooks, dynamic instructions) goes to the
    SDK's gather.
    """

    async def gather_with_cancel(
        *awaitables: Awaitable[Any], on_child_failure: Callable[[BaseException], None] | None = None
    ) -> tuple[Any, ...]:
        if awaitables and all(_is_static_prompt_call(a, prompts) for a in awaitables):
            return tuple([await awaitable for awaitable in awaitables])
        if not all(_is_unstarted_call(a, empty) for a in awaitables):
            return await gather(*awaitables, on_child_failure=on_child_failure)
        for awaitable in awaitables:
            awaitable.close()  # type: ignore[attr-defined]
        return (None,) * len(awaitables)

    gather_with_cancel.__wrapped__ = gather  # type: ignore[attr-defined]
    return gather_with_cancel


# The fields of the SDK's ToolExecutionPlan that hold work; a plan with all of them empty runs
# nothing, whichever way it is run.
TOOL_PLAN_WORK: Final = (
    "function_runs",
    "computer_actions",
    "custom_tool_calls",
    "shell_calls",
    "apply_patch_calls",
    "local_shell_calls",
)


def _empty_plans_in_sequence(
    execute_tool_plan: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """The SDK's ``_execute_tool_plan``, taking its own sequential branch for a plan of no work.

    At the end of every turn the SDK runs the turn's tool plan: by default (``parallel=True``)
    six ``execute_*`` coroutines in a ``gather_with_cancel``, six tasks and an ``asyncio.Event``,
    also when every list is empty, as it is for every answer that calls no tool. With nothing
    to run, its ``parallel=False`` branch (the same six calls awaited in turn) returns the same
    tuple without a task. Any plan with work goes the SDK's way untouched.
    """

    async def run_tool_plan(*, plan: Any, **kwargs: Any) -> Any:
        if not any(getattr(plan, name) for name in TOOL_PLAN_WORK):
            kwargs["parallel"] = False
        return await execute_tool_plan(plan=plan, **kwargs)

    run_tool_plan.__wrapped__ = execute_tool_plan  # type: ignore[attr-defined]
    return run_tool_plan


def _cleanup_then_release(
    run_sandbox_cleanup: Callable[[Any], Awaitable[None]],
) -> Callable[[Any], Awaitable[None]]:
    """``RunResultStreaming._run_sandbox_cleanup``, dropping the cleanup closure once it has run.

    The SDK's sandbox runtime gives every streamed result a ``_sandbox_cleanup`` closure that
    refers to the result itself (``SandboxRuntime.apply_result_metadata``), also for an agent
    with no sandbox. That cycle holds the whole run (its state, responses, queues) after the
    run ends, until the cyclic collector finds it: 44 % of the cyclic garbage a request left
    (100 of 226 objects, counted with ``gc.DEBUG_SAVEALL``). The SDK calls the closure once, in
    a task it keeps; later calls await that task. Once the task has finished (and was not
    cancelled, which later calls would re-raise), dropping the closure only breaks the cycle:
    later calls return at once, as they do for a result that never had one.
    """

    async def run_sandbox_cleanup_then_release(result: Any) -> None:
        try:
            await run_sandbox_cleanup(result)
        finally:
            task = result._sandbox_cleanup_task
            if task is not None and task.done() and not task.cancelled():
                result._sandbox_cleanup = None

    run_sandbox_cleanup_then_release.__wrapped__ = run_sandbox_cleanup  # type: ignore[attr-defined]
    return run_sandbox_cleanup_then_release


def install_sdk_fast_paths() -> None:
    """Replace SDK internals that do per-run work with the same result, cheaper (idempotent)."""
    import importlib

    from agents import _run_state_agent_identity as identity
    from agents.util import _asyncio_tasks

    current = identity._build_agent_identity_map
    if not hasattr(current, "__wrapped__"):
        identity._build_agent_identity_map = _single_agent_identity_map(current)
    original = _asyncio_tasks.gather_with_cancel
    fast = _gather_without_idle_tasks(original, empty_hook_codes(), static_prompt_codes())
    for name in SDK_GATHERING_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "gather_with_cancel", None) is original:
            module.gather_with_cancel = fast  # type: ignore[attr-defined]
    turn_resolution = importlib.import_module("agents.run_internal.turn_resolution")
    plan_runner = turn_resolution._execute_tool_plan
    if not hasattr(plan_runner, "__wrapped__"):
        turn_resolution._execute_tool_plan = _empty_plans_in_sequence(plan_runner)
    cleanup = RunResultStreaming._run_sandbox_cleanup
    if not hasattr(cleanup, "__wrapped__"):
        RunResultStreaming._run_sandbox_cleanup = _cleanup_then_release(cleanup)  # type: ignore[method-assign]


# --- Agents SDK sessions (openai-agents 0.24) -------------------------------------------------
# The conversation stores run the SDK's own session code (its SQL, its item format, its Redis
# layout) but not its per-turn set-up: a SQLiteSession per turn opened a connection to create
# the tables and one per worker thread (~0.5 ms of a turn), and RedisSession.add_items takes six
# round trips. These are the internals that relies on; tests/unit/test_seams.py checks each.


def sqlite_session_file_lock(path: Any) -> tuple[Any, Any]:
    """``SQLiteSession._acquire_file_lock``: the per-file lock its own sessions on ``path`` take.

    Returns ``(lock_path, lock)``; give ``lock_path`` back to ``release_sqlite_session_file_lock``.
    """
    return SQLiteSession._acquire_file_lock(path)  # type: ignore[no-any-return]


def release_sqlite_session_file_lock(lock_path: Any) -> None:
    """``SQLiteSession._release_file_lock``."""
    SQLiteSession._release_file_lock(lock_path)


class SQLiteSessionOnConnections(SQLiteSession):
    """A ``SQLiteSession`` that runs on connections someone else keeps, one per thread.

    Not ``SQLiteSession.__init__`` (it opens a connection and creates the tables each time): the
    attributes its methods read are set here, and ``_get_connection`` / ``_invalidate_connection``
    hand out and drop the owner's connections.
    """

    def __init__(
        self,
        session_id: str,
        *,
        path: Any,
        lock: Any,
        sessions_table: str,
        messages_table: str,
        connection: Callable[[], sqlite3.Connection],
        forget: Callable[[sqlite3.Connection], None],
    ) -> None:
        self.session_id = session_id
        self.session_settings = SessionSettings()
        self.db_path = path
        self.sessions_table = sessions_table
        self.messages_table = messages_table
        self._connection = connection
        self._forget = forget
        self._lock = lock
        self._is_memory_db = False
        self._closed = False

    def _get_connection(self) -> sqlite3.Connection:
        self._check_not_closed()
        return self._connection()

    def _invalidate_connection(self, conn: sqlite3.Connection) -> None:
        # A connection that could not roll back: the SDK would close and forget it; it is the
        # owner's, so the owner's thread gets a new one instead.
        self._forget(conn)

    def add_items_here(self, items: list[Any]) -> None:
        """``add_items`` in the calling thread (the SDK's own insert and commit)."""
        if not items:
            return
        with self._write_connection() as conn:
            self._insert_items(conn, items)
            conn.commit()

    def close(self) -> None:
        """Nothing to release: the connections are the owner's."""


def redis_session_keys(key_prefix: str, session_id: str) -> list[str]:
    """``RedisSession``'s keys for a session: the metadata hash, the item list, the counter."""
    session_key = f"{key_prefix}:{session_id}"
    return [session_key, f"{session_key}:messages", f"{session_key}:counter"]


# RedisSession.add_items, in one script: a hash with session_id, created_at and updated_at in
# server seconds, a list of JSON items, each key expiring the session's ttl after the write.
# KEYS (after the caller's own): session hash, session list, session counter, as KEYS[3..5].
# ARGV[6]: session ttl ms, ARGV[7]: session id, ARGV[8...]: the items' JSON. The caller's
# script goes on after it (tests/e2e/test_conversation_store_contract.py compares what it
# leaves with what add_items leaves).
REDIS_SESSION_APPEND_LUA: Final = """
local now = redis.call('TIME')
local expire_at = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  + tonumber(ARGV[6])
if #ARGV > 7 then
  redis.call('HSET', KEYS[3], 'session_id', ARGV[7])
  redis.call('HSETNX', KEYS[3], 'created_at', now[1])
  redis.call('RPUSH', KEYS[4], unpack(ARGV, 8))
  redis.call('HSET', KEYS[3], 'updated_at', now[1])
  redis.call('PEXPIREAT', KEYS[3], expire_at)
  redis.call('PEXPIREAT', KEYS[4], expire_at)
  redis.call('PEXPIREAT', KEYS[5], expire_at)
end
"""
