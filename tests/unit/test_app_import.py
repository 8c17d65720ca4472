"""Importing ``app`` has no side effects; ``uvicorn app:app`` still builds the app on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_when_settings_are_bad_then_nothing_happens() -> None:
    # A bad setting and an unreachable Redis: an import that read them would exit 2.
    result = _python(
        "import logging, app; from app import create_app; "
        "print(logging.getLogger().handlers == [], callable(create_app))",
        CHAT_MAX_BODY_BYTES="lots",
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
    assert result.stderr == ""


def test_app_attribute_when_used_then_built_from_the_environment_once() -> None:
    result = _python(
        "import app; first = app.app; print(type(first).__name__, app.app is first)",
        CHAT_BACKEND="fake",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["Starlette", "True"]


def test_app_attribute_when_setting_is_bad_then_one_line_and_exit_2() -> None:
    result = _python("import app; app.app", CHAT_MAX_BODY_BYTES="lots")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("configuration error: CHAT_MAX_BODY_BYTES")
    assert len(result.stderr.strip().splitlines()) == 1
