"""Imports point one way: no cycles (lazy imports included), and each room knows only those below.

From the top: the HTTP layer (app, chat.http, and chat.state which wires the parts), then the run
owner (chat.service), the conversations (chat.conversations), the stream log (chat.streams), the
run (chat.run), the models (chat.models); events, errors and settings import nothing of ours.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chat", "logging_config")
HTTP = ("starlette", "sse_starlette", "uvicorn", "chat.http", "chat.state", "app")
# (rooms, what they must not import, why): each room below the HTTP layer, and below each other.
RULES = (
    (
        (
            "chat.service",
            "chat.conversations",
            "chat.models",
            "chat.run",
            "chat.streams",
            "chat.events",
            "chat.bodies",
            "chat.requests",
            "chat.metrics",
        ),
        HTTP,
        "only the HTTP layer may",
    ),
    (
        ("chat.conversations", "chat.models", "chat.run", "chat.streams"),
        ("chat.service",),
        "the run owner sits above what it owns",
    ),
    (("chat.models",), ("chat.run", "chat.streams"), "the models sit below the run and the log"),
    (("chat.run",), ("chat.streams",), "the run sits below the stream log that records it"),
)
# Leaves: they import nothing of ours.
LEAVES = ("chat.events", "chat.errors", "chat.settings", "chat.models.errors")
# The one module that may load llama.cpp: the worker, in its own process. It starts with nothing
# of the server's but the frames it speaks.
WORKER = "chat.models.local.worker"
WORKER_MAY_IMPORT = ("chat.models.local.protocol",)


def module_files() -> dict[str, Path]:
    files = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


FILES = module_files()
GRAPH = {name: {m for m in imports_of(path) if m in FILES} for name, path in FILES.items()}


def _within(name: str, rooms: tuple[str, ...]) -> bool:
    return any(
        name == room or name.startswith(room + ".") or name.startswith(room + "_") for room in rooms
    )


def test_our_modules_when_imports_followed_then_no_cycle() -> None:
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        path.append(name)
        for dependency in sorted(GRAPH[name]):
            visit(dependency)
        path.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)


@pytest.mark.parametrize(
    ("name", "forbidden", "why"),
    [
        (name, forbidden, why)
        for rooms, forbidden, why in RULES
        for name in sorted(FILES)
        if _within(name, rooms)
    ],
)
def test_lower_room_when_imports_read_then_nothing_from_above(
    name: str, forbidden: tuple[str, ...], why: str
) -> None:
    above = sorted(m for m in imports_of(FILES[name]) if _within(m, forbidden))
    assert not above, f"{name} imports {above}: {why}"


@pytest.mark.parametrize("name", sorted(FILES))
def test_server_module_when_imports_read_then_never_llama_cpp(name: str) -> None:
    if name == WORKER:
        return
    llama = sorted(m for m in imports_of(FILES[name]) if _within(m, ("llama_cpp",)))
    assert not llama, f"{name} imports {llama}: llama.cpp runs only in {WORKER}'s process"


def test_worker_when_imports_read_then_only_the_protocol_of_ours() -> None:
    ours = sorted(m for m in imports_of(FILES[WORKER]) if _within(m, (*PACKAGES, "app")))
    allowed = {*WORKER_MAY_IMPORT, "chat.models.local"}  # "from chat.models.local import protocol"
    assert set(ours) <= allowed, f"{WORKER} imports {ours}: its process must not load the server"


@pytest.mark.parametrize("name", LEAVES)
def test_leaf_when_imports_read_then_nothing_of_ours(name: str) -> None:
    ours = sorted(m for m in imports_of(FILES[name]) if _within(m, (*PACKAGES, "app")))
    assert not ours, f"{name} imports {ours}"
