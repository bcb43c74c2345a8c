"""What the dashboard shows, kept in memory and brought up to date record by record: candles,
decisions, orders, open positions, the balance against the FTMO floors, tier calibration and the
pipeline's health. Pure logic: `apply` takes the bus's records (`TopicFollower` reads them), the
queries answer the API's models (`kstrade.dashboard.api`); no web framework, no bus client.

Records of different topics (and partitions) arrive in no particular order relative to each other:
a close may be read before the fill it closes, a confirmation before its pending order. Every
query is therefore computed from what was read, whatever the order, never from the order itself.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kstrade.bus import Record
from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    EXECUTIONS,
    METRICS_ALERTS,
    METRICS_LATENCY,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    signals,
)
from kstrade.config import Settings, SymbolSettings
from kstrade.execution.control import ACK_CODES
from kstrade.execution.guardrails import DailyLossGuard, MaxLossGuard
from kstrade.execution.trading_day import trading_day
from kstrade.report.calibration import wilson
from kstrade.schemas import Alert, Candle, Codec, ControlCommand, Execution, Latency, Message, Order, PnlEvent, Signal
from kstrade.schemas.models import OrderStatus, Side
from kstrade.signals.decision import epoch_ns

from . import api

log = logging.getLogger(__name__)

#: The topics the dashboard reads (a pattern subscription: topics made later are followed too).
#: The others (features, predictions, raw signals) are only counted, from their end offsets.
FOLLOWED = (
    r"^(market\.candles\..+\.1m|signals\.final|signals\.filtered|trades\..+|metrics\.latency|metrics\.alerts"
    r"|control\.execution|dlq\..+)$"
)
FOLLOWED_RE = re.compile(FOLLOWED)
#: What the page redraws; an update names the sections that changed.
SECTIONS = ("candles", "signals", "orders", "positions", "account", "models", "pipeline", "control")
#: An order status that says more than PENDING/SUBMITTED: a confirmation read before its pending
#: order must not be overwritten by it.
_OPEN_STATUSES = (OrderStatus.PENDING.value, OrderStatus.SUBMITTED.value)
_NO_SIGNAL = "00000000-0000-0000-0000-000000000000"  # a close the journal could not name
_CANDLE = re.compile(r"^market\.candles\.(.+)\.1m$")


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


class DashboardView:
    """The dashboard's state. `apply` is called from the reading thread, the queries from the
    web server's threads: one lock guards both. Listeners hear the new version after each
    `apply` that changed something (outside the lock)."""

    def __init__(
        self, settings: Settings, *, group: str = "", candles_kept: int = 20_000, rows_kept: int = 2_000
    ) -> None:
        self.settings = settings
        self.rules = settings.execution.guardrails
        self.group = group
        self._lock = threading.RLock()
        self._listeners: list[Callable[[int], None]] = []
        self._codecs: dict[type[Message], Codec] = {}
        self._candles_kept, self._rows_kept = candles_kept, rows_kept
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
        #: Every final signal by id: the tier calibration and the stops of a position.
        self.final_by_id: dict[str, api.SignalRow] = {}
        self.orders: OrderedDict[str, api.OrderRow] = OrderedDict()  # by signal_id
        self.fills: dict[str, _Fill] = {}  # by broker order id
        self.closes: list[_Close] = []
        self._ordered: tuple[int, list[_Close]] = (-1, [])
        self.closed_by_order: dict[str, float] = {}
        self.closed_by_signal: dict[str, float] = {}
        self.realized_by_signal: dict[str, float] = {}
        self._open_symbols: set[str] | None = None
        self.latency: dict[tuple[str, str], api.LatencyRow] = {}
        self.alerts: deque[api.AlertRow] = deque(maxlen=rows_kept)
        self.alert_counts: Counter[str] = Counter()
        self.acks: dict[str, str] = {}  # command id -> the acknowledging alert's message
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
        if topic == CONTROL_EXECUTION:
            return self._command(self._decode(record, ControlCommand))
        if topic.startswith("dlq."):
            return self._dead_letter(record)
        return set()

    def _candle(self, c: Candle) -> set[str]:
        self._tick(c.timestamp)
        row = api.CandleRow(time=int(c.timestamp.timestamp()), open=c.open, high=c.high, low=c.low, close=c.close,
                            volume=c.volume)  # fmt: skip
        rows = self.candles.setdefault(c.symbol, deque(maxlen=self._candles_kept))
        if not rows or rows[-1].time < row.time:
            rows.append(row)
        elif rows[-1].time == row.time:
            rows[-1] = row
        else:  # late: keep the series ordered (the chart needs ascending times)
            times = [r.time for r in rows]
            at = bisect.bisect_left(times, row.time)
            if at < len(rows) and rows[at].time == row.time:
                rows[at] = row
            else:
                rows.insert(at, row)
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
        self.finals.setdefault(s.symbol, deque(maxlen=self._rows_kept)).append(row)
        self.final_total += 1
        return {"signals", "models"}

    def _rejected(self, s: Signal, reason: str) -> set[str]:
        self._tick(s.timestamp)
        row = api.Rejection(**self._signal_row(s), reason=reason)
        self.rejections.setdefault(s.symbol, deque(maxlen=self._rows_kept)).append(row)
        self.rejected_total += 1
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
        self._open_symbols = None
        return {"positions", "account"}

    def _close(self, p: PnlEvent) -> set[str]:
        self._tick(p.timestamp)
        sid = str(p.signal_id)
        self.closes.append(
            _Close(epoch_ns(p.timestamp), p.balance, p.realized_pnl, p.quantity, p.order_id, sid, p.symbol)
        )
        self.closed_by_order[p.order_id] = self.closed_by_order.get(p.order_id, 0.0) + p.quantity
        self._open_symbols = None
        if sid != _NO_SIGNAL:
            self.closed_by_signal[sid] = self.closed_by_signal.get(sid, 0.0) + p.quantity
            self.realized_by_signal[sid] = self.realized_by_signal.get(sid, 0.0) + p.realized_pnl
        return {"positions", "account", "models"}

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
            return {"pipeline", "control"}
        return {"pipeline"}

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
        """The closes in the account's order (`account_order`), computed once per new close."""
        with self._lock:
            if self._ordered[0] != len(self.closes):
                self._ordered = (len(self.closes), account_order(self.closes, self.rules.initial_balance))
            return self._ordered[1]

    def account(self) -> api.Account:
        """The balance after each close against the FTMO floors, computed by the execution
        stage's own guards (`DailyLossGuard`, `MaxLossGuard`) the way `kstrade.report.headroom`
        does: each Prague day's floor starts from the balance at its midnight."""
        rules = self.rules
        positions = self.positions()
        with self._lock:
            closes = self.ordered_closes()
            now_ns = self.now_ns
            at = self._at_now()
        daily: DailyLossGuard | None = None
        total = MaxLossGuard(rules)
        balance = peak = rules.initial_balance
        curve: list[api.AccountPoint] = []
        max_dd = 0.0
        wins = 0
        for c in closes:
            if daily is None:
                daily = DailyLossGuard(rules, c.time_ns)  # the first trade's day starts from the initial balance
            elif daily.roll(c.time_ns, balance):  # the balance at midnight: before this close
                total.end_of_day(balance)
            balance = c.balance
            peak = max(peak, balance)
            drawdown = 100 * (balance / peak - 1) if peak > 0 else 0.0
            max_dd = min(max_dd, drawdown)
            wins += c.realized > 0
            curve.append(api.AccountPoint(time=c.time_ns // 1_000_000_000, balance=balance, daily_floor=daily.floor,
                                          max_loss_floor=total.floor, drawdown_pct=drawdown))  # fmt: skip
        if now_ns is not None:
            if daily is None:
                daily = DailyLossGuard(rules, now_ns)
            elif daily.roll(now_ns, balance):
                total.end_of_day(balance)
        daily_floor = daily.floor if daily is not None else rules.initial_balance * (1 - rules.max_daily_loss_pct / 100)
        today = trading_day(now_ns) if now_ns is not None else None
        floating = sum(p.unrealized_pnl or 0.0 for p in positions.positions)
        return api.Account(
            at=at, trading_day=today.isoformat() if today is not None else None, currency=rules.currency,
            initial_balance=rules.initial_balance, balance=balance, floating_pnl=floating,
            equity_estimate=balance + floating, realized_pnl_total=sum(c.realized for c in closes),
            realized_pnl_today=sum(c.realized for c in closes if today is not None and trading_day(c.time_ns) == today),
            trades_closed=len(closes), wins=wins, drawdown_pct=100 * (balance / peak - 1) if peak > 0 else 0.0,
            max_drawdown_pct=max_dd, daily_floor=daily_floor, max_loss_floor=total.floor,
            daily_headroom=balance - daily_floor, max_loss_headroom=balance - total.floor,
            daily_headroom_pct=100 * (balance - daily_floor) / rules.initial_balance,
            max_loss_headroom_pct=100 * (balance - total.floor) / rules.initial_balance,
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
        return api.Models(tiers=rows)

    def control(self, enabled: bool, reason: str) -> api.Control:
        with self._lock:
            acks = self.acks
            commands = [
                c.model_copy(update={"acknowledged": c.command_id in acks, "acknowledgement": acks.get(c.command_id)})
                for c in reversed(self.commands.values())
            ]
        return api.Control(enabled=enabled, reason=reason, account=self.settings.execution.account,
                           commands=commands[:50])  # fmt: skip
