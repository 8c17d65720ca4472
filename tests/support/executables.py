"""Finding a server executable the tests need (redis-server, nginx): skip locally, fail in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

import pytest


def find_executable(candidates: Iterable[str]) -> str | None:
    """The first candidate on PATH (or an absolute path that exists), or None."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_executable(candidates: Iterable[str], *, package: str, name: str) -> str:
    """The executable; otherwise fail under CI and skip elsewhere, with how to install it."""
    path = find_executable(candidates)
    if path is not None:
        return path
    reason = f"{name} is not installed (apt-get install -y {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)
