"""What the dashboard shows, kept in memory and brought up to date record by record: candles,
decisions, orders, open positions, the balance against the FTMO floors, tier calibration and the
pipeline's health. Pure logic: `apply` takes the bus's records (`TopicFollower` reads them), the
queries answer the API's models (`kstrade.dashboard.api`); no web framework, no bus client.

Records of different topics (and partitions) arrive in no particular order relative to each other:
a close may be read before the fill it closes, a confirmation before its pending order. Every
query is therefore computed from what was read, whatever the order, never from the order itself.

A dashboard runs for months: everything it keeps is bounded (`DashboardView`'s arguments say by
what). What falls out is the oldest: candles and rows beyond their window, and closed trades
beyond the curve, which are folded into the account's running figures (`_Ledger`) first.
"""

from __future__ import annotations

import bisect
import copy
import logging
import re
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar

from kstrade.bus import Record
from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    EXECUTIONS,
    METRICS_ALERTS,
    METRICS_DRIFT,
    METRICS_LATENCY,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    signals,
)
from kstrade.config import GuardrailSettings, Settings, SymbolSettings
from kstrade.execution.control import ACK_CODES
from kstrade.execution.guardrails import DailyLossGuard, MaxLossGuard
from kstrade.execution.trading_day import trading_day
from kstrade.report.calibration import wilson
from kstrade.schemas import (
    Alert,
    Candle,
    Codec,
    ControlCommand,
    Execution,
    Latency,
    Message,
    ModelDrift,
    Order,
    PnlEvent,
    Signal,
)
from kstrade.schemas.models import OrderStatus, Side
from kstrade.signals.decision import epoch_ns

from . import api

log = logging.getLogger(__name__)

#: The topics the dashboard reads (a pattern subscription: topics made later are followed too).
#: The others (features, predictions, raw signals) are only counted, from their end offsets.
FOLLOWED = (
    r"^(market\.candles\..+\.1m|signals\.final|signals\.filtered|trades\..+|metrics\.latency|metrics\.alerts"
    r"|metrics\.model\.drift|control\.execution|dlq\..+)$"
)
FOLLOWED_RE = re.compile(FOLLOWED)
#: What the page redraws; an update names the sections that changed.
SECTIONS = ("candles", "signals", "orders", "positions", "account", "models", "pipeline", "control")
#: An order status that says more than PENDING/SUBMITTED: a confirmation read before its pending
#: order must not be overwritten by it.
_OPEN_STATUSES = (OrderStatus.PENDING.value, OrderStatus.SUBMITTED.value)
_NO_SIGNAL = "00000000-0000-0000-0000-000000000000"  # a close the journal could not name
_CANDLE = re.compile(r"^market\.candles\.(.+)\.1m$")
#: A reject_reason beyond this many distinct ones is counted as OTHER (the header is free text).
REASONS_KEPT = 200
_OTHER = "OTHER"
#: The collector's placeholder version on its accuracy records (not a model's).
_LIVE = "live"
_BAR_S = 60  # the followed candles: 1m
#: The drift table's rows (the highest PSI first) and the movers (the largest change since the
#: collector's previous summary).
_DRIFT_ROWS = 100
_MOVERS = 10

_K = TypeVar("_K")
_V = TypeVar("_V")


def _trim(mapping: OrderedDict[_K, _V], limit: int) -> None:
    """Drop the oldest entries (by insertion) beyond `limit`."""
    while len(mapping) > limit:
        mapping.popitem(last=False)


def _trim_unless(mapping: OrderedDict[_K, _V], limit: int, held: Callable[[], Container[_K]]) -> None:
    """Drop the oldest entries beyond `limit` (in batches, once a quarter over it) but those
    `held` still needs (at most as many as what holds them: the map stays bounded)."""
    if len(mapping) <= limit + max(1, limit // 4):
        return
    keep = held()
    for _ in range(len(mapping)):
        if len(mapping) <= limit:
            return
        key, value = mapping.popitem(last=False)
        if key in keep:
            mapping[key] = value  # still needed: kept (at the back)


class _Timed(Protocol):
    @property
    def time(self) -> int: ...


_T = TypeVar("_T", bound=_Timed)


def _put_in_time_order(rows: deque[_T], row: _T) -> None:
    """Add `row` to `rows` (ascending `time`, bounded by its maxlen); the same time replaces."""
    if not rows or rows[-1].time < row.time:
        rows.append(row)
    elif rows[-1].time == row.time:
        rows[-1] = row
    else:  # late: keep the series ordered (the charts need ascending times)
        times = [r.time for r in rows]
        at = bisect.bisect_left(times, row.time)
        if at < len(rows) and rows[at].time == row.time:
            rows[at] = row
        elif len(rows) == rows.maxlen:  # full (a deque refuses an insert): the oldest goes first
            if at > 0:  # unless the late row is older still
                rows.popleft()
                rows.insert(at - 1, row)
        else:
            rows.insert(at, row)


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class _Fill:
    order_id: str
    signal_id: str
    symbol: str
    side: str
    quantity: float
    price: float
    time_ns: int


@dataclass(frozen=True, slots=True)
class _Close:
    time_ns: int
    balance: float
    realized: float
    quantity: float
    order_id: str
    signal_id: str
    symbol: str


def account_order(closes: Iterable[_Close], initial_balance: float) -> list[_Close]:
    """Closes in the order the account made them. Time first; closes at the same instant (on
    several symbols, so on several partitions) follow the balance chain: each starts from the
    balance the one before it left (balance - realized P&L), which the account's own order
    obeys exactly when there is no commission, and most nearly when there is."""
    by_time = sorted(closes, key=lambda c: (c.time_ns, c.symbol, c.order_id))
    ordered: list[_Close] = []
    balance = initial_balance
    i = 0
    while i < len(by_time):
        j = i
        while j < len(by_time) and by_time[j].time_ns == by_time[i].time_ns:
            j += 1
        group = by_time[i:j]
        while group:
            nearest = min(group, key=lambda c: abs(c.balance - c.realized - balance))
            group.remove(nearest)
            ordered.append(nearest)
            balance = nearest.balance
        i = j
    return ordered


class _Ledger:
    """The account as a run of closes makes it, close by close: the balance, its peak and deepest
    drawdown, the wins, the realised P&L (in all, and on the last close's Prague day), and the
    FTMO floors by the execution stage's own guards (`DailyLossGuard`, `MaxLossGuard`) the way
    `kstrade.report.headroom` computes them: each Prague day's floor starts from the balance at
    its midnight. The closes that fall off the dashboard's curve are folded into one of these."""

    def __init__(self, rules: GuardrailSettings) -> None:
        self.rules = rules
        self.balance = self.peak = rules.initial_balance
        self.max_drawdown_pct = 0.0
        self.closes = self.wins = 0
        self.realized = 0.0
        self.day: date | None = None  # the Prague day of the last close, and its realised P&L
        self.day_realized = 0.0
        self.daily: DailyLossGuard | None = None
        self.total = MaxLossGuard(rules)

    def copy(self) -> _Ledger:
        twin = copy.copy(self)
        twin.daily, twin.total = copy.copy(self.daily), copy.copy(self.total)
        return twin

    def roll(self, now_ns: int) -> None:
        """Bring the day forward to `now_ns` (the balance at Prague midnight opens the new day)."""
        if self.daily is None:
            self.daily = DailyLossGuard(self.rules, now_ns)  # the first day starts from the initial balance
        elif self.daily.roll(now_ns, self.balance):
            self.total.end_of_day(self.balance)

    def add(self, c: _Close) -> api.AccountPoint:
        self.roll(c.time_ns)
        assert self.daily is not None
        self.balance = c.balance
        self.peak = max(self.peak, c.balance)
        drawdown = self.drawdown_pct
        self.max_drawdown_pct = min(self.max_drawdown_pct, drawdown)
        self.closes += 1
        self.wins += c.realized > 0
        self.realized += c.realized
        day = trading_day(c.time_ns)
        self.day_realized = (self.day_realized if day == self.day else 0.0) + c.realized
        self.day = day
        return api.AccountPoint(time=c.time_ns // 1_000_000_000, balance=c.balance, daily_floor=self.daily.floor,
                                max_loss_floor=self.total.floor, drawdown_pct=drawdown)  # fmt: skip

    @property
    def drawdown_pct(self) -> float:
        return 100 * (self.balance / self.peak - 1) if self.peak > 0 else 0.0


@dataclass(slots=True)
class _DriftReading:
    time_ns: int
    value: float
    threshold: float
    drifted: bool


@dataclass(slots=True)
class _FeatureDrift:
    """A feature's PSI on its symbol: the latest reading and the one before it (the movers), and
    the KS distance the collector publishes beside it."""

    latest: _DriftReading
    previous: _DriftReading | None = None
    ks: _DriftReading | None = None

    def put(self, reading: _DriftReading) -> None:
        if reading.time_ns > self.latest.time_ns:
            self.previous, self.latest = self.latest, reading
        elif reading.time_ns == self.latest.time_ns:
            self.latest = reading
        elif self.previous is None or reading.time_ns >= self.previous.time_ns:
            self.previous = reading  # read late: older than the latest, newer than the one before


@dataclass(slots=True)
class _Baseline:
    """The naive baselines' outcomes on one symbol's candles, for `accuracy_at` (see
    `DashboardView.accuracy`): when each outcome became known (epoch s), and running counts of
    the hits of last-direction and of always-flat."""

    revision: int
    known_at: list[int] = field(default_factory=list)
    last_hits: list[int] = field(default_factory=lambda: [0])
    flat_hits: list[int] = field(default_factory=lambda: [0])

    def accuracy_at(self, time_s: int, window: int) -> tuple[float | None, float | None]:
        known = bisect.bisect_right(self.known_at, time_s)
        n = min(window, known)
        if n == 0:
            return None, None
        return ((self.last_hits[known] - self.last_hits[known - n]) / n,
                (self.flat_hits[known] - self.flat_hits[known - n]) / n)  # fmt: skip


class DashboardView:
    """The dashboard's state. `apply` is called from the reading thread, the queries from the
    web server's threads: one lock guards both. Listeners hear the new version after each
    `apply` that changed something (outside the lock).

    What it keeps, and its bounds (the oldest goes first):
      candles_kept   1m candles per symbol (20,000: two weeks; the charts ask for a day)
      rows_kept      per symbol, recent final signals and rejections; alerts, dead letters,
                     operator commands and their acknowledgements (2,000 each)
      trades_kept    final signals by id (tier calibration, stops), orders, fills, and what
                     closed them (20,000 each; an open position is dropped last, and a close
                     stays while its fill or signal is held: at most twice as many)
      closes_kept    closed trades on the account curve (5,000); older ones are folded into the
                     account's running figures, so balance, totals and floors stay exact
      points_kept    accuracy points per model and symbol (2,000: 83 days of hourly replay
                     summaries, 5.5 hours of live ones every 10 s)
      series_kept    drift series: (model, symbol) accuracy series, (symbol, feature) PSI (5,000)
    Maps keyed by topic, stage or symbol hold what the pipeline has (its topics); reject
    reasons beyond `REASONS_KEPT` distinct ones count as OTHER."""

    def __init__(
        self,
        settings: Settings,
        *,
        group: str = "",
        candles_kept: int = 20_000,
        rows_kept: int = 2_000,
        trades_kept: int = 20_000,
        closes_kept: int = 5_000,
        points_kept: int = 2_000,
        series_kept: int = 5_000,
    ) -> None:
        self.settings = settings
        self.rules = settings.execution.guardrails
        self.group = group
        self._lock = threading.RLock()
        self._listeners: list[Callable[[int], None]] = []
        self._codecs: dict[type[Message], Codec] = {}
        self._candles_kept, self._rows_kept = candles_kept, rows_kept
        self._trades_kept, self._closes_kept = trades_kept, closes_kept
        self._points_kept, self._series_kept = points_kept, series_kept
        self.version = 0
        self.section_versions = dict.fromkeys(SECTIONS, 0)
        #: The latest event time read (any record): the pipeline's "now", live or in a replay.
        self.now_ns: int | None = None
        self.candles: dict[str, deque[api.CandleRow]] = {}
        self.finals: dict[str, deque[api.SignalRow]] = {}
        self.rejections: dict[str, deque[api.Rejection]] = {}
        self.final_total = 0
        self.rejected_total = 0
        self.rejection_counts: Counter[str] = Counter()
        #: The final signals by id (the last `trades_kept`): tier calibration, a position's stops.
        self.final_by_id: OrderedDict[str, api.SignalRow] = OrderedDict()
        self.orders: OrderedDict[str, api.OrderRow] = OrderedDict()  # by signal_id
        self.fills: OrderedDict[str, _Fill] = OrderedDict()  # by broker order id
        #: The closes on the curve (the last `closes_kept` in the account's order); the ones
        #: before them are folded into `folded`.
        self.closes: list[_Close] = []
        self.folded = _Ledger(self.rules)
        self._ordered: tuple[int, list[_Close]] = (-1, [])
        self.closed_by_order: OrderedDict[str, float] = OrderedDict()
        self.closed_by_signal: OrderedDict[str, float] = OrderedDict()
        self.realized_by_signal: OrderedDict[str, float] = OrderedDict()
        self._open_symbols: set[str] | None = None
        self.latency: dict[tuple[str, str], api.LatencyRow] = {}
        self.alerts: deque[api.AlertRow] = deque(maxlen=rows_kept)
        self.alert_counts: Counter[str] = Counter()
        self.acks: OrderedDict[str, str] = OrderedDict()  # command id -> the acknowledging alert's message
        #: metrics.model.drift: rolling accuracy per (model, symbol), its Page-Hinkley statistic,
        #: PSI (and KS) per (symbol, feature), the model versions named.
        self.accuracy: OrderedDict[tuple[str, str], deque[api.TimeValue]] = OrderedDict()
        self.page_hinkley: OrderedDict[tuple[str, str], _DriftReading] = OrderedDict()
        self.feature_drift: OrderedDict[tuple[str, str], _FeatureDrift] = OrderedDict()
        self.versions: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._candle_revision: dict[str, int] = {}
        self._baselines: dict[str, _Baseline] = {}
        self.dead_letters: deque[api.DeadLetterRow] = deque(maxlen=rows_kept)
        self.commands: OrderedDict[str, api.CommandRow] = OrderedDict()
        self.read: Counter[str] = Counter()
        self.unreadable: Counter[str] = Counter()
        #: Messages per topic (end offsets), from the reading thread's last look.
        self.topic_counts: dict[str, int] = {}
        self.behind: int | None = None
        #: What keeps the reading thread from the bus, while something does.
        self.reader_error: str | None = None

    # -- listeners -------------------------------------------------------------------------------
    def listen(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call `callback(version)` after every change; returns the function that stops it."""
        with self._lock:
            self._listeners.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return stop

    def _changed(self, sections: Iterable[str]) -> None:
        with self._lock:
            self.version += 1
            for section in sections:
                self.section_versions[section] = self.version
            version, listeners = self.version, list(self._listeners)
        for listener in listeners:
            try:
                listener(version)
            except Exception:  # a listener's trouble is not the reader's
                log.exception("dashboard listener failed")

    def changed_since(self, seen: dict[str, int]) -> list[str]:
        """The sections whose version moved past `seen` (which it updates)."""
        with self._lock:
            moved = [s for s, v in self.section_versions.items() if v > seen.get(s, -1)]
            seen.update(self.section_versions)
        return moved

    # -- reading ---------------------------------------------------------------------------------
    def _decode(self, record: Record, model: type[Message]) -> Any:
        codec = self._codecs.get(model)
        if codec is None:
            codec = self._codecs[model] = Codec(model)
        return codec.decode_record(record)

    def apply(self, records: Sequence[Record]) -> None:
        """Take in a poll's records. A record that does not decode is counted and skipped: no
        message, however malformed, stops the ones after it."""
        touched: set[str] = set()
        with self._lock:
            for record in records:
                topic = record.topic
                self.read[topic] += 1
                try:
                    touched |= self._apply_one(record)
                except Exception as exc:
                    if not self.unreadable[topic]:
                        log.warning("dashboard: a record of %s does not decode (%s); counting and skipping such", topic,
                                    exc)  # fmt: skip
                    self.unreadable[topic] += 1
                    touched.add("pipeline")
        if touched:
            self._changed(touched | {"pipeline"})

    def _tick(self, moment: datetime) -> None:
        ns = epoch_ns(moment)
        if self.now_ns is None or ns > self.now_ns:
            self.now_ns = ns

    def _apply_one(self, record: Record) -> set[str]:
        topic = record.topic
        candle = _CANDLE.match(topic)
        if candle is not None:
            return self._candle(self._decode(record, Candle))
        if topic == signals("final"):
            return self._final(self._decode(record, Signal))
        if topic == signals("filtered"):
            reason = _text(record.header("reject_reason")) or "UNSPECIFIED"
            return self._rejected(self._decode(record, Signal), reason)
        if topic in (ORDERS_PENDING, ORDERS_CONFIRMED):
            return self._order(self._decode(record, Order))
        if topic == EXECUTIONS:
            return self._fill(self._decode(record, Execution))
        if topic == PNL:
            return self._close(self._decode(record, PnlEvent))
        if topic == METRICS_LATENCY:
            return self._latency(self._decode(record, Latency))
        if topic == METRICS_ALERTS:
            return self._alert(self._decode(record, Alert))
        if topic == METRICS_DRIFT:
            return self._model_drift(self._decode(record, ModelDrift))
        if topic == CONTROL_EXECUTION:
            return self._command(self._decode(record, ControlCommand))
        if topic.startswith("dlq."):
            return self._dead_letter(record)
        return set()

    def _candle(self, c: Candle) -> set[str]:
        self._tick(c.timestamp)
        row = api.CandleRow(time=int(c.timestamp.timestamp()), open=c.open, high=c.high, low=c.low, close=c.close,
                            volume=c.volume)  # fmt: skip
        _put_in_time_order(self.candles.setdefault(c.symbol, deque(maxlen=self._candles_kept)), row)
        self._candle_revision[c.symbol] = self._candle_revision.get(c.symbol, 0) + 1
        return {"candles", "positions", "account"} if self._has_open(c.symbol) else {"candles"}

    def _has_open(self, symbol: str) -> bool:
        if self._open_symbols is None:  # recomputed after a fill or a close, not on every candle
            self._open_symbols = {f.symbol for f in self.fills.values() if self._remaining(f) > 0}
        return symbol in self._open_symbols

    @staticmethod
    def _signal_row(s: Signal) -> dict[str, Any]:
        return {
            "time": int(s.timestamp.timestamp()), "at": _at(s.timestamp), "symbol": s.symbol,
            "signal_id": str(s.signal_id), "direction": s.direction.value, "confidence": s.confidence,
            "tier": s.tier.value if s.tier is not None else None, "entry_price": s.entry_price,
            "stop_loss": s.stop_loss, "take_profit": s.take_profit,
        }  # fmt: skip

    def _final(self, s: Signal) -> set[str]:
        self._tick(s.timestamp)
        row = api.SignalRow(**self._signal_row(s))
        if row.signal_id in self.final_by_id:
            return set()
        self.final_by_id[row.signal_id] = row
        _trim(self.final_by_id, self._trades_kept)
        self.finals.setdefault(s.symbol, deque(maxlen=self._rows_kept)).append(row)
        self.final_total += 1
        return {"signals", "models"}

    def _rejected(self, s: Signal, reason: str) -> set[str]:
        self._tick(s.timestamp)
        row = api.Rejection(**self._signal_row(s), reason=reason)
        self.rejections.setdefault(s.symbol, deque(maxlen=self._rows_kept)).append(row)
        self.rejected_total += 1
        if reason not in self.rejection_counts and len(self.rejection_counts) >= REASONS_KEPT:
            reason = _OTHER
        self.rejection_counts[reason] += 1
        return {"signals"}

    def _order(self, o: Order) -> set[str]:
        self._tick(o.timestamp)
        sid = str(o.signal_id)
        before = self.orders.get(sid)
        if before is not None and o.status.value in _OPEN_STATUSES and before.status not in _OPEN_STATUSES:
            return set()  # a pending order read after its confirmation
        row = api.OrderRow(
            signal_id=sid, order_id=o.order_id, symbol=o.symbol, side=o.side.value, quantity=o.quantity,
            price=o.price, stop_loss=o.stop_loss, take_profit=o.take_profit, status=o.status.value,
            at=_at(o.timestamp), latency_ms=o.latency_ms,
        )  # fmt: skip
        self.orders[sid] = row
        while len(self.orders) > 10 * self._rows_kept:
            self.orders.popitem(last=False)
        return {"orders", "positions"}

    def _fill(self, e: Execution) -> set[str]:
        self._tick(e.timestamp)
        self.fills[e.order_id] = _Fill(e.order_id, str(e.signal_id), e.symbol, e.side.value, e.quantity,
                                       e.fill_price, epoch_ns(e.timestamp))  # fmt: skip
        if len(self.fills) > self._trades_kept:
            self._trim_fills()
        self._open_symbols = None
        return {"positions", "account"}

    def _trim_fills(self) -> None:
        """The oldest closed fills go first; an open position stays unless every one is open."""
        for _ in range(len(self.fills)):
            if len(self.fills) <= self._trades_kept:
                return
            order_id, fill = self.fills.popitem(last=False)
            if self._remaining(fill) > 0:
                self.fills[order_id] = fill  # still open: kept (at the back)
            else:
                self.closed_by_order.pop(order_id, None)
        _trim(self.fills, self._trades_kept)

    def _close(self, p: PnlEvent) -> set[str]:
        self._tick(p.timestamp)
        sid = str(p.signal_id)
        self.closes.append(
            _Close(epoch_ns(p.timestamp), p.balance, p.realized_pnl, p.quantity, p.order_id, sid, p.symbol)
        )
        if len(self.closes) >= self._closes_kept + max(1, self._closes_kept // 4):  # folded in batches
            self._fold()
        self.closed_by_order[p.order_id] = self.closed_by_order.get(p.order_id, 0.0) + p.quantity
        # What a held fill or final signal still needs stays (an open position, a tier's hit rate).
        _trim_unless(self.closed_by_order, self._trades_kept, lambda: self.fills.keys())
        self._open_symbols = None
        if sid != _NO_SIGNAL:
            self.closed_by_signal[sid] = self.closed_by_signal.get(sid, 0.0) + p.quantity
            self.realized_by_signal[sid] = self.realized_by_signal.get(sid, 0.0) + p.realized_pnl
            _trim_unless(self.closed_by_signal, self._trades_kept, lambda: {f.signal_id for f in self.fills.values()})
            _trim_unless(self.realized_by_signal, self._trades_kept, lambda: self.final_by_id.keys())
        return {"positions", "account", "models"}

    def _fold(self) -> None:
        """Fold the oldest closes (in the account's order) into `folded`, keeping `closes_kept`.
        A close read later that is older than the folded ones joins the curve at its time."""
        ordered = account_order(self.closes, self.folded.balance)
        cut = len(ordered) - self._closes_kept
        for c in ordered[:cut]:
            self.folded.add(c)
        self.closes = ordered[cut:]
        self._ordered = (-1, [])

    def _latency(self, m: Latency) -> set[str]:
        self._tick(m.timestamp)
        self.latency[(m.stage, m.topic)] = api.LatencyRow(
            at=_at(m.timestamp), stage=m.stage, topic=m.topic, count=m.count, p50_ms=m.p50_ms, p99_ms=m.p99_ms,
            max_ms=m.max_ms,
        )  # fmt: skip
        return {"pipeline"}

    def _alert(self, a: Alert) -> set[str]:
        self._tick(a.timestamp)
        self.alerts.append(api.AlertRow(at=_at(a.timestamp), severity=a.severity.value, source=a.source, code=a.code,
                                        message=a.message))  # fmt: skip
        self.alert_counts[a.code] += 1
        if a.code in ACK_CODES.values():
            for word in re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", a.message):
                self.acks[word] = a.message
            _trim(self.acks, self._rows_kept)
            return {"pipeline", "control"}
        return {"pipeline"}

    def _model_drift(self, m: ModelDrift) -> set[str]:
        """What the metrics collector publishes on metrics.model.drift: `accuracy` (rolling
        directional accuracy per model and symbol), `page_hinkley` (its error-drift statistic),
        `psi:FEATURE` and `ks:FEATURE` against the training reference."""
        self._tick(m.timestamp)
        ns, model, symbol = epoch_ns(m.timestamp), m.model_type.value, m.symbol or "-"
        reading = _DriftReading(ns, m.value, m.threshold, m.drifted)
        if m.model_version != _LIVE:
            self.versions.pop((model, m.model_version), None)
            self.versions[(model, m.model_version)] = max(ns, self.versions.get((model, m.model_version), ns))
            _trim(self.versions, self._series_kept)
        if m.metric == "accuracy":
            series = self.accuracy.get((model, symbol))
            if series is None:
                series = self.accuracy[(model, symbol)] = deque(maxlen=self._points_kept)
                _trim(self.accuracy, self._series_kept)
            _put_in_time_order(series, api.TimeValue(time=ns // 1_000_000_000, value=m.value))
        elif m.metric == "page_hinkley":
            before = self.page_hinkley.get((model, symbol))
            if before is None or before.time_ns <= ns:
                self.page_hinkley[(model, symbol)] = reading
                _trim(self.page_hinkley, self._series_kept)
        elif m.metric.startswith(("psi:", "ks:")):
            kind, feature = m.metric.split(":", 1)
            drift = self.feature_drift.get((symbol, feature))
            if kind == "psi":
                if drift is None:
                    self.feature_drift[(symbol, feature)] = _FeatureDrift(reading)
                    _trim(self.feature_drift, self._series_kept)
                else:
                    drift.put(reading)
            elif drift is not None and (drift.ks is None or drift.ks.time_ns <= ns):
                drift.ks = reading  # a KS reading comes right after the PSI of its feature
        else:
            return set()
        return {"models"}

    def _command(self, c: ControlCommand) -> set[str]:
        self.commands[str(c.command_id)] = api.CommandRow(
            command_id=str(c.command_id), at=_at(c.timestamp), account=c.account, action=c.action.value,
            issued_by=c.issued_by, reason=c.reason, acknowledged=False, acknowledgement=None,
        )  # fmt: skip
        while len(self.commands) > self._rows_kept:
            self.commands.popitem(last=False)
        return {"control"}

    def _dead_letter(self, record: Record) -> set[str]:
        self.dead_letters.append(api.DeadLetterRow(
            topic=record.topic, partition=record.partition, offset=record.offset,
            code=_text(record.header("dlq.error.code")), message=_text(record.header("dlq.error.message"))[:500],
            stage=_text(record.header("dlq.stage")),
        ))  # fmt: skip
        return {"pipeline"}

    def set_offsets(self, counts: dict[str, int], behind: int | None) -> None:
        """The reading thread's look at the topics: messages per topic, and how far it is behind."""
        with self._lock:
            changed = counts != self.topic_counts or behind != self.behind
            self.topic_counts, self.behind = counts, behind
        if changed:
            self._changed(["pipeline"])

    # -- queries ---------------------------------------------------------------------------------
    def symbols(self) -> list[str]:
        with self._lock:
            seen = sorted((set(self.candles) | set(self.finals)) - set(self.settings.symbols))
        return list(self.settings.symbols) + seen

    def _at_now(self) -> str | None:
        return None if self.now_ns is None else _at(datetime.fromtimestamp(self.now_ns / 1e9, UTC))

    def _remaining(self, fill: _Fill) -> float:
        closed = max(self.closed_by_order.get(fill.order_id, 0.0), self.closed_by_signal.get(fill.signal_id, 0.0))
        left = fill.quantity - closed
        return left if left > 1e-9 * max(1.0, fill.quantity) else 0.0

    def _spec(self, symbol: str) -> SymbolSettings:
        return self.settings.execution.symbols.get(symbol) or SymbolSettings()

    def _last_price(self, symbol: str) -> float | None:
        rows = self.candles.get(symbol)
        return rows[-1].close if rows else None

    def positions(self) -> api.Positions:
        """Open positions: filled executions without a close (trades.pnl) for all their quantity."""
        with self._lock:
            out = []
            for fill in sorted(self.fills.values(), key=lambda f: (f.time_ns, f.order_id)):
                left = self._remaining(fill)
                if left <= 0:
                    continue
                order = self.orders.get(fill.signal_id)
                signal = self.final_by_id.get(fill.signal_id)
                stop = order.stop_loss if order is not None and order.stop_loss is not None else None
                target = order.take_profit if order is not None and order.take_profit is not None else None
                if signal is not None:
                    stop = signal.stop_loss if stop is None else stop
                    target = signal.take_profit if target is None else target
                last = self._last_price(fill.symbol)
                direction = 1 if fill.side == Side.BUY.value else -1
                unrealized = (
                    None if last is None
                    else direction * (last - fill.price) * left * self._spec(fill.symbol).value_per_unit
                )  # fmt: skip
                out.append(api.Position(
                    order_id=fill.order_id, signal_id=fill.signal_id, symbol=fill.symbol, side=fill.side,
                    quantity=left, entry_price=fill.price, stop_loss=stop, take_profit=target,
                    opened_at=_at(datetime.fromtimestamp(fill.time_ns / 1e9, UTC)), last_price=last,
                    unrealized_pnl=unrealized,
                ))  # fmt: skip
            return api.Positions(at=self._at_now(), positions=out)

    def ordered_closes(self) -> list[_Close]:
        """The closes on the curve in the account's order (`account_order`, from the balance the
        folded ones left), computed once per new close."""
        with self._lock:
            if self._ordered[0] != len(self.closes):
                self._ordered = (len(self.closes), account_order(self.closes, self.folded.balance))
            return self._ordered[1]

    def account(self) -> api.Account:
        """The balance after each close against the FTMO floors (`_Ledger`), from the folded
        closes on: the curve shows the closes kept, the figures count every close read."""
        rules = self.rules
        positions = self.positions()
        with self._lock:
            closes = self.ordered_closes()
            ledger = self.folded.copy()
            now_ns = self.now_ns
            at = self._at_now()
        curve = [ledger.add(c) for c in closes]
        if now_ns is not None:
            ledger.roll(now_ns)
        daily_floor = ledger.daily.floor if ledger.daily is not None else (
            rules.initial_balance * (1 - rules.max_daily_loss_pct / 100)
        )  # fmt: skip
        today = trading_day(now_ns) if now_ns is not None else None
        balance = ledger.balance
        floating = sum(p.unrealized_pnl or 0.0 for p in positions.positions)
        return api.Account(
            at=at, trading_day=today.isoformat() if today is not None else None, currency=rules.currency,
            initial_balance=rules.initial_balance, balance=balance, floating_pnl=floating,
            equity_estimate=balance + floating, realized_pnl_total=ledger.realized,
            realized_pnl_today=ledger.day_realized if today is not None and ledger.day == today else 0.0,
            trades_closed=ledger.closes, wins=ledger.wins, drawdown_pct=ledger.drawdown_pct,
            max_drawdown_pct=ledger.max_drawdown_pct, daily_floor=daily_floor, max_loss_floor=ledger.total.floor,
            daily_headroom=balance - daily_floor, max_loss_headroom=balance - ledger.total.floor,
            daily_headroom_pct=100 * (balance - daily_floor) / rules.initial_balance,
            max_loss_headroom_pct=100 * (balance - ledger.total.floor) / rules.initial_balance,
            rules=api.Rules(preset=rules.preset, initial_balance=rules.initial_balance,
                            max_daily_loss_pct=rules.max_daily_loss_pct, max_loss_pct=rules.max_loss_pct,
                            max_loss_mode=rules.max_loss_mode),
            curve=curve,
        )  # fmt: skip

    def orders_page(self, limit: int) -> api.Orders:
        with self._lock:
            rows = sorted(self.orders.values(), key=lambda o: (o.at, o.signal_id), reverse=True)
            return api.Orders(total=len(self.orders), orders=rows[:limit])

    def signals_page(self, symbol: str | None, limit: int) -> api.Signals:
        with self._lock:
            names = [symbol] if symbol is not None else list(self.finals.keys() | self.rejections.keys())
            final = sorted((r for n in names for r in self.finals.get(n, ())), key=lambda r: (r.time, r.symbol))
            rejected = sorted((r for n in names for r in self.rejections.get(n, ())), key=lambda r: (r.time, r.symbol))
            return api.Signals(
                symbol=symbol, final=final[-limit:], rejected=rejected[-limit:], final_total=self.final_total,
                rejected_total=self.rejected_total, rejection_counts=dict(self.rejection_counts.most_common()),
            )  # fmt: skip

    def candles_page(self, symbol: str, limit: int) -> api.Candles:
        with self._lock:
            rows = list(self.candles.get(symbol, ()))
        return api.Candles(symbol=symbol, candles=rows[-limit:])

    def pipeline(self) -> api.Pipeline:
        with self._lock:
            counts = {t: n for t, n in sorted(self.topic_counts.items()) if n}
            return api.Pipeline(
                topics={t: n for t, n in counts.items() if not t.startswith("dlq.")},
                dead_letters={t: n for t, n in counts.items() if t.startswith("dlq.")},
                recent_dead_letters=list(reversed(self.dead_letters))[:50],
                latency=sorted(self.latency.values(), key=lambda r: (r.stage, r.topic)),
                alerts=list(reversed(self.alerts))[:100],
                alert_counts=dict(self.alert_counts.most_common()),
                dashboard=api.Follower(group=self.group, records_read=sum(self.read.values()), behind=self.behind,
                                       unreadable=dict(self.unreadable), error=self.reader_error),
            )  # fmt: skip

    def models(self) -> api.Models:
        """Per tier: the final signals, their mean stated confidence, and the realised hit rate
        of those whose trade closed (trades.pnl joined by signal_id; a win is a positive net P&L)."""
        with self._lock:
            tally: dict[str, list[float]] = {}
            for sid, row in self.final_by_id.items():
                t = tally.setdefault(row.tier or "-", [0, 0.0, 0, 0])
                t[0] += 1
                t[1] += row.confidence
                realized = self.realized_by_signal.get(sid)
                if realized is not None:
                    t[2] += 1
                    t[3] += realized > 0
        rows = []
        for tier in sorted(tally):
            n, confidence, closed, wins = tally[tier]
            rate = wins / closed if closed else None
            low = high = None
            if rate is not None:
                low, high = wilson(int(wins), int(closed))
                low, high = min(low, rate), max(high, rate)  # the interval holds the rate (float rounding at 0 and 1)
            rows.append(api.TierRow(
                tier=tier, signals=int(n), mean_confidence=confidence / n, closed=int(closed), wins=int(wins),
                hit_rate=rate, hit_rate_low=low, hit_rate_high=high,
            ))  # fmt: skip
        health, drift, versions = self._model_health(), self._feature_drift(), self._versions()
        movers = sorted((d for d in drift if d.change is not None), key=lambda d: (-abs(d.change or 0.0), d.feature))
        return api.Models(
            tiers=rows, health=health, drift=drift[:_DRIFT_ROWS], drifted_features=sum(d.significant for d in drift),
            features_watched=len(drift), movers=movers[:_MOVERS], versions=versions,
            accuracy_window=self.settings.metrics.accuracy_window,
        )  # fmt: skip

    def _model_health(self) -> list[api.ModelHealth]:
        """Per model and symbol: its latest rolling accuracy against the naive baselines' over
        the same minutes, and the Page-Hinkley statistic of its errors."""
        with self._lock:
            latest = {key: series[-1] for key, series in self.accuracy.items() if series}
            detectors = dict(self.page_hinkley)
        out = []
        for model, symbol in sorted(latest.keys() | detectors.keys()):
            point, ph = latest.get((model, symbol)), detectors.get((model, symbol))
            last, flat = self._baseline_at(symbol, point.time) if point is not None else (None, None)
            out.append(api.ModelHealth(
                model_type=model, symbol=symbol, accuracy=point.value if point else None,
                at=_at(datetime.fromtimestamp(point.time, UTC)) if point else None,
                last_direction=last, always_flat=flat,
                page_hinkley=ph.value if ph else None, page_hinkley_threshold=ph.threshold if ph else None,
                error_drift=ph.drifted if ph else False,
            ))  # fmt: skip
        return out

    def _feature_drift(self) -> list[api.FeatureDriftRow]:
        """Every (symbol, feature) PSI, the highest first."""
        with self._lock:
            readings = list(self.feature_drift.items())
        rows = [
            api.FeatureDriftRow(
                symbol=symbol, feature=feature, at=_at(datetime.fromtimestamp(d.latest.time_ns / 1e9, UTC)),
                psi=d.latest.value, previous_psi=d.previous.value if d.previous else None,
                change=d.latest.value - d.previous.value if d.previous else None, significant=d.latest.drifted,
                ks=d.ks.value if d.ks else None, ks_critical=d.ks.threshold if d.ks else None,
            )
            for (symbol, feature), d in readings
        ]  # fmt: skip
        return sorted(rows, key=lambda r: (-r.psi, r.symbol, r.feature))

    def _versions(self) -> list[api.ModelVersion]:
        with self._lock:
            seen = list(self.versions.items())
        return [
            api.ModelVersion(model_type=model, version=version, seen_at=_at(datetime.fromtimestamp(ns / 1e9, UTC)))
            for (model, version), ns in sorted(seen)
        ]

    def accuracy_history(self, symbol: str, limit: int) -> api.AccuracyHistory:
        """Each model's rolling accuracy on `symbol` over time (the last `limit` points), and the
        naive baselines' at the same instants (`_baseline_at`)."""
        with self._lock:
            series = {model: list(rows)[-limit:] for (model, sym), rows in self.accuracy.items() if sym == symbol}
        times = sorted({p.time for rows in series.values() for p in rows})
        last, flat = [], []
        for t in times:
            a, b = self._baseline_at(symbol, t)
            if a is not None and b is not None:
                last.append(api.TimeValue(time=t, value=a))
                flat.append(api.TimeValue(time=t, value=b))
        m = self.settings.metrics
        return api.AccuracyHistory(
            symbol=symbol, window=m.accuracy_window, horizon_bars=m.horizon_bars, flat_band_bps=m.flat_band_bps,
            models=[api.AccuracySeries(name=name, points=rows) for name, rows in sorted(series.items())],
            baselines=[api.AccuracySeries(name="last_direction", points=last),
                       api.AccuracySeries(name="always_flat", points=flat)],
        )  # fmt: skip

    def _baseline_at(self, symbol: str, time_s: int) -> tuple[float | None, float | None]:
        """The accuracy the naive baselines of `kstrade.training.evaluation` (last-direction:
        the move of the last horizon goes on; always-flat) had over the last `accuracy_window`
        outcomes known at `time_s`, scored as the collector scores a model (`DirectionAccuracy`:
        the move from a candle's close to the close `horizon_bars` later, FLAT within
        `flat_band_bps`), from the 1m candles read. None without candles (or off 1m bars)."""
        m = self.settings.metrics
        if m.bar_seconds != _BAR_S:
            return None, None
        with self._lock:
            revision = self._candle_revision.get(symbol)
            baseline = self._baselines.get(symbol)
            if revision is None:
                return None, None
            if baseline is None or baseline.revision != revision:
                baseline = self._baselines[symbol] = self._baseline(symbol, revision)
        return baseline.accuracy_at(time_s, m.accuracy_window)

    def _baseline(self, symbol: str, revision: int) -> _Baseline:
        m = self.settings.metrics
        horizon, band = m.horizon_bars * _BAR_S, m.flat_band_bps / 10_000
        closes = {row.time: row.close for row in self.candles.get(symbol, ())}

        def direction(start: float | None, end: float | None) -> int | None:
            if start is None or end is None or start <= 0:
                return None
            move = end / start - 1.0
            return 0 if abs(move) <= band else (1 if move > 0 else -1)

        out = _Baseline(revision)
        for t, close in closes.items():  # ascending open times
            realized = direction(close, closes.get(t + horizon))
            previous = direction(closes.get(t - horizon), close)
            if realized is None or previous is None:
                continue
            out.known_at.append(t + horizon + _BAR_S)  # the outcome candle's close
            out.last_hits.append(out.last_hits[-1] + (realized == previous))
            out.flat_hits.append(out.flat_hits[-1] + (realized == 0))
        return out

    def control(self, enabled: bool, reason: str) -> api.Control:
        with self._lock:
            acks = self.acks
            commands = [
                c.model_copy(update={"acknowledged": c.command_id in acks, "acknowledgement": acks.get(c.command_id)})
                for c in reversed(self.commands.values())
            ]
        return api.Control(enabled=enabled, reason=reason, account=self.settings.execution.account,
                           commands=commands[:50])  # fmt: skip
