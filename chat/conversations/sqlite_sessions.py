"""The SDK's ``SQLiteSession`` on connections the store keeps, one per thread, for every session.

A plain ``SQLiteSession`` per turn opened a connection to create the tables, then one per worker
thread it ran on (each setting WAL), and closed them all at the end: ~0.5 ms of the turn, most of
the SQLite cost a py-spy profile showed. ``StoreSessions`` makes the tables once and hands out
sessions that run the SDK's own code (its SQL, item format, locking) on the store's per-thread
connections, so a session costs nothing to open or close. It sets the attributes the SDK's
methods use (openai-agents 0.24: ``_lock``, ``_get_connection``): the conversation tests run every
method the store uses on it, so an SDK change that breaks this fails there.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final

from agents import SQLiteSession
from agents.memory import SessionSettings

from chat.conversations.sqlite_file import open_connection

# SQLiteSession's default table names, which its sessions in this file use.
SESSIONS_TABLE: Final = "agent_sessions"
MESSAGES_TABLE: Final = "agent_messages"


class StoreSessions:
    """``SQLiteSession``s over one file, sharing this object's connections, one per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The SDK's per-file lock, the one its own sessions on this file take: held for our life.
        self._lock_path, self.lock = SQLiteSession._acquire_file_lock(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        SQLiteSession("setup", path).close()  # the SDK's tables, created its way, once

    def session(self, session_id: str) -> SQLiteSession:
        """The conversation's session; nothing to open, nothing to close."""
        return SharedSQLiteSession(session_id, self)

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
        SQLiteSession._release_file_lock(self._lock_path)


class SharedSQLiteSession(SQLiteSession):
    """A ``SQLiteSession`` whose connections belong to ``StoreSessions``."""

    def __init__(self, session_id: str, sessions: StoreSessions) -> None:
        # Not SQLiteSession.__init__: it opens a connection and creates the tables each time.
        self.session_id = session_id
        self.session_settings = SessionSettings()
        self.db_path = sessions.path
        self.sessions_table = SESSIONS_TABLE
        self.messages_table = MESSAGES_TABLE
        self._sessions = sessions
        self._lock = sessions.lock
        self._is_memory_db = False
        self._closed = False

    def _get_connection(self) -> sqlite3.Connection:
        self._check_not_closed()
        return self._sessions.connection()

    def _invalidate_connection(self, conn: sqlite3.Connection) -> None:
        # A connection that could not roll back: the SDK would close it and forget it; it is
        # the store's, so the store's thread gets a new one instead.
        self._sessions.forget(conn)

    def add_items_here(self, items: list[Any]) -> None:
        """``add_items`` in the calling thread (the SDK's own insert and commit): the store saves
        a turn and its record in one trip to a worker thread."""
        if not items:
            return
        with self._write_connection() as conn:
            self._insert_items(conn, items)
            conn.commit()

    def close(self) -> None:
        """Nothing to release: the connections are the store's."""
