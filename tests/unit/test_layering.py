"""Imports point one way: no cycles (lazy imports included), and the lower rooms know no HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chat", "logging_config")
# Rooms below the HTTP layer: they must not know Starlette, sse-starlette or our HTTP modules.
LOWER = ("chat.models", "chat.run", "chat.streams", "chat.events")
HTTP = ("starlette", "sse_starlette", "uvicorn", "chat.endpoints", "app")
# Leaves: they import nothing of ours.
LEAVES = ("chat.events", "chat.errors", "chat.settings", "chat.models.errors")


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


@pytest.mark.parametrize("name", sorted(n for n in FILES if _within(n, LOWER)))
def test_lower_room_when_imports_read_then_no_http(name: str) -> None:
    http = sorted(m for m in imports_of(FILES[name]) if _within(m, HTTP))
    assert not http, f"{name} imports {http}: only the HTTP layer may"


@pytest.mark.parametrize("name", LEAVES)
def test_leaf_when_imports_read_then_nothing_of_ours(name: str) -> None:
    ours = sorted(m for m in imports_of(FILES[name]) if _within(m, (*PACKAGES, "app")))
    assert not ours, f"{name} imports {ours}"
