"""The order journal: a durable signal_id -> order record (SQLite), written before an order goes
to the broker and after it comes back, so a redelivered signal (at-least-once) never produces a
second order, even across a crash and restart.

Where it lives: `execution.journal_path` (default ~/.local/state/kstrade/execution/orders.sqlite3).
One execution process per account: the journal takes an exclusive lock (`orders.sqlite3.lock`)
and a second process on it fails at start. (Two processes in the consumer group would each keep
their own guard, and each could spend the whole loss headroom.) The lock is POSIX only.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class JournalLocked(RuntimeError):
    """Another process holds this journal (one execution process per account)."""


class JournalState(StrEnum):
    #: Written before the broker call: the order may or may not have reached the broker.
    SUBMITTING = "SUBMITTING"
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    #: The broker could not say whether the order was placed, even after reconciling: never resent.
    UNCERTAIN = "UNCERTAIN"
    #: No order: the signal expired, a guardrail refused it, or the size was zero.
    DROPPED = "DROPPED"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    signal_id: str
    client_order_id: str
    state: JournalState
    symbol: str
    reason: str
    #: The messages emitted for this signal (JSON of Order/Execution), re-emitted on redelivery.
    messages: list[dict[str, Any]]
    attempts: int
    created_ns: int = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    signal_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    symbol TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    messages TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS guard_state (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS controls (
    command_id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    issued_ns INTEGER NOT NULL,
    applied_ns INTEGER NOT NULL,
    state TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ControlEntry:
    """An operator command as applied: by whom, why, when, and the trading state it left."""

    command_id: str
    action: str
    issued_by: str
    reason: str
    issued_ns: int
    applied_ns: int
    state: str


class OrderJournal:
    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock(self.path.with_name(self.path.name + ".lock"))
        # autocommit mode: every statement is durable when it returns (synchronous=FULL). Not
        # durable (a replay's run directory), SQLite leaves the syncing to the OS: the same
        # statements, nothing waits for the disk.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        # Signals whose order is UNCERTAIN, kept in memory so the stage's periodic reconcile scan
        # costs nothing while there are none. This process alone writes the journal (the lock),
        # so the index follows every `record`; it is rebuilt from the table on every open.
        self._uncertain: set[str] = {
            row[0]
            for row in self._db.execute("SELECT signal_id FROM orders WHERE state = ?", (JournalState.UNCERTAIN.value,))
        }

    @staticmethod
    def _take_lock(lock_path: Path) -> int | None:
        if sys.platform == "win32":
            return None
        import fcntl
        import os

        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"order journal {lock_path.with_suffix('')} is in use by another execution process: "
                "run one execution process per account"
            ) from None
        return fd

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            import os

            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def get(self, signal_id: str) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT signal_id, client_order_id, state, symbol, reason, messages, attempts, created_ns FROM orders "
            "WHERE signal_id = ?",
            (signal_id,),
        ).fetchone()
        return None if row is None else self._entry(row)

    def by_client_order_id(self, client_order_id: str) -> JournalEntry | None:
        row = self._db.execute(
            "SELECT signal_id, client_order_id, state, symbol, reason, messages, attempts, created_ns FROM orders "
            "WHERE client_order_id = ?",
            (client_order_id,),
        ).fetchone()
        return None if row is None else self._entry(row)

    def in_state(self, state: JournalState) -> list[JournalEntry]:
        if state is JournalState.UNCERTAIN and not self._uncertain:
            return []  # the common case, without a query
        rows = self._db.execute(
            "SELECT signal_id, client_order_id, state, symbol, reason, messages, attempts, created_ns FROM orders "
            "WHERE state = ? ORDER BY created_ns",
            (state.value,),
        ).fetchall()
        return [self._entry(r) for r in rows]

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> JournalEntry:
        return JournalEntry(row[0], row[1], JournalState(row[2]), row[3], row[4], json.loads(row[5]), row[6], row[7])

    def record(
        self,
        signal_id: str,
        client_order_id: str,
        state: JournalState,
        symbol: str,
        now_ns: int,
        *,
        reason: str = "",
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        """Insert or move a signal's entry (messages accumulate)."""
        old = self.get(signal_id)
        kept = (old.messages if old is not None else []) + (messages or [])
        self._db.execute(
            "INSERT INTO orders (signal_id, client_order_id, state, symbol, reason, messages, created_ns, updated_ns) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(signal_id) DO UPDATE SET state = excluded.state, "
            "reason = excluded.reason, messages = excluded.messages, updated_ns = excluded.updated_ns",
            (signal_id, client_order_id, state.value, symbol, reason, json.dumps(kept), now_ns, now_ns),
        )
        if state is JournalState.UNCERTAIN:
            self._uncertain.add(signal_id)
        else:
            self._uncertain.discard(signal_id)

    def count_attempt(self, signal_id: str) -> None:
        """One more broker send for this signal (what the tests count: never more than one fill)."""
        self._db.execute("UPDATE orders SET attempts = attempts + 1 WHERE signal_id = ?", (signal_id,))

    def control_applied(self, command_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM controls WHERE command_id = ?", (command_id,)).fetchone() is not None

    def record_control(
        self, command_id: str, action: str, issued_by: str, reason: str, issued_ns: int, applied_ns: int, state: str
    ) -> None:
        """An operator command was applied (once: a redelivered one is recognised by its id)."""
        self._db.execute(
            "INSERT OR IGNORE INTO controls (command_id, action, issued_by, reason, issued_ns, applied_ns, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (command_id, action, issued_by, reason, issued_ns, applied_ns, state),
        )

    def controls(self) -> list[ControlEntry]:
        """Every applied operator command, oldest first: the audit trail."""
        rows = self._db.execute(
            "SELECT command_id, action, issued_by, reason, issued_ns, applied_ns, state FROM controls "
            "ORDER BY applied_ns, rowid"
        ).fetchall()
        return [ControlEntry(*row) for row in rows]

    def save_guard(self, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO guard_state (id, data) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data",
            (json.dumps(data),),
        )

    def load_guard(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT data FROM guard_state WHERE id = 1").fetchone()
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        return data
