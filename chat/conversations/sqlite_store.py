"""Conversations in one SQLite file: the SDK's ``SQLiteSession`` tables plus our record table.

The record table (``chat_conversations``) holds one row per conversation: owner hash, turns and
bytes saved, the time of the last turn, and the lock (token and expiry) of the run holding it.
Claiming is one ``BEGIN IMMEDIATE`` transaction, so two workers on the same file cannot both
win. Times are wall-clock seconds: every process on the machine agrees on them.

Our own statements go through one connection per process, in a worker thread, behind a lock;
``synchronous=NORMAL`` (WAL) makes a commit cheap and loses at most the last commits on a power
cut, never the file's integrity (``sqlite_file.py``: the file, its tables, that connection). The
SDK's sessions run on connections the store keeps, one per thread, with the same settings
(``sqlite_sessions.py``).
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from agents.memory import Session

from chat.conversations.sqlite_file import connect, prepare_data_dir
from chat.conversations.sqlite_sessions import MESSAGES_TABLE, StoreSessions
from chat.conversations.store import (
    Claim,
    ConversationBusy,
    ConversationFull,
    ConversationNotFound,
    Limits,
    StoreUnavailable,
)
from chat.conversations.turns import decode_items
from chat.seams import SQLiteSessionOnConnections

T = TypeVar("T")

# Expired conversations removed per purge pass; the next pass takes the rest.
PURGE_BATCH: Final = 200


class SQLiteConversationStore:
    """``ConversationStore`` on one SQLite file shared by every worker of the machine."""

    def __init__(
        self, path: Path, limits: Limits, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = connect(path)
        self._sessions = StoreSessions(path)

    @classmethod
    async def open(cls, data_dir: str | Path, limits: Limits) -> SQLiteConversationStore:
        """Create the directory and the tables (in a thread: it is file I/O)."""

        def build() -> SQLiteConversationStore:
            return cls(prepare_data_dir(data_dir), limits)

        return await asyncio.to_thread(build)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._conn)

        try:
            return await asyncio.to_thread(locked)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"conversation database: {type(exc).__name__}") from None

    async def open_session(self, conversation_id: str) -> Session:
        return self._sessions.session(conversation_id)

    async def close_session(self, session: Session) -> None:
        return None  # its connections are the store's (sqlite_sessions.py)

    async def claim(
        self, conversation_id: str, owner: str, add_bytes: int, history_limit: int = 0
    ) -> Claim:
        limits = self.limits
        token = secrets.token_hex(16)

        def claim(conn: sqlite3.Connection) -> Claim:
            now = self._clock()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT owner, turns, bytes, updated_at, lock_expires_at"
                    " FROM chat_conversations WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()
                stale = False
                turns = size = 0
                if row is not None:
                    row_owner, turns, size, updated_at, lock_expires_at = row
                    if lock_expires_at > now:
                        if row_owner != owner:
                            raise ConversationNotFound(conversation_id)
                        raise ConversationBusy(lock_expires_at - now)
                    if updated_at + limits.ttl_s <= now:
                        # Expired, not purged yet: it is gone, and this run starts it anew.
                        stale, turns, size = True, 0, 0
                    elif row_owner != owner:
                        raise ConversationNotFound(conversation_id)
                _check_limits(limits, turns, size, add_bytes)
                expires = now + limits.lock_ttl_s
                if row is None:
                    conn.execute(
                        "INSERT INTO chat_conversations (conversation_id, owner, updated_at,"
                        " lock_token, lock_expires_at) VALUES (?, ?, ?, ?, ?)",
                        (conversation_id, owner, now, token, expires),
                    )
                else:
                    # A reclaimed expired row keeps its old time until its first turn is saved,
                    # so it reads as gone until then.
                    conn.execute(
                        "UPDATE chat_conversations SET owner = ?, turns = ?, bytes = ?,"
                        " lock_token = ?, lock_expires_at = ? WHERE conversation_id = ?",
                        (owner, turns, size, token, expires, conversation_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            fresh = row is None or stale
            # Read in the same trip to the thread, after the commit: the lock is ours now.
            history = _newest_items(conn, conversation_id, history_limit) if not fresh else []
            return Claim(token=token, fresh=fresh, stale=stale, turns=turns, history=history)

        return await self._run(claim)

    async def renew(self, locks: list[tuple[str, str]]) -> list[str]:
        if not locks:
            return []

        def renew(conn: sqlite3.Connection) -> list[str]:
            expires = self._clock() + self.limits.lock_ttl_s
            lost: list[str] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for conversation_id, token in locks:
                    cursor = conn.execute(
                        "UPDATE chat_conversations SET lock_expires_at = ?"
                        " WHERE conversation_id = ? AND lock_token = ?",
                        (expires, conversation_id, token),
                    )
                    if cursor.rowcount == 0:
                        lost.append(conversation_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return lost

        return await self._run(renew)

    async def finish(
        self, conversation_id: str, token: str, *, owner: str, turns: int, add_bytes: int
    ) -> bool:
        return await self._run(
            lambda conn: self._finish(conn, conversation_id, token, turns, add_bytes)
        )

    def _finish(
        self, conn: sqlite3.Connection, conversation_id: str, token: str, turns: int, add_bytes: int
    ) -> bool:
        cursor = conn.execute(
            "UPDATE chat_conversations SET turns = turns + ?, bytes = bytes + ?,"
            " updated_at = ?, lock_token = NULL, lock_expires_at = 0"
            " WHERE conversation_id = ? AND lock_token = ?",
            (turns, add_bytes, self._clock(), conversation_id, token),
        )
        return cursor.rowcount == 1

    async def save(
        self,
        conversation_id: str,
        token: str,
        session: Session,
        items: list[Any],
        *,
        owner: str,
        turns: int,
        add_bytes: int,
    ) -> bool:
        assert isinstance(session, SQLiteSessionOnConnections), "a session of this store"

        def save(conn: sqlite3.Connection) -> bool:
            session.add_items_here(items)
            return self._finish(conn, conversation_id, token, turns, add_bytes)

        return await self._run(save)

    async def release(self, conversation_id: str, token: str) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE chat_conversations SET lock_token = NULL, lock_expires_at = 0"
                " WHERE conversation_id = ? AND lock_token = ?",
                (conversation_id, token),
            )

        await self._run(release)

    async def owned(self, conversation_id: str, owner: str) -> bool:
        def owned(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT owner, updated_at FROM chat_conversations WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            return bool(
                row is not None and row[0] == owner and row[1] + self.limits.ttl_s > self._clock()
            )

        return await self._run(owned)

    async def delete(self, conversation_id: str, owner: str) -> None:
        token = secrets.token_hex(16)

        def lock(conn: sqlite3.Connection) -> None:
            now = self._clock()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT owner, updated_at, lock_expires_at FROM chat_conversations"
                    " WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()
                if row is None or row[0] != owner or row[1] + self.limits.ttl_s <= now:
                    raise ConversationNotFound(conversation_id)
                if row[2] > now:
                    raise ConversationBusy(row[2] - now)
                conn.execute(
                    "UPDATE chat_conversations SET lock_token = ?, lock_expires_at = ?"
                    " WHERE conversation_id = ?",
                    (token, now + self.limits.lock_ttl_s, conversation_id),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(lock)
        await self._remove(conversation_id, token)

    async def _remove(self, conversation_id: str, token: str) -> None:
        """Clear the items, then the record: a record never lags behind its items."""
        session = await self.open_session(conversation_id)
        try:
            await session.clear_session()
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"conversation database: {type(exc).__name__}") from None
        finally:
            await self.close_session(session)

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM chat_conversations WHERE conversation_id = ? AND lock_token = ?",
                (conversation_id, token),
            )

        await self._run(forget)

    async def secret(self) -> bytes:
        def secret(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO chat_secrets (name, value) VALUES ('owner_key', ?)",
                (secrets.token_bytes(32),),
            )
            row = conn.execute("SELECT value FROM chat_secrets WHERE name = 'owner_key'").fetchone()
            return bytes(row[0])

        return await self._run(secret)

    async def purge_expired(self) -> int:
        limits = self.limits

        def pick(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            now = self._clock()
            cutoff = now - limits.ttl_s
            picked: list[tuple[str, str]] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT conversation_id FROM chat_conversations"
                    " WHERE updated_at <= ? AND lock_expires_at <= ? LIMIT ?",
                    (cutoff, now, PURGE_BATCH),
                ).fetchall()
                for (conversation_id,) in rows:
                    # Locked like a run, so a run cannot start on it while it is being removed.
                    token = secrets.token_hex(16)
                    conn.execute(
                        "UPDATE chat_conversations SET lock_token = ?, lock_expires_at = ?"
                        " WHERE conversation_id = ?",
                        (token, now + limits.lock_ttl_s, conversation_id),
                    )
                    picked.append((conversation_id, token))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return picked

        picked = await self._run(pick)
        for conversation_id, token in picked:
            await self._remove(conversation_id, token)
        return len(picked)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                self._conn.close()
            self._sessions.close()

        await asyncio.to_thread(close)


def _newest_items(conn: sqlite3.Connection, conversation_id: str, limit: int) -> list[Any]:
    """The newest ``limit`` items of the SDK session's table, oldest first, as ``get_items``
    reads them (rows that are not JSON skipped; we never write such rows)."""
    if limit <= 0:
        return []
    rows = conn.execute(
        f"SELECT message_data FROM {MESSAGES_TABLE} WHERE session_id = ? ORDER BY id DESC LIMIT ?",
        (conversation_id, limit),
    ).fetchall()
    return decode_items(data for (data,) in reversed(rows))


def _check_limits(limits: Limits, turns: int, size: int, add_bytes: int) -> None:
    if turns >= limits.max_turns:
        raise ConversationFull("turns", limits.max_turns)
    if size + add_bytes > limits.max_bytes:
        raise ConversationFull("bytes", limits.max_bytes)
