"""The conversation database file: where it lives, checking it can be written, its tables."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Final

FILE_NAME: Final = "conversations.sqlite3"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS chat_conversations (
    conversation_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    lock_token TEXT,
    lock_expires_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS chat_conversations_updated_at ON chat_conversations (updated_at);
CREATE TABLE IF NOT EXISTS chat_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def database_path(data_dir: str | Path) -> Path:
    """The conversation file inside ``data_dir``."""
    return Path(data_dir).expanduser() / FILE_NAME


def prepare_data_dir(data_dir: str | Path) -> Path:
    """Create ``data_dir`` and check that the database in it can be written; OSError if not."""
    directory = Path(data_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    # A probe rather than os.access: root passes access checks on a read-only mount.
    probe = directory / f".write-probe-{secrets.token_hex(4)}"
    probe.touch()
    probe.unlink()
    if path.exists():
        with path.open("ab"):
            pass
    return path


def open_connection(path: Path, *, autocommit: bool) -> sqlite3.Connection:
    """A connection to the file: WAL, NORMAL sync, a busy timeout.

    ``autocommit`` for ours (explicit ``BEGIN IMMEDIATE``); the SDK's session code relies on
    the sqlite3 module's implicit transactions and commits itself.
    """
    conn = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None if autocommit else ""
    )
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def connect(path: Path) -> sqlite3.Connection:
    """Our one connection to the file, and our tables."""
    conn = open_connection(path, autocommit=True)
    conn.executescript(SCHEMA)
    return conn
