"""Each seam into a dependency's internals still holds on the installed versions.

When one of these fails after an upgrade, the message names the package and the internal that
changed; chat/seams.py says why we use it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import signal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import pytest
from agents import ModelSettings, RunConfig
from openai._models import FinalRequestOptions
from openai.types.responses import Response as OpenAIResponse
from sse_starlette import EventSourceResponse

from chat import seams

ROOT = Path(__file__).resolve().parents[2]
# Packages whose internals only chat/seams.py may import.
DEPENDENCIES = frozenset({"agents", "openai", "sse_starlette", "starlette", "structlog", "uvicorn"})


def _broke(package: str, what: str) -> str:
    return f"{package} {version(package)} changed {what}: see chat/seams.py"


def _private_imports(path: Path) -> list[str]:
    """Underscored modules or names of DEPENDENCIES that ``path`` imports."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [(node.module, [alias.name for alias in node.names])]
        else:
            continue
        for module, names in modules:
            parts = module.split(".")
            if parts[0] not in DEPENDENCIES:
                continue
            private = [n for n in [*parts, *names] if n.startswith("_") and not n.startswith("__")]
            if private:
                found.append(f"{module} ({', '.join(private)})")
    return found


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(ROOT).as_posix()
        for p in [
            ROOT / "app.py",
            *(ROOT / "chat").rglob("*.py"),
            *(ROOT / "logging_config").rglob("*.py"),
        ]
        if p != ROOT / "chat" / "seams.py"
    ),
)
def test_module_when_imports_read_then_no_dependency_internals_outside_seams(path: str) -> None:
    private = _private_imports(ROOT / path)
    assert not private, f"{path} imports internals {private}: go through chat/seams.py"


def test_mark_completed_without_usage_when_called_then_the_sdk_helper_takes_a_response() -> None:
    import agents.usage

    helper = getattr(agents.usage, "_mark_request_completed_without_usage", None)
    assert callable(helper), _broke(
        "openai-agents", "agents.usage._mark_request_completed_without_usage"
    )
    assert list(inspect.signature(helper).parameters) == ["response"], _broke(
        "openai-agents", "the signature of _mark_request_completed_without_usage"
    )
    response: Any = OpenAIResponse.model_construct(id="r", output=[], usage=None)
    seams.mark_completed_without_usage(response)  # must accept the responses we build


def test_provider_request_id_when_set_then_kept_where_the_openai_client_keeps_it() -> None:
    import openai._models

    assert callable(getattr(openai._models, "add_request_id", None)), _broke(
        "openai", "openai._models.add_request_id (how parsed responses keep x-request-id)"
    )
    response: Any = OpenAIResponse.model_construct(id="r", output=[])
    seams.set_provider_request_id(response, "req_123")
    assert seams.provider_request_id(response) == "req_123"
    assert response._request_id == "req_123"
    assert "_request_id" not in response.model_dump()  # never serialised into a body


def test_openai_request_options_when_built_then_final_request_options_accepts_them() -> None:
    settings = ModelSettings(
        extra_headers={"X-Request-ID": "r1"}, extra_query={"q": "1"}, extra_body={"b": 2}
    )
    options = seams.openai_request_options(settings)
    fields = set(FinalRequestOptions.model_fields)
    assert set(options) <= fields, _broke("openai", f"FinalRequestOptions fields ({fields})")
    built = FinalRequestOptions.construct(method="post", url="/x", **options)
    assert built.headers == {"X-Request-ID": "r1"}


def test_run_config_when_built_then_model_settings_set_and_post_init_still_exists() -> None:
    settings = ModelSettings(max_tokens=7)
    config = seams.run_config(model=None, tracing=False, model_settings=settings)
    assert config.model_settings is settings
    assert config.tracing_disabled is True
    assert "model_settings" in {f.name for f in dataclasses.fields(RunConfig)}, _broke(
        "openai-agents", "RunConfig.model_settings"
    )


def test_sse_send_with_timeout_when_overridden_then_library_still_has_it() -> None:
    method = getattr(EventSourceResponse, seams.SSE_SEND_WITH_TIMEOUT, None)
    assert callable(method), _broke("sse-starlette", "EventSourceResponse._send_with_timeout")
    assert list(inspect.signature(method).parameters) == ["self", "send", "message"], _broke(
        "sse-starlette", "the signature of EventSourceResponse._send_with_timeout"
    )


@pytest.mark.anyio
async def test_route_event_sends_when_library_sends_then_send_event_called() -> None:
    routed: list[Any] = []

    @seams.route_event_sends
    class Routed(EventSourceResponse):
        async def send_event(self, send: Any, message: Any) -> None:
            routed.append(message)
            await self.library_send_event(send, message)  # type: ignore[attr-defined]

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def body() -> Any:
        yield "x"

    for response in (Routed(body()), Routed(body(), send_timeout=5)):
        await getattr(response, seams.SSE_SEND_WITH_TIMEOUT)(send, {"type": "a"})
    assert routed == [{"type": "a"}, {"type": "a"}]
    assert sent == [{"type": "a"}, {"type": "a"}], _broke(
        "sse-starlette", "how EventSourceResponse._send_with_timeout sends an event"
    )


@pytest.mark.anyio
async def test_route_event_sends_when_streaming_then_every_event_goes_through_send_event() -> None:
    routed: list[Any] = []

    @seams.route_event_sends
    class Routed(EventSourceResponse):
        async def send_event(self, send: Any, message: Any) -> None:
            routed.append(message["type"])
            await send(message)

    async def body() -> Any:
        yield "one"
        yield "two"

    async def receive() -> Any:
        await anyio.sleep_forever()

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "method": "GET"}
    await Routed(body(), ping=0)(scope, receive, send)
    assert routed.count("http.response.body") >= 2, _broke(
        "sse-starlette", "EventSourceResponse._stream_response sending through _send_with_timeout"
    )


def test_drop_connection_header_when_streaming_then_sse_starlette_still_adds_it() -> None:
    async def body() -> Any:
        yield "x"

    response = EventSourceResponse(body())
    assert response.headers.get("connection") == "keep-alive", _broke(
        "sse-starlette", "the Connection header it sets (drop_connection_header may go)"
    )
    seams.drop_connection_header(response)
    assert "connection" not in response.headers


def test_uvicorn_is_exiting_when_uvicorn_handler_installed_then_reads_its_server() -> None:
    import uvicorn
    from sse_starlette.sse import AppStatus

    assert hasattr(AppStatus, "should_exit"), _broke("sse-starlette", "AppStatus.should_exit")
    server = uvicorn.Server(uvicorn.Config(app=None))
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        assert seams.uvicorn_is_exiting() is bool(AppStatus.should_exit)
        server.should_exit = True
        assert seams.uvicorn_is_exiting(), _broke("uvicorn", "Server.handle_exit/should_exit")
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_uvicorn_sigterm_handler_when_uvicorn_captures_signals_then_it_can_be_called_later() -> (
    None
):
    import uvicorn
    from sse_starlette.sse import AppStatus

    server = uvicorn.Server(uvicorn.Config(app=None))
    with server.capture_signals():
        handler = seams.uvicorn_sigterm_handler()
    assert handler is not None, _broke("uvicorn", "Server.capture_signals (no SIGTERM handler)")
    assert getattr(handler, "__self__", None) is server, _broke(
        "uvicorn", "Server.capture_signals (SIGTERM no longer Server.handle_exit)"
    )
    # Called after capture_signals has ended, so uvicorn re-raises nothing in the test process.
    # sse-starlette's patch of handle_exit sets its process-wide exit flag: every later app in
    # this process would think it is shutting down, so the flag is put back.
    exiting = AppStatus.should_exit
    try:
        handler(signal.SIGTERM, None)
        assert server.should_exit, _broke("uvicorn", "Server.handle_exit(signum, frame)")
    finally:
        AppStatus.should_exit = exiting


def test_uvicorn_sigterm_handler_when_default_disposition_then_none() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert seams.uvicorn_sigterm_handler() is None
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("name", ["items_to_messages"])
def test_converter_when_used_then_method_exists(name: str) -> None:
    assert callable(getattr(seams.Converter, name, None)), _broke(
        "openai-agents", f"agents.models.chatcmpl_converter.Converter.{name}"
    )
    assert isinstance(seams.FAKE_RESPONSES_ID, str), _broke(
        "openai-agents", "agents.models.fake_id.FAKE_RESPONSES_ID"
    )


def test_structlog_plumbing_when_logged_through_stdlib_then_record_and_keys_as_expected() -> None:
    import logging

    import structlog

    seen: dict[str, Any] = {}

    def capture(logger: Any, name: str, event_dict: Any) -> Any:
        seen.update(event_dict)
        return "line"

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen["structlog_record"] = seams.is_structlog_record(record)
            self.format(record)

    handler = Capture()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[capture]))
    stdlib = logging.getLogger("seams-test")
    stdlib.addHandler(handler)
    stdlib.propagate = False
    try:
        logger = structlog.wrap_logger(
            stdlib,
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        logger.warning("hello")
        assert seen.get("structlog_record") is True, _broke(
            "structlog", "the record attribute that marks a structlog event (_logger)"
        )
        assert seen.keys() >= seams.STRUCTLOG_PLUMBING_KEYS, _broke(
            "structlog", "the keys ProcessorFormatter adds to the event dict"
        )
        seen.clear()
        stdlib.warning("from a library")
        assert seen.get("structlog_record") is False
    finally:
        stdlib.removeHandler(handler)


def test_identity_fast_path_when_installed_then_the_sdk_builds_its_keys_through_it() -> None:
    from agents import _run_state_agent_identity as identity
    from agents.run_internal import tool_use_tracker
    from agents.sandbox import runtime_session_manager

    seams.install_sdk_fast_paths()
    assert hasattr(identity._build_agent_identity_map, "__wrapped__")
    # The per-run callers reach the map through _build_agent_identity_keys_by_id, which must
    # still look it up as a module global (else the fast path is silently bypassed).
    names = identity._build_agent_identity_keys_by_id.__code__.co_names
    assert "_build_agent_identity_map" in names, _broke(
        "openai-agents", "_build_agent_identity_keys_by_id (no longer uses the identity map)"
    )
    for module in (tool_use_tracker, runtime_session_manager):
        assert module._build_agent_identity_keys_by_id is (
            identity._build_agent_identity_keys_by_id
        ), _broke("openai-agents", f"{module.__name__}'s agent identity keys")


def test_identity_fast_path_when_one_agent_then_the_same_map_as_the_sdk() -> None:
    from agents import Agent
    from agents import _run_state_agent_identity as identity

    seams.install_sdk_fast_paths()
    fast = identity._build_agent_identity_map
    sdk = fast.__wrapped__  # type: ignore[attr-defined]
    alone: Any = Agent(name="assistant", instructions="Be brief.")
    helper: Any = Agent(name="helper", instructions="Help.")
    leader: Any = Agent(name="assistant", instructions="Lead.", handoffs=[helper])
    as_tool: Any = Agent(
        name="outer", tools=[helper.as_tool(tool_name="ask", tool_description="Ask.")]
    )
    for agent in (alone, leader, as_tool):
        assert fast(agent) == sdk(agent), _broke(
            "openai-agents", f"the identity map of {agent.name!r} (fast path differs)"
        )
    assert fast(alone) == {"assistant": alone}
    assert set(fast(leader)) == {"assistant", "helper"}
    assert set(fast(as_tool)) == {"outer", "helper"}


def test_gather_fast_path_when_installed_then_every_gathering_module_uses_it() -> None:
    import importlib

    from agents.lifecycle import AgentHooksBase, RunHooksBase

    seams.install_sdk_fast_paths()
    codes = seams.empty_hook_codes()
    for hook in ("on_agent_start", "on_llm_start", "on_llm_end", "on_agent_end"):
        assert getattr(RunHooksBase, hook).__code__ in codes, _broke(
            "openai-agents", f"RunHooksBase.{hook} (no longer an empty coroutine)"
        )
    for hook in ("on_start", "on_end", "on_llm_start", "on_llm_end"):
        assert getattr(AgentHooksBase, hook).__code__ in codes, _broke(
            "openai-agents", f"AgentHooksBase.{hook} (no longer an empty coroutine)"
        )
    for name in seams.SDK_GATHERING_MODULES:
        gather = getattr(importlib.import_module(name), "gather_with_cancel", None)
        assert hasattr(gather, "__wrapped__"), _broke(
            "openai-agents", f"{name}.gather_with_cancel (imported differently)"
        )


@pytest.mark.anyio
async def test_gather_fast_path_when_only_empty_hooks_then_no_task_and_none_each() -> None:
    import asyncio

    from agents import Agent, RunHooks
    from agents.run_internal import run_loop

    seams.install_sdk_fast_paths()
    gather = run_loop.gather_with_cancel
    hooks: Any = RunHooks()
    agent: Any = Agent(name="a")
    tasks_before = len(asyncio.all_tasks())
    hook_call = hooks.on_agent_start(None, agent)
    assert await gather(hook_call, hooks.on_llm_end(None, agent, None)) == (None, None)
    assert await gather() == ()
    assert len(asyncio.all_tasks()) == tasks_before
    assert inspect.getcoroutinestate(hook_call) == inspect.CORO_CLOSED


@pytest.mark.anyio
async def test_gather_fast_path_when_a_hook_does_work_then_the_sdk_gather_runs_it() -> None:
    from agents import Agent, RunHooks
    from agents.run_internal import run_loop

    seams.install_sdk_fast_paths()
    calls: list[str] = []

    class Counting(RunHooks[Any]):
        async def on_agent_start(self, context: Any, agent: Any) -> None:
            calls.append(agent.name)

    async def value() -> int:
        return 7

    agent: Any = Agent(name="a")
    gather = run_loop.gather_with_cancel
    assert await gather(
        Counting().on_agent_start(None, agent), RunHooks().on_llm_start(None, agent, None, [])
    ) == (None, None)
    assert calls == ["a"]
    assert await gather(value(), RunHooks().on_agent_start(None, agent)) == (7, None)


@pytest.mark.anyio
async def test_gather_fast_path_when_static_prompts_then_no_task_and_the_sdk_values() -> None:
    import asyncio

    from agents import Agent
    from agents.run_internal import run_loop

    seams.install_sdk_fast_paths()
    gather = run_loop.gather_with_cancel
    sdk_gather = gather.__wrapped__  # type: ignore[attr-defined]
    for agent in (Agent(name="a", instructions="Be brief."), Agent(name="b")):
        tasks_before = asyncio.all_tasks()
        fast = await gather(agent.get_system_prompt(None), agent.get_prompt(None))  # type: ignore[arg-type]
        assert asyncio.all_tasks() <= tasks_before  # no task was made
        sdk = await sdk_gather(agent.get_system_prompt(None), agent.get_prompt(None))  # type: ignore[arg-type]
        assert fast == sdk == (agent.instructions, None), _broke(
            "openai-agents", "Agent.get_system_prompt/get_prompt for string instructions"
        )


@pytest.mark.anyio
async def test_gather_fast_path_when_instructions_a_function_then_the_sdk_gather_runs_them() -> (
    None
):
    from agents import Agent
    from agents.run_internal import run_loop

    seams.install_sdk_fast_paths()
    called: list[str] = []

    def instructions(context: Any, agent: Any) -> str:
        called.append(agent.name)
        return "dynamic"

    agent: Any = Agent(name="d", instructions=instructions)
    call = agent.get_system_prompt(None)
    assert not seams._is_static_prompt_call(call, seams.static_prompt_codes())
    call.close()
    gather = run_loop.gather_with_cancel
    assert await gather(agent.get_system_prompt(None), agent.get_prompt(None)) == ("dynamic", None)
    assert called == ["d"]


def test_tool_plan_fast_path_when_installed_then_turn_resolution_runs_plans_through_it() -> None:
    import dataclasses
    import inspect as inspecting

    from agents.run_internal import tool_planning, turn_resolution

    seams.install_sdk_fast_paths()
    fast = turn_resolution._execute_tool_plan
    assert getattr(fast, "__wrapped__", None) is tool_planning._execute_tool_plan, _broke(
        "openai-agents", "turn_resolution._execute_tool_plan (imported differently)"
    )
    parameters = inspecting.signature(tool_planning._execute_tool_plan).parameters
    assert {"plan", "parallel"} <= set(parameters), _broke(
        "openai-agents", "_execute_tool_plan(plan=..., parallel=...)"
    )
    fields = {f.name for f in dataclasses.fields(tool_planning.ToolExecutionPlan)}
    not_work = {"pending_interruptions", "approved_mcp_responses", "mcp_requests_with_callback"}
    assert fields == set(seams.TOOL_PLAN_WORK) | not_work, _broke(
        "openai-agents", "ToolExecutionPlan's fields (a new kind of tool work?)"
    )


@pytest.mark.anyio
async def test_tool_plan_fast_path_when_plan_has_no_work_then_sequential_else_untouched() -> None:
    from agents.run_internal.tool_planning import ToolExecutionPlan

    seen: list[dict[str, Any]] = []

    async def sdk_execute(**kwargs: Any) -> str:
        seen.append(kwargs)
        return "ran"

    fast = seams._empty_plans_in_sequence(sdk_execute)
    empty = ToolExecutionPlan()
    busy = ToolExecutionPlan(shell_calls=[object()])  # type: ignore[list-item]
    assert await fast(plan=empty, hooks=None) == "ran"
    assert await fast(plan=busy, hooks=None) == "ran"
    assert seen == [
        {"plan": empty, "hooks": None, "parallel": False},
        {"plan": busy, "hooks": None},
    ]


SQLITE_SESSION_INTERNALS = (
    "_acquire_file_lock",
    "_release_file_lock",
    "_get_connection",
    "_invalidate_connection",
    "_check_not_closed",
    "_write_connection",
    "_insert_items",
)


@pytest.mark.parametrize("name", SQLITE_SESSION_INTERNALS)
def test_sqlite_session_internals_when_looked_up_then_present(name: str) -> None:
    from agents import SQLiteSession

    assert callable(getattr(SQLiteSession, name, None)), _broke(
        "openai-agents", f"SQLiteSession.{name} (chat.seams.SQLiteSessionOnConnections)"
    )


@pytest.mark.anyio
async def test_sqlite_session_on_connections_when_used_then_same_rows_as_the_sdk_session(
    tmp_path: Path,
) -> None:
    import sqlite3
    import threading

    from agents import SQLiteSession

    path = tmp_path / "c.db"
    SQLiteSession("setup", path).close()
    lock_path, lock = seams.sqlite_session_file_lock(path)
    connections: dict[int, sqlite3.Connection] = {}

    def connection() -> sqlite3.Connection:
        ident = threading.get_ident()
        if ident not in connections:
            connections[ident] = sqlite3.connect(path, check_same_thread=False)
        return connections[ident]

    try:
        ours = seams.SQLiteSessionOnConnections(
            "c1",
            path=path,
            lock=lock,
            sessions_table="agent_sessions",
            messages_table="agent_messages",
            connection=connection,
            forget=lambda conn: None,
        )
        items: list[Any] = [{"role": "user", "content": "hi"}]
        await ours.add_items(items)
        ours.add_items_here([{"role": "assistant", "content": "hello"}])
        expected = [*items, {"role": "assistant", "content": "hello"}]
        assert await ours.get_items() == expected, _broke(
            "openai-agents", "what SQLiteSession's methods read and write"
        )
        theirs = SQLiteSession("c1", path)  # the SDK's own session on the same file
        try:
            assert await theirs.get_items() == expected
        finally:
            theirs.close()
        assert await ours.pop_item() == expected[-1]
        await ours.clear_session()
        assert await ours.get_items() == []
    finally:
        for conn in connections.values():
            conn.close()
        seams.release_sqlite_session_file_lock(lock_path)


def test_redis_session_keys_when_compared_then_the_sdk_session_uses_them() -> None:
    from agents.extensions.memory import RedisSession
    from redis.asyncio import Redis

    session = RedisSession("c1", redis_client=Redis(), key_prefix="p:session")
    keys = [session._session_key, session._messages_key, session._counter_key]
    assert seams.redis_session_keys("p:session", "c1") == keys, _broke(
        "openai-agents", "RedisSession's key layout (chat.seams.redis_session_keys)"
    )


def test_sandbox_cleanup_release_when_installed_then_results_clean_up_through_it() -> None:
    from agents.result import RunResultStreaming

    seams.install_sdk_fast_paths()
    installed = RunResultStreaming._run_sandbox_cleanup
    assert hasattr(installed, "__wrapped__"), _broke(
        "openai-agents", "RunResultStreaming._run_sandbox_cleanup (gone or renamed)"
    )
    fields = {f.name for f in dataclasses.fields(RunResultStreaming)}
    assert {"_sandbox_cleanup", "_sandbox_cleanup_task"} <= fields, _broke(
        "openai-agents", "RunResultStreaming's _sandbox_cleanup fields"
    )


@pytest.mark.anyio
async def test_sandbox_cleanup_release_when_run_ends_then_result_freed_without_collector() -> None:
    import gc
    import weakref

    from agents import Agent, Runner

    from tests.unit.run.test_consumer import ScriptModel

    seams.install_sdk_fast_paths()
    agent: Any = Agent(name="t", instructions="Be brief.", model=ScriptModel(["a", "b"]))
    gc.collect()
    gc.disable()  # what the run leaves must go by reference counting alone
    try:
        result = Runner.run_streamed(agent, "hi", run_config=RunConfig(tracing_disabled=True))
        async for _ in result.stream_events():
            pass
        assert result._sandbox_cleanup is None, _broke(
            "openai-agents", "when the streamed result runs its sandbox cleanup"
        )
        freed = weakref.ref(result)
        del result
        assert freed() is None, _broke(
            "openai-agents", "what refers back to a streamed result (a new reference cycle)"
        )
    finally:
        gc.enable()


@pytest.mark.anyio
async def test_sandbox_cleanup_release_when_pending_or_cancelled_then_closure_kept() -> None:
    import asyncio

    class Result:
        def __init__(self, task: asyncio.Future[None] | None) -> None:
            self._sandbox_cleanup = object()
            self._sandbox_cleanup_task = task

    async def sdk_cleanup(result: Any) -> None:
        return None

    release = seams._cleanup_then_release(sdk_cleanup)
    loop = asyncio.get_running_loop()
    never_ran = Result(None)
    cancelled = Result(loop.create_future())
    assert cancelled._sandbox_cleanup_task is not None
    cancelled._sandbox_cleanup_task.cancel()
    done = Result(loop.create_future())
    assert done._sandbox_cleanup_task is not None
    done._sandbox_cleanup_task.set_result(None)
    for result in (never_ran, cancelled, done):
        await release(result)
    assert never_ran._sandbox_cleanup is not None
    assert cancelled._sandbox_cleanup is not None  # a later call re-raises the cancellation
    assert done._sandbox_cleanup is None
