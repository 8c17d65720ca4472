"""Every setting the code reads is in the README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from chat.settings import SETTINGS_TABLE

ROOT = Path(__file__).resolve().parents[2]
# Where the service's code lives; tests and benchmarks set variables, they do not read settings.
CODE = [
    ROOT / "app.py",
    *sorted((ROOT / "chat").rglob("*.py")),
    *(ROOT / "logging_config").rglob("*.py"),
]
VARIABLE = re.compile(
    r"""["'](CHAT_[A-Z0-9_]+|OPENAI_[A-Z0-9_]+|REDIS_URL|PROMETHEUS_MULTIPROC_DIR)["']"""
)
# Named in the code but not settings: the Agents SDK's own flags, which the service sets.
NOT_SETTINGS = frozenset({"OPENAI_AGENTS_DONT_LOG_MODEL_DATA", "OPENAI_AGENTS_DONT_LOG_TOOL_DATA"})


def variables_in_code() -> set[str]:
    """Every CHAT_*, OPENAI_*, REDIS_URL or PROMETHEUS_MULTIPROC_DIR string literal in the code."""
    found = set(SETTINGS_TABLE)
    for path in CODE:
        found.update(VARIABLE.findall(path.read_text()))
    return found - NOT_SETTINGS


def variables_in_readme() -> set[str]:
    """The variables named in the first column of the README's configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_readme_when_read_then_table_has_every_setting_the_code_reads() -> None:
    missing = variables_in_code() - variables_in_readme()
    assert not missing, f"add to README.md's configuration table: {sorted(missing)}"


def test_readme_when_read_then_table_names_no_setting_the_code_ignores() -> None:
    stale = variables_in_readme() - variables_in_code()
    assert not stale, f"README.md's configuration table names unread variables: {sorted(stale)}"


def test_scan_when_run_then_finds_settings_outside_the_settings_table() -> None:
    # The scan is what catches a variable read by hand, like PROMETHEUS_MULTIPROC_DIR.
    assert {"PROMETHEUS_MULTIPROC_DIR"} <= (variables_in_code() - set(SETTINGS_TABLE))
