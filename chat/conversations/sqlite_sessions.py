"""The SDK's ``SQLiteSession`` on connections the store keeps, one per thread, for every session.

A plain ``SQLiteSession`` per turn opened a connection to create the tables, then one per worker
thread it ran on (each setting WAL), and closed them all at the end: ~0.5 ms of the turn, most of
the SQLite cost a py-spy profile showed. ``StoreSessions`` makes the tables once and hands out
sessions that run the SDK's own code (its SQL, item format, locking) on the store's per-thread
connections, so a session costs nothing to open or close. It sets the attributes the SDK's
methods use: that session class and the SDK's file lock are in ``chat.seams``, whose tests say
which SDK internal moved; the conversation tests run every method the store uses on it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Final

from agents import SQLiteSession

from chat.conversations.sqlite_file import open_connection
from chat.seams import (
    SQLiteSessionOnConnections,
    release_sqlite_session_file_lock,
    sqlite_session_file_lock,
)

# SQLiteSession's default table names, which its sessions in this file use.
SESSIONS_TABLE: Final = "agent_sessions"
MESSAGES_TABLE: Final = "agent_messages"


class StoreSessions:
    """``SQLiteSession``s over one file, sharing this object's connections, one per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The SDK's per-file lock, the one its own sessions on this file take: held for our life.
        self._lock_path, self.lock = sqlite_session_file_lock(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        SQLiteSession("setup", path).close()  # the SDK's tables, created its way, once

    def session(self, session_id: str) -> SQLiteSessionOnConnections:
        """The conversation's session; nothing to open, nothing to close."""
        return SQLiteSessionOnConnections(
            session_id,
            path=self.path,
            lock=self.lock,
            sessions_table=SESSIONS_TABLE,
            messages_table=MESSAGES_TABLE,
            connection=self.connection,
            forget=self.forget,
        )

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_connection(self.path, autocommit=False)
            with self._all_lock:
                self._all.append(conn)
        return conn

    def forget(self, conn: sqlite3.Connection) -> None:
        """Close a connection left unusable; its thread opens a new one on next use."""
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        with self._all_lock:
            if conn in self._all:
                self._all.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn

    def close(self) -> None:
        """Close every connection (at shutdown, when no session is in use)."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        release_sqlite_session_file_lock(self._lock_path)
