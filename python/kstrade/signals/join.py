"""The join: predictions of every configured model for one (symbol, candle time), with the
candle's close and feature vector, held until complete or until the deadline passes.

Rules: predictions of different candle times never mix (the key is the candle time); the
first prediction of a model type for a key is used and repeats are counted; once a key is
decided, later predictions for it (or for any older candle of the symbol) are counted as late
and never used, so a candle yields at most one decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from kstrade.signals.decision import CandleContext, ModelVote

#: Candle times of closes and feature vectors kept per symbol once decided: enough to cover a
#: join deadline and a TTL of 1m candles several times over, small enough to stay in cache.
MARKET_MEMORY = 64
#: Candles not yet decided are kept, however far the market topics run ahead of the models
#: (after an outage the candles and features catch up long before the predictions do), up to
#: this many per symbol: a day of 1m candles, about 7 MiB of feature vectors. Beyond it the
#: oldest undecided candle is forgotten, with a warning: its predictions will find no price.
MARKET_BACKLOG = 1440

Key = tuple[str, datetime]
V = TypeVar("V")

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingCandle:
    deadline_ns: int
    origin_ns: int
    votes: dict[str, ModelVote] = field(default_factory=dict)


@dataclass(slots=True)
class JoinStats:
    late: int = 0  # predictions for a candle already decided
    repeated: int = 0  # a second prediction of the same model type for one candle
    ignored: int = 0  # model types without a weight


def put_in_time_order(
    book: dict[datetime, V],
    timestamp: datetime,
    value: V,
    memory: int,
    *,
    undecided: Callable[[datetime], bool] | None = None,
    backlog: int = MARKET_BACKLOG,
) -> list[V]:
    """`book[timestamp] = value` on a dict kept in ascending time order, then the oldest entries
    dropped until at most `memory` remain; returns the values dropped. Given `undecided` (is
    this candle time still to be decided?), the oldest entry is kept while it is undecided and
    the book holds at most `backlog`. Times that arrive in order (the usual case) append and
    drop from the front in O(1); one that arrives out of order re-sorts the book once."""
    if timestamp in book:
        book[timestamp] = value  # a repeat: same place, same size
        return []
    newest = next(reversed(book)) if book else None
    book[timestamp] = value
    if newest is not None and timestamp < newest:
        ordered = sorted(book.items(), key=_time)
        book.clear()
        book.update(ordered)
    dropped: list[V] = []
    while len(book) > memory:
        oldest = next(iter(book))  # the book is in time order
        if undecided is not None and len(book) <= backlog and undecided(oldest):
            break  # kept for its predictions
        dropped.append(book.pop(oldest))
    return dropped


def _time(item: tuple[datetime, object]) -> datetime:
    return item[0]


class MarketBook:
    """1m closes and feature vectors per symbol, by candle time (each book in time order): every
    candle not yet decided (up to `backlog`), and decided ones while the book holds fewer than
    `memory` (the last close before a candle, for one decided without its own price).

    `decided_through` (per symbol, the newest candle time decided) is the join's: a book that
    is given none keeps only the last `memory` candles."""

    def __init__(
        self,
        memory: int = MARKET_MEMORY,
        *,
        decided_through: dict[str, datetime] | None = None,
        backlog: int = MARKET_BACKLOG,
    ) -> None:
        self.memory, self.backlog = memory, backlog
        self.decided_through = decided_through
        self._closes: dict[str, dict[datetime, float]] = {}
        self._features: dict[str, dict[datetime, dict[str, float]]] = {}
        self.forgotten_undecided = 0
        self._forgotten: dict[str, int] = {}  # per symbol, forgotten after its first decision

    def _put(self, book: dict[datetime, V], symbol: str, timestamp: datetime, value: V) -> None:
        decided = self.decided_through
        if decided is None:
            put_in_time_order(book, timestamp, value, self.memory)
            return
        through = decided.get(symbol)
        undecided = (lambda t: True) if through is None else (lambda t: t > through)
        if timestamp not in book and len(book) >= self.backlog and undecided(next(iter(book))):
            self.forgotten_undecided += 1
            # Before its first decision a symbol is warming up (no model predicts yet): its
            # oldest candles are let go quietly. After it, a forgotten price is a lost decision:
            # said on the first and then every 100th.
            if through is not None:
                n = self._forgotten[symbol] = self._forgotten.get(symbol, 0) + 1
                if n == 1 or n % 100 == 0:
                    log.warning(
                        "signals: %s has %d candles not yet decided (the models are behind); forgetting the price "
                        "of %s (%d so far)", symbol, len(book), next(iter(book)).isoformat(), n,
                    )  # fmt: skip
        put_in_time_order(book, timestamp, value, self.memory, undecided=undecided, backlog=self.backlog)

    def add_close(self, symbol: str, timestamp: datetime, close: float) -> None:
        book = self._closes.get(symbol)
        if book is None:
            book = self._closes[symbol] = {}
        self._put(book, symbol, timestamp, close)

    def add_features(self, symbol: str, timestamp: datetime, features: dict[str, float]) -> None:
        book = self._features.get(symbol)
        if book is None:
            book = self._features[symbol] = {}
        self._put(book, symbol, timestamp, features)

    def close(self, symbol: str, timestamp: datetime) -> float | None:
        book = self._closes.get(symbol)
        return book.get(timestamp) if book is not None else None

    def last_close_before(self, symbol: str, timestamp: datetime) -> float | None:
        book = self._closes.get(symbol)
        if not book:
            return None
        for t in reversed(book):  # newest first: the first earlier time is the latest one
            if t < timestamp:
                return book[t]
        return None

    def features(self, symbol: str, timestamp: datetime) -> dict[str, float] | None:
        book = self._features.get(symbol)
        return book.get(timestamp) if book is not None else None


class PredictionJoin:
    """Pending candles by (symbol, candle time), completed or expired by the clock."""

    def __init__(self, required: set[str], deadline_ns: int, market: MarketBook) -> None:
        self.required = required
        self.deadline_ns = deadline_ns
        self.market = market
        self.pending: dict[Key, PendingCandle] = {}
        #: Per symbol, the newest candle time decided: anything at or before it is late. The
        #: market book keeps every candle after it (its price waits for the predictions).
        self.decided_through: dict[str, datetime] = {}
        market.decided_through = self.decided_through
        self.stats = JoinStats()

    def add(self, vote: ModelVote, symbol: str, timestamp: datetime, *, now_ns: int, origin_ns: int) -> list[Key]:
        """Record a prediction. Returns the candles to decide now (see `ready`)."""
        if vote.model_type not in self.required:
            self.stats.ignored += 1
            return []
        done = self.decided_through.get(symbol)
        key = (symbol, timestamp)
        if (done is not None and timestamp <= done) and key not in self.pending:
            self.stats.late += 1
            # Never silent: a late prediction is a model slower than the deadline, or inputs
            # that reached this stage out of order (the candle was decided without it).
            log.warning(
                "signals: %s prediction for %s at %s came after the symbol was decided through %s: not used",
                vote.model_type, symbol, timestamp.isoformat(), done.isoformat(),
            )  # fmt: skip
            return []
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = PendingCandle(now_ns + self.deadline_ns, origin_ns)
        if vote.model_type in entry.votes:
            self.stats.repeated += 1
            return []
        entry.votes[vote.model_type] = vote
        return self.ready(key)

    def complete(self, key: Key) -> bool:
        entry = self.pending.get(key)
        if entry is None or set(entry.votes) < self.required:
            return False
        symbol, timestamp = key
        return self.market.close(symbol, timestamp) is not None and self.market.features(symbol, timestamp) is not None

    def ready(self, key: Key) -> list[Key]:
        """If `key`'s candle is complete: the symbol's older pending candles, oldest first, then
        `key`. A symbol's candles are decided in time order: each model's predictions of a
        symbol come in order, so once a newer candle is complete the older one's missing
        models are not coming before its deadline either."""
        if not self.complete(key):
            return []
        symbol, timestamp = key
        older = sorted(k for k in self.pending if k[0] == symbol and k[1] < timestamp)
        return [*older, key]

    def due(self, now_ns: int) -> list[Key]:
        """Candles whose deadline has passed, with any older pending candle of the same symbol
        (decided in time order, as in `ready`), oldest first."""
        newest: dict[str, datetime] = {}
        for (symbol, timestamp), entry in self.pending.items():
            if entry.deadline_ns <= now_ns and (symbol not in newest or timestamp > newest[symbol]):
                newest[symbol] = timestamp
        keys = [k for k in self.pending if k[0] in newest and k[1] <= newest[k[0]]]
        return sorted(keys, key=lambda k: (k[1], k[0]))

    def take(self, key: Key) -> tuple[CandleContext, int]:
        """Remove a candle for its decision: its context and origin time."""
        entry = self.pending.pop(key)
        symbol, timestamp = key
        done = self.decided_through.get(symbol)
        if done is None or timestamp > done:
            self.decided_through[symbol] = timestamp
        context = CandleContext(
            symbol=symbol,
            timestamp=timestamp,
            votes=dict(entry.votes),
            features=self.market.features(symbol, timestamp),
            close=self.market.close(symbol, timestamp),
            last_close=self.market.last_close_before(symbol, timestamp),
        )
        return context, entry.origin_ns


class OpenPositions:
    """One position per symbol: a symbol is busy from its final signal until that signal
    expires unfilled, or, once filled, until its P&L closes it."""

    def __init__(self) -> None:
        self._reserved: dict[str, tuple[str, int]] = {}  # symbol -> (signal_id, expiry ns)
        self._filled: dict[str, str] = {}  # signal_id -> symbol

    def reserve(self, symbol: str, signal_id: str, expires_ns: int) -> None:
        self._reserved[symbol] = (signal_id, expires_ns)

    def filled(self, symbol: str, signal_id: str) -> None:
        self._filled[signal_id] = symbol
        reserved = self._reserved.get(symbol)
        if reserved is not None and reserved[0] == signal_id:
            del self._reserved[symbol]

    def closed(self, signal_id: str) -> None:
        self._filled.pop(signal_id, None)

    def is_open(self, symbol: str, now_ns: int) -> bool:
        reserved = self._reserved.get(symbol)
        if reserved is not None:
            if reserved[1] > now_ns:
                return True
            del self._reserved[symbol]
        return symbol in self._filled.values()
