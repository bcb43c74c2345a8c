"""The execution stage: final signals in; guardrails, sizing and the order journal; orders to the
broker with retries and a circuit breaker; order events, fills, realized P&L and alerts out.

    signals.final -> trades.orders.pending -> trades.orders.confirmed -> trades.executions
                                                                      -> trades.pnl (on close)
    market.candles.{symbol}.1m: marks the paper broker (stops and targets) and drives the clock
    control.execution: the operator's halt / resume / flatten, applied before the other records
                       of the same poll, journaled, acknowledged on metrics.alerts
    metrics.alerts: dropped signals, rejections, halts, the circuit breaker
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, get_args
from uuid import UUID

from kstrade._native import CandleMarks, decode_candle
from kstrade.bus import Bus, MessageError, Output, Record
from kstrade.bus.runner import Batch
from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    EXECUTIONS,
    METRICS_ALERTS,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    candles,
    signals,
)
from kstrade.clock import EPOCH, EventClock
from kstrade.codes import ORDER_REJECTED_PREFIX, AlertCode, BrokerCode, DeadLetter, Drop, ExitReason
from kstrade.config import ExecutionSettings, Settings, SymbolSettings
from kstrade.execution.account import AccountSnapshot, loss_to_stop
from kstrade.execution.broker import LINK_ERRORS, Broker, BrokerReply, OrderRequest, Outcome
from kstrade.execution.circuit import CircuitBreaker
from kstrade.execution.control import ACK_CODES
from kstrade.execution.guardrails import AccountGuard, NewsBlackout, OperatorHold
from kstrade.execution.journal import JournalEntry, JournalState, OrderJournal
from kstrade.execution.paper import PaperBroker
from kstrade.execution.router import OrderRouter
from kstrade.execution.sizing import KellySizer
from kstrade.execution.trading_day import trading_session
from kstrade.retry import Backoff
from kstrade.schemas import Codec, MessageHeaders
from kstrade.schemas.codec import HEADER_ENCODING, HEADER_ORIGIN_NS, HEADER_SCHEMA, HEADER_SCHEMA_VERSION, HEADER_STAGE
from kstrade.schemas.models import (
    EVERY_ACCOUNT,
    INTERVAL_MINUTES,
    Alert,
    Candle,
    CandleOrigin,
    ControlAction,
    ControlCommand,
    Execution,
    Interval,
    Message,
    Order,
    OrderStatus,
    OrderType,
    PnlEvent,
    Severity,
    Side,
    Signal,
    SignalDirection,
    SignalStage,
    candle_provenance_valid,
)
from kstrade.stage import Stage

if TYPE_CHECKING:
    from kstrade.execution.gauges import AccountGauges

log = logging.getLogger(__name__)

SIGNALS_FINAL = signals("final")
_MODELS: dict[str, type[Message]] = {"order": Order, "execution": Execution}
#: How often (clock time) on_time looks at the account and reconciles uncertain orders.
_OBSERVE_EVERY_NS = 1_000_000_000
_RECONCILE_EVERY_NS = 10_000_000_000
_GIVE_UP_NS = 86_400_000_000_000
_MINUTE_NS = 60_000_000_000


def client_order_id(signal_id: UUID) -> str:
    """Our order id, derived from the signal id so every retry and restart uses the same one;
    short enough for the MT5 comment field (31 characters)."""
    return "ks-" + signal_id.hex[:24]


def _time(now_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=now_ns // 1000)


class ExecutionStage(Stage):
    name = "execution"

    def __init__(
        self,
        settings: ExecutionSettings,
        broker: Broker,
        journal: OrderJournal,
        symbols: Sequence[str],
        *,
        news: NewsBlackout | None = None,
        gauges: AccountGauges | None = None,
        base_interval: str = "1m",
    ) -> None:
        super().__init__()
        self.settings = settings
        #: The candles it marks positions on: the pipeline's base interval (`Settings.base_interval`).
        self.base_interval = base_interval
        self.rules = settings.guardrails
        self.broker = broker
        self.journal = journal
        self.symbols = list(symbols)
        #: Each 1m candle topic's symbol: a candle of another symbol on it is dead-lettered.
        self._candle_symbols = {candles(s, base_interval): s for s in self.symbols}
        self.news = news
        self.sizer = KellySizer(settings.kelly_fraction, settings.max_risk_pct)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        self._guard: AccountGuard | None = None
        self._saved_guard: tuple[Any, ...] | None = None
        self._last_observe_ns = 0
        self._last_reconcile_ns = 0
        self._broker_down_since: int | None = None
        self._last_down_alert_ns = 0
        self._flatten_alerted: dict[str, int] = {}
        self._candle_reader: _CandleReader | None = None
        #: The account the latest `_observe` read (None: the broker was unreachable).
        self._seen: AccountSnapshot | None = None
        #: (time, account, guard changes) of the latest observation of the paper account that
        #: closed nothing, in a replay (no gauges): a repeat of it is skipped (`_observe`).
        self._quiet: tuple[int, AccountSnapshot, int] | None = None
        #: The account on Prometheus (`execution.prometheus_port`); None in replays: no cost.
        self.gauges = gauges

    # -- Stage -----------------------------------------------------------------------------------
    def inputs(self) -> list[str]:
        return self.inputs_for(self.symbols, self.base_interval)

    @classmethod
    def inputs_for(cls, symbols: Sequence[str], base_interval: str = "1m") -> list[str]:
        return [SIGNALS_FINAL] + [candles(s, base_interval) for s in symbols] + [CONTROL_EXECUTION]

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> list[str]:
        """Topics it emits to (dead letters aside): what its principal may write (`kstrade.bus.acl`)."""
        return [ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL, METRICS_ALERTS]

    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        """The records of one poll in order, except that operator commands go first: a halt
        polled together with a signal stops that signal's order, whichever came first."""
        records = batch.records
        if not any(r.topic == CONTROL_EXECUTION for r in records):
            return self._in_order(batch, records)
        return self._commands_first(batch)

    def _commands_first(self, batch: Batch) -> Iterator[Output]:
        yield from batch.each(self.handle, [r for r in batch.records if r.topic == CONTROL_EXECUTION])
        yield from self._in_order(batch, [r for r in batch.records if r.topic != CONTROL_EXECUTION])

    def _in_order(self, batch: Batch, records: list[Record]) -> list[Output]:
        """`handle` for each record, in order, as `Batch.each` calls it (a record that raises goes
        to the dead-letter topic alone, the others go on), except that the current candles of
        the poll are read in one native call first (`kstrade._native.CandleMarks`, the checks
        of `_candle` in Rust): a candle it reads goes straight to `_on_candle`; any other
        record, or a candle it leaves (a bad one included), takes `handle` as always."""
        marks = self._reader().marks
        if marks is None:
            return list(batch.each(self.handle, records))
        symbols, clock = self._candle_symbols, self.clock
        out: list[Output] = []
        for record, mark in zip(records, marks.read(records), strict=True):
            try:
                if mark is not None and mark[0] == symbols.get(record.topic):
                    out += self._on_candle(clock.now_ns(), *mark)
                else:
                    out += list(self.handle(record))
            except Exception as exc:
                batch.fail(record, exc)
        return out

    def handle(self, record: Record) -> Iterable[Output]:
        now = self.clock.now_ns()
        if record.topic == SIGNALS_FINAL:
            return self._on_signal(record, now)
        if record.topic == CONTROL_EXECUTION:
            return self._on_control(record, now)
        return self._on_candle(now, *self._candle(record))

    def _on_candle(
        self, now: int, symbol: str, open_: float, high: float, low: float, close: float, origin: int
    ) -> list[Output]:
        """A candle of `symbol`: the paper broker's stops, targets and marks, and the account
        observed before and after (a live broker marks itself: the account is observed)."""
        paper = self.broker if isinstance(self.broker, PaperBroker) else None
        outs = self._observe(now, origin)  # roll the Prague day before this candle moves anything
        if paper is None:
            outs += self._closed(now, origin)
            outs += self._observe(now, origin)
            return outs
        seen = self._seen
        paper.mark_prices(symbol, open_, high, low, close, now)
        closed = self._closed(now, origin) if paper.has_closed_trades() else []
        outs += closed
        # The account the observation above read is still the account: nothing moved since (no
        # close, no mark of an open position). That observation closed nothing (a close changes
        # the account), so no loss floor, flatten, news or weekend close met open positions; a
        # second one of the same account at the same time would roll no day, move no state,
        # save no guard, emit nothing and leave the gauges as they are (see AccountGuard.observe).
        if not closed and self._broker_down_since is None and seen is not None and paper.unchanged_since(seen):
            return outs
        outs += self._observe(now, origin)
        return outs

    def _candle(self, record: Record) -> tuple[str, float, float, float, float, int]:
        """The candle's symbol, open, high, low and close, and the record's origin time.

        The headers are read once; a current bare native Avro candle is decoded to a plain
        value and checked for what the model checks (finite prices, volume >= 0, known
        interval, symbol, low <= open/close <= high, a representable timestamp). Anything else,
        or any doubt, takes the model's path (`self.decode`), which dead-letters a bad candle
        with the same error as always. On either path a candle whose symbol is not its topic's
        is dead-lettered (SYMBOL_TOPIC_MISMATCH): a dict lookup, not a topic parse."""
        reader = self._reader()
        origin = _current_candle_origin(record.headers, reader)
        if origin is None:
            codec = reader.codec
            headers = MessageHeaders.from_kafka(record.headers, topic=record.topic, offset=record.offset)
            origin = headers.origin_ns
            current = (
                headers.schema == codec.schema_name
                and headers.encoding == codec.encoding
                and headers.schema_version == codec.version
            )
        else:
            current = True
        data = record.value
        if current and reader.native and data is not None:
            try:
                v = decode_candle(data, version=reader.version, topic=record.topic, offset=record.offset)
            except Exception:  # the model's path below raises the same error
                v = None
            if v is not None and _valid_candle(v):
                if v["symbol"] != self._candle_symbols.get(record.topic):
                    raise _symbol_topic_mismatch(v["symbol"], record.topic)
                return v["symbol"], v["open"], v["high"], v["low"], v["close"], origin
        candle = self.decode(record, Candle)
        if candle.symbol != self._candle_symbols.get(record.topic):
            raise _symbol_topic_mismatch(candle.symbol, record.topic)
        return candle.symbol, candle.open, candle.high, candle.low, candle.close, origin

    def _reader(self) -> _CandleReader:
        reader = self._candle_reader
        if reader is None:
            reader = self._candle_reader = _CandleReader(self.codec(Candle))
        return reader

    def close(self) -> None:
        """The paper account's last write (a non-durable one writes only here)."""
        if isinstance(self.broker, PaperBroker):
            self.broker.close()

    def on_time(self, now_ns: int) -> Iterable[Output]:
        outs: list[Output] = []
        if now_ns - self._last_observe_ns >= _OBSERVE_EVERY_NS:
            outs += self._closed(now_ns, now_ns)
            outs += self._observe(now_ns, now_ns)
        if now_ns - self._last_reconcile_ns >= _RECONCILE_EVERY_NS:
            self._last_reconcile_ns = now_ns
            for entry in self.journal.in_state(JournalState.UNCERTAIN):
                if now_ns - entry.created_ns > _GIVE_UP_NS:
                    # A day without a deal: it never happened, or it needs a human. Stop asking.
                    self.journal.record(entry.signal_id, entry.client_order_id, JournalState.REJECTED, entry.symbol,
                                        now_ns, reason=BrokerCode.NEVER_CONFIRMED)  # fmt: skip
                    outs.append(self._alert(now_ns, now_ns, "CRITICAL", AlertCode.ORDER_NEVER_CONFIRMED,
                                            f"order {entry.client_order_id} (signal {entry.signal_id}) not found at "
                                            "the broker after a day: check the terminal by hand"))  # fmt: skip
                    continue
                outs += self._reconcile(entry, now_ns, now_ns)
        return outs

    # -- the guard -------------------------------------------------------------------------------
    @property
    def guard(self) -> AccountGuard:
        if self._guard is None:
            self._guard = AccountGuard(self.rules, self.clock.now_ns(), self.news)
            saved = self.journal.load_guard()
            if saved is not None:
                self._guard.restore(saved)  # loss floors and trading days survive a restart
        return self._guard

    def _broker_down(self, now: int, origin: int, exc: BaseException) -> list[Output]:
        """The broker cannot be reached: no new orders (each signal is dropped with a reason), and
        one CRITICAL alert a minute until it is back."""
        if self._broker_down_since is None:
            self._broker_down_since = now
        if now - self._last_down_alert_ns < _MINUTE_NS:
            return []
        self._last_down_alert_ns = now
        return [self._alert(now, origin, "CRITICAL", AlertCode.BROKER_UNAVAILABLE, f"{self.broker.name}: {exc}")]

    def _observe(self, now: int, origin: int) -> list[Output]:
        guard = self.guard
        quiet = self._quiet
        if quiet is not None:
            # The last observation, at this same time, closed nothing; since then the guard
            # changed only by observing, the paper account not at all, the broker is up: this
            # one would read the same account, roll no day, move no state, emit nothing and
            # close nothing (see `AccountGuard.changes`). A candle of a symbol without a
            # position, or a dropped signal, after another record of the same instant.
            at, account, changes = quiet
            paper = self.broker
            if (
                at == now and changes == guard.changes and self._broker_down_since is None
                and isinstance(paper, PaperBroker) and paper.unchanged_since(account)
            ):  # fmt: skip
                return []
            self._quiet = None
        self._last_observe_ns = now
        try:
            account = self.broker.account(now)
        except LINK_ERRORS as exc:
            self._seen = None
            return self._broker_down(now, origin, exc)
        self._seen = account
        self._broker_down_since = None
        events = guard.observe(now, account)
        outs = [self._alert(now, origin, e.severity, e.code, e.message) for e in events]
        if not events:  # the common case: nothing asked to close, unless a halt is flattening
            closing = list(account.positions) if account.positions and guard.flattening else []
        elif guard.flattening or any(e.flatten and not e.symbols for e in events):
            closing = list(account.positions)
        else:
            targeted = {s for e in events if e.flatten for s in e.symbols}
            closing = [p for p in account.positions if p.symbol in targeted]
        if closing:
            operator = guard.operator is not None and guard.operator.flatten
            reason = ExitReason.OPERATOR_FLATTEN if operator else ExitReason.GUARDRAIL
            for p in closing:
                reply = self.broker.close_position(p.ticket, now, reason)
                # tried again on every observation; told once a minute per position
                last = self._flatten_alerted.get(p.ticket, -_MINUTE_NS)
                if reply.outcome is not Outcome.FILLED and now - last >= _MINUTE_NS:
                    self._flatten_alerted[p.ticket] = now
                    outs.append(
                        self._alert(now, origin, "CRITICAL", AlertCode.FLATTEN_FAILED, f"{p.ticket}: {reply.code}")
                    )
            outs += self._closed(now, origin)
        # Durable on every change that a restart would restore differently (not on every event:
        # the snapshot's last-seen time moves each time; see AccountGuard.durable_key).
        key = guard.durable_key()
        if key != self._saved_guard:
            self.journal.save_guard(guard.snapshot())
            self._saved_guard = key
        if self.gauges is not None:  # positions being closed: their account is read next time
            self.gauges.observe(now, None if closing else account, guard, self.breaker)
        elif not closing and isinstance(self.broker, PaperBroker):
            self._quiet = (now, account, guard.changes)
        return outs

    def _closed(self, now: int, origin: int) -> list[Output]:
        outs: list[Output] = []
        try:
            trades = self.broker.closed_trades(now)
        except LINK_ERRORS as exc:
            return self._broker_down(now, origin, exc)
        for trade in trades:
            self.guard.record_close(trade.time_ns, trade.realized_pnl)
            entry = self.journal.by_client_order_id(trade.client_order_id)
            signal_id = UUID(entry.signal_id) if entry is not None else UUID(int=0)
            event = PnlEvent(
                timestamp=_time(trade.time_ns), signal_id=signal_id, order_id=trade.ticket, symbol=trade.symbol,
                side=trade.side, quantity=trade.quantity, entry_price=trade.entry_price,
                exit_price=trade.exit_price, realized_pnl=trade.realized_pnl, commission=trade.commission,
                currency=self.rules.currency, balance=trade.balance, exit_reason=trade.reason or None,
            )  # fmt: skip
            outs.append(self.emit(PNL, event, key=trade.symbol.encode(), origin_ns=origin))
        return outs

    def _alert(self, now: int, origin: int, severity: str, code: str, message: str) -> Output:
        alert = Alert(timestamp=_time(now), severity=Severity(severity), source=self.name, code=code, message=message)
        return self.emit(METRICS_ALERTS, alert, key=code.encode(), origin_ns=origin)

    # -- operator control ------------------------------------------------------------------------
    def _on_control(self, record: Record, now: int) -> list[Output]:
        """Apply an operator's command once (the journal remembers its id), durably before it is
        acknowledged: the guard's hold is saved, then the command is journaled, then the
        acknowledgement (`OPERATOR_*` on metrics.alerts, with the resulting state) goes out."""
        command = self.decode(record, ControlCommand)
        origin = self.origin_ns(record)
        account = self.settings.account
        if command.account not in (account, EVERY_ACCOUNT):
            log.info("execution: control command %s is for account %s, not %s: not ours", command.command_id,
                     command.account, account)  # fmt: skip
            return []
        cid = str(command.command_id)
        if self.journal.control_applied(cid):
            return []  # redelivered (at-least-once): applied already
        guard = self.guard
        issued = _ns(command)
        note = ""
        if command.action is ControlAction.RESUME:
            guard.release()
        else:
            flatten = command.action is ControlAction.FLATTEN
            age_s = (now - issued) / 1e9
            if flatten and age_s > self.settings.control_flatten_max_age_s:
                # A flatten read long after it was issued (a restored consumer, a replayed topic):
                # closing positions now could act on a market the operator never saw. Halt only.
                flatten = False
                limit = self.settings.control_flatten_max_age_s
                note = f"; flatten issued {age_s:.0f}s ago (> {limit:.0f}s): halted only"
            guard.hold(OperatorHold(cid, command.issued_by, command.reason, issued, flatten=flatten))
        # Durable before anything else: a crash from here on restarts with the hold in place.
        self.journal.save_guard(guard.snapshot())
        self._saved_guard = guard.durable_key()
        outs = self._observe(now, origin)  # a flatten closes the positions here (fills and P&L)
        state = guard.state.value
        self.journal.record_control(cid, command.action.value, command.issued_by, command.reason, issued, now, state)
        try:
            open_positions = len(self.broker.account(now).positions)
            positions = f"{open_positions} position(s) open"
        except LINK_ERRORS:
            positions = "positions unknown: broker unreachable"
        code = ACK_CODES[command.action]
        severity = "WARNING" if command.action is ControlAction.RESUME else "CRITICAL"
        message = (f"{command.action.value.lower()} by {command.issued_by} ({command.reason or 'no reason given'}), "
                   f"command {cid}: state {state}, {positions}{note}")  # fmt: skip
        log.warning("execution: %s", message)
        return [*outs, self._alert(now, origin, severity, code, message)]

    # -- signals ---------------------------------------------------------------------------------
    def spec(self, symbol: str) -> SymbolSettings:
        return self.settings.symbols.get(symbol) or SymbolSettings()

    def _on_signal(self, record: Record, now: int) -> list[Output]:
        signal = self.decode(record, Signal)
        origin = self.origin_ns(record)
        if signal.stage is not SignalStage.FINAL:
            raise MessageError(DeadLetter.NOT_FINAL_SIGNAL, f"signal {signal.signal_id} has stage {signal.stage.value}")
        if signal.symbol not in self.symbols:
            raise MessageError(
                DeadLetter.UNKNOWN_SYMBOL, f"signal {signal.signal_id} for {signal.symbol}, not traded here"
            )
        entry = self.journal.get(str(signal.signal_id))
        if entry is not None:
            # Redelivered (at-least-once): the journal decided this signal already. Never a second
            # order; re-emit what was decided in case those outputs never reached the bus.
            if entry.state in (JournalState.SUBMITTING, JournalState.UNCERTAIN):
                return self._reconcile(entry, now, origin, signal=signal)
            return self._replay(entry, origin)
        return self._decide(signal, now, origin)

    def _drop(self, signal: Signal, now: int, origin: int, reason: str, detail: str) -> list[Output]:
        sid = str(signal.signal_id)
        self.journal.record(
            sid, client_order_id(signal.signal_id), JournalState.DROPPED, signal.symbol, now, reason=reason
        )
        if self.gauges is not None:
            self.gauges.dropped(reason)
        return [self._alert(now, origin, "INFO", reason, f"signal {sid} {signal.symbol}: no order: {detail}")]

    def _decide(self, signal: Signal, now: int, origin: int) -> list[Output]:
        outs = self._observe(now, origin)
        expires = signal.timestamp + timedelta(seconds=signal.ttl_seconds)
        if _time(now) > expires:
            return outs + self._drop(signal, now, origin, Drop.SIGNAL_EXPIRED, f"expired at {expires.isoformat()}")
        guard = self.guard
        if self._broker_down_since is not None:
            return outs + self._drop(signal, now, origin, Drop.BROKER_UNAVAILABLE, f"{self.broker.name} unreachable")
        account = self.broker.account(now)
        refusal = guard.check_new_order(now, account, signal.symbol, 0.0)
        if refusal is not None:
            return outs + self._drop(signal, now, origin, refusal, f"guardrail {refusal}, state {guard.state.value}")
        side = Side.BUY if signal.direction is SignalDirection.LONG else Side.SELL
        spec = self.spec(signal.symbol)
        slip = self.rules.stop_slippage_bps / 10_000
        market = self.broker.price(signal.symbol, side, now) or signal.entry_price
        # The fill may be worse than the market by the modeled slippage: size and check on that.
        fill_estimate = market * (1 + slip) if side is Side.BUY else market * (1 - slip)
        long = side is Side.BUY
        if not (signal.stop_loss < fill_estimate < signal.take_profit if long else
                signal.take_profit < fill_estimate < signal.stop_loss):  # fmt: skip
            return outs + self._drop(signal, now, origin, Drop.PRICE_BEYOND_STOPS, f"market {market} vs stops")
        decision = self.sizer.size(
            probability=signal.confidence, entry=fill_estimate, stop_loss=signal.stop_loss,
            take_profit=signal.take_profit, equity=account.equity, headroom=guard.headroom(account), spec=spec,
            extra_loss_per_unit=signal.stop_loss * slip * spec.value_per_unit + 2 * spec.commission_per_lot,
            limit=signal.position_size,
        )  # fmt: skip
        if decision.quantity <= 0:
            return outs + self._drop(signal, now, origin, decision.reason, f"size 0 (kelly {decision.kelly:.4f})")
        qty = decision.quantity
        commission = qty * spec.commission_per_lot
        worst = commission + loss_to_stop(
            side=side, quantity=qty, price=fill_estimate, stop_loss=signal.stop_loss,
            value_per_unit=spec.value_per_unit, slippage_bps=self.rules.stop_slippage_bps, close_commission=commission,
        )  # fmt: skip
        refusal = guard.check_new_order(now, account, signal.symbol, worst)
        if refusal is not None:
            return outs + self._drop(signal, now, origin, refusal, f"worst case {worst:.2f} refused")
        return outs + self._send(signal, side, qty, market, now, origin)

    def _send(self, signal: Signal, side: Side, qty: float, market: float, now: int, origin: int) -> list[Output]:
        sid, cid = str(signal.signal_id), client_order_id(signal.signal_id)
        spec = self.spec(signal.symbol)
        request = OrderRequest(
            cid, signal.symbol, side, qty, market, signal.stop_loss, signal.take_profit,
            spec.value_per_unit, spec.commission_per_lot,
        )  # fmt: skip
        pending = Order(
            timestamp=_time(now), signal_id=signal.signal_id, order_id=cid, symbol=signal.symbol, side=side,
            order_type=OrderType.MARKET, quantity=qty, price=market, stop_loss=signal.stop_loss,
            take_profit=signal.take_profit, status=OrderStatus.PENDING, session=trading_session(now),
        )  # fmt: skip
        # Durable before the broker hears of it: a crash from here on finds SUBMITTING on restart
        # and reconciles with the broker instead of sending again.
        self.journal.record(
            sid, cid, JournalState.SUBMITTING, signal.symbol, now, messages=[_stored(ORDERS_PENDING, pending)]
        )
        outs = [self.emit(ORDERS_PENDING, pending, key=signal.symbol.encode(), origin_ns=origin)]
        self.guard.record_order(now)
        router = OrderRouter(self.broker, self.breaker, self._backoff(), self.clock)
        started = self._stopwatch()  # a latency measurement, not market logic
        result = router.submit(request)
        for _ in range(result.sends):
            self.journal.count_attempt(sid)
        latency_ms = self._stopwatch() - started
        if result.breaker_opened:
            outs.append(self._alert(now, origin, "CRITICAL", AlertCode.CIRCUIT_OPEN,
                                    f"{self.breaker.consecutive} consecutive broker failures: sending stopped "
                                    f"for {self.settings.breaker_cooldown_s:.0f}s"))  # fmt: skip
        return outs + self._settle(signal, pending, result.reply, latency_ms, self.clock.now_ns(), origin)

    def _settle(
        self, signal: Signal, pending: Order, reply: BrokerReply, latency_ms: float, now: int, origin: int
    ) -> list[Output]:
        sid, cid = str(signal.signal_id), pending.order_id
        key = signal.symbol.encode()
        if self.gauges is not None:
            self.gauges.settled(reply)
        if reply.outcome is Outcome.FILLED and reply.fill is not None:
            fill = reply.fill
            sign = 1 if pending.side is Side.BUY else -1
            reference = pending.price or fill.fill_price
            confirmed = pending.model_copy(update={
                "timestamp": _time(fill.time_ns), "order_id": fill.order_id, "quantity": fill.quantity,
                "status": OrderStatus.CONFIRMED, "latency_ms": latency_ms,
            })  # fmt: skip
            execution = Execution(
                timestamp=_time(fill.time_ns), signal_id=signal.signal_id, order_id=fill.order_id,
                execution_id=fill.execution_id, symbol=signal.symbol, side=pending.side, order_type=OrderType.MARKET,
                quantity=fill.quantity, price=reference, status=OrderStatus.FILLED, fill_price=fill.fill_price,
                slippage_bps=sign * (fill.fill_price - reference) / reference * 10_000, commission=fill.commission,
                latency_ms=max(0.0, (fill.time_ns - _ns(signal)) / 1e6), session=pending.session,
            )  # fmt: skip
            self.journal.record(sid, cid, JournalState.FILLED, signal.symbol, now, reason=reply.code, messages=[
                _stored(ORDERS_CONFIRMED, confirmed), _stored(EXECUTIONS, execution)])  # fmt: skip
            self.guard.record_open(now)
            return [
                self.emit(ORDERS_CONFIRMED, confirmed, key=key, origin_ns=origin),
                self.emit(EXECUTIONS, execution, key=key, origin_ns=origin),
            ]
        if reply.outcome is Outcome.UNKNOWN:
            # Not known whether the order exists: never resent; reconciled from on_time.
            self.journal.record(sid, cid, JournalState.UNCERTAIN, signal.symbol, now, reason=reply.code)
            return [self._alert(now, origin, "CRITICAL", AlertCode.ORDER_UNCERTAIN,
                                f"signal {sid} order {cid}: {reply.code} {reply.message}; reconciling")]  # fmt: skip
        rejected = pending.model_copy(update={"timestamp": _time(now), "status": OrderStatus.REJECTED,
                                              "latency_ms": latency_ms})  # fmt: skip
        self.journal.record(sid, cid, JournalState.REJECTED, signal.symbol, now, reason=reply.code,
                            messages=[_stored(ORDERS_CONFIRMED, rejected)])  # fmt: skip
        return [
            self.emit(ORDERS_CONFIRMED, rejected, key=key, origin_ns=origin),
            self._alert(now, origin, "WARNING", ORDER_REJECTED_PREFIX + reply.code,
                        f"signal {sid} order {cid} rejected: {reply.code} {reply.message}"),
        ]  # fmt: skip

    def _reconcile(self, entry: JournalEntry, now: int, origin: int, signal: Signal | None = None) -> list[Output]:
        """An order whose fate is unknown (crash mid-send, timeout): ask the broker."""
        try:
            fill = self.broker.find(entry.client_order_id, now)
        except LINK_ERRORS as exc:
            if signal is not None:
                # redelivered while the broker is away: not safe to decide; the DLQ keeps it for replay
                raise MessageError(
                    DeadLetter.BROKER_UNAVAILABLE, f"cannot reconcile {entry.client_order_id}: {exc}"
                ) from exc
            return self._broker_down(now, origin, exc)
        stored = [m for m in entry.messages if m["topic"] == ORDERS_PENDING]
        if fill is not None and stored:
            pending = Order.model_validate_json(stored[0]["data"])
            sig = signal or _signal_of(pending)
            reply = BrokerReply(Outcome.FILLED, BrokerCode.RECONCILED, fill=fill)
            # redelivered after a crash mid-send: the pending order may never have reached the bus
            again = [self.emit(ORDERS_PENDING, pending, key=entry.symbol.encode(), origin_ns=origin)] if signal else []
            return again + self._settle(sig, pending, reply, 0.0, now, origin)
        if entry.state is JournalState.SUBMITTING and signal is not None:
            # Crashed before the broker got it (no deal carries our id): decide again, afresh.
            return self._decide(signal, now, origin)
        return []

    def _replay(self, entry: JournalEntry, origin: int) -> list[Output]:
        outs = []
        for m in entry.messages:
            model = _MODELS[m["model"]]
            message = model.model_validate_json(m["data"])
            outs.append(self.emit(m["topic"], message, key=entry.symbol.encode(), origin_ns=origin))
        return outs

    def _stopwatch(self) -> float:
        """Milliseconds for latency measurements: the wall (monotonic) live; in a replay the
        event clock, which only moves when the router waits to retry. So a replay's orders
        carry the simulated wait, and two replays of the same input give the same bytes."""
        if isinstance(self.clock, EventClock):
            return self.clock.now_ns() / 1e6
        return time.perf_counter() * 1000

    def _backoff(self) -> Backoff:
        return Backoff(initial=self.settings.retry_initial_s, attempts=self.settings.retry_attempts)

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus | None = None) -> ExecutionStage:
        """The execution stage as configured: its broker (paper by default), journal, news calendar
        and Prometheus endpoint (when `execution.prometheus_port` is not 0)."""
        ex = settings.execution
        broker: Broker
        if ex.broker == "paper":
            broker = PaperBroker(
                ex.guardrails.initial_balance, slippage_bps=ex.paper_slippage_bps, state_path=ex.paper_state_path,
                durable=ex.durable_state,
            )  # fmt: skip
        else:
            from kstrade.execution.mt5 import open_mt5

            broker = open_mt5(ex)
        news = None
        if ex.guardrails.news_calendar is not None:
            news = NewsBlackout.from_file(ex.guardrails.news_calendar, ex.guardrails.news_window_minutes)
        gauges = None
        if ex.prometheus_port:
            from kstrade.execution.gauges import AccountGauges

            gauges = AccountGauges(ex.account)
            gauges.serve(ex.prometheus_port, ex.prometheus_addr)
        journal = OrderJournal(ex.journal_path, durable=ex.durable_state)
        return cls(
            ex, broker, journal, settings.symbols, news=news, gauges=gauges, base_interval=settings.base_interval
        )


_INTERVALS = frozenset(get_args(Interval))
_CANDLE_ORIGINS = frozenset(o.value for o in CandleOrigin)
_CANDLE_FIELDS = frozenset(Candle.model_fields)
#: Epoch microseconds a datetime holds (years 1 to 9999), with a day to spare either side.
_MICROS_MIN = -62_135_596_800_000_000 + 86_400_000_000
_MICROS_MAX = 253_402_300_799_999_999 - 86_400_000_000


class _CandleReader:
    """The stage's candle codec and what a current candle's headers and body decode need from
    it, worked out once (the codec's properties cost more than the candle's own checks)."""

    __slots__ = ("codec", "encoding", "marks", "native", "schema", "version", "version_header")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.schema = codec.schema_name.encode()
        self.version = codec.version
        self.version_header = str(codec.version).encode()
        self.encoding = codec.encoding.encode()
        #: Bare native Avro: `codec.decode_value` of a current body is `decode_candle` itself.
        self.native = codec.native and codec.format == "avro" and codec.wire == "bare"
        #: The same reading as `_current_candle_origin` and `_valid_candle` for a whole poll, in
        #: Rust (None where the body is not bare native Avro: each candle then takes `_candle`).
        self.marks: CandleMarks | None = None
        if self.native:
            intervals = {i: m for i, m in INTERVAL_MINUTES.items() if i in _INTERVALS}
            self.marks = CandleMarks(
                schema=codec.schema_name, version=codec.version, encoding=codec.encoding, intervals=intervals,
                origins=sorted(_CANDLE_ORIGINS), micros_min=_MICROS_MIN, micros_max=_MICROS_MAX,
            )  # fmt: skip


def _current_candle_origin(headers: Any, reader: _CandleReader) -> int | None:
    """The origin time when the headers are exactly what `Codec.headers` writes for the current
    bare Avro candle (schema, schema_version, origin_ns, stage, encoding; ASCII, a plain decimal
    origin), where `MessageHeaders.from_kafka` would read the same; None for anything else."""
    try:
        (n0, v0), (n1, v1), (n2, v2), (n3, v3), (n4, v4) = headers
    except (TypeError, ValueError):
        return None
    if (
        n0 != HEADER_SCHEMA or n1 != HEADER_SCHEMA_VERSION or n2 != HEADER_ORIGIN_NS or n3 != HEADER_STAGE
        or n4 != HEADER_ENCODING or v0 != reader.schema or v1 != reader.version_header
        or v4 != reader.encoding or type(v2) is not bytes or type(v3) is not bytes
        or not v2.isdigit() or not v3.isascii()
    ):  # fmt: skip
        return None
    return int(v2)


def _valid_candle(v: dict[str, Any]) -> bool:
    """True when `Candle.model_validate` of this decoded value (timestamp in epoch micros)
    certainly passes: only exact types and values the model accepts as they are."""
    if v.keys() != _CANDLE_FIELDS:
        return False
    ts, symbol, interval, source = v["timestamp"], v["symbol"], v["interval"], v["source"]
    o, h, low, c, volume = v["open"], v["high"], v["low"], v["close"], v["volume"]
    if type(ts) is not int or not _MICROS_MIN <= ts <= _MICROS_MAX:
        return False
    if type(symbol) is not str or not symbol or type(source) is not str or interval not in _INTERVALS:
        return False
    if not candle_provenance_valid(interval, v["minutes"], v["origin"]):
        return False
    for x in (o, h, low, c, volume):
        if type(x) is not float or not math.isfinite(x):
            return False
    return bool(volume >= 0 and low <= min(o, c) and max(o, c) <= h)


def _symbol_topic_mismatch(symbol: str, topic: str) -> MessageError:
    return MessageError(DeadLetter.SYMBOL_TOPIC_MISMATCH, f"a {symbol!r} candle on {topic}")


def _stored(topic: str, message: Message) -> dict[str, Any]:
    return {"topic": topic, "model": message.schema_file, "data": message.model_dump_json()}


def _ns(message: Message) -> int:
    delta = message.timestamp - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _signal_of(order: Order) -> Signal:
    """A stand-in signal for settling a reconciled order after restart (only its ids, symbol and
    timestamp are read)."""
    long = order.side is Side.BUY
    price = order.price or 1.0
    return Signal(
        timestamp=order.timestamp, symbol=order.symbol, signal_id=order.signal_id, stage=SignalStage.FINAL,
        direction=SignalDirection.LONG if long else SignalDirection.SHORT, confidence=0.5,
        entry_price=price, stop_loss=order.stop_loss or price * (0.5 if long else 2),
        take_profit=order.take_profit or price * (2 if long else 0.5), ttl_seconds=1,
    )  # fmt: skip


def build(settings: Settings) -> ExecutionStage:
    """`ExecutionStage.from_settings` (the name the tests use)."""
    return ExecutionStage.from_settings(settings)
