"""The execution stage on the in-process bus with the event clock: the order lifecycle on its
topics, realized P&L, exactly-once orders under redelivery and restart, dead letters, halts,
retries, reconciliation and the circuit breaker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kstrade.bus import Bus, Record
from kstrade.bus.topics import (
    EXECUTIONS,
    METRICS_ALERTS,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    candles,
    dlq_topic,
    signals,
)  # fmt: skip
from kstrade.clock import EventClock
from kstrade.config import ExecutionSettings, GuardrailSettings, SymbolSettings
from kstrade.execution import (
    BreakerState,
    BrokerReply,
    CircuitBreaker,
    ExecutionStage,
    Fill,
    JournalState,
    OrderJournal,
    OrderRequest,
    OrderRouter,
    Outcome,
    PaperBroker,
)  # fmt: skip
from kstrade.retry import Backoff
from kstrade.schemas import Codec
from kstrade.schemas.models import (
    Alert,
    Candle,
    Execution,
    Message,
    Order,
    OrderStatus,
    PnlEvent,
    Side,
    Signal,
    SignalDirection,
    SignalStage,
)  # fmt: skip
from kstrade.stage import Pipeline

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
BTC = SymbolSettings(value_per_unit=1.0, volume_step=0.001, volume_min=0.001, volume_max=100.0)


def settings(**guard: Any) -> ExecutionSettings:
    rules = {"stop_slippage_bps": 0.0, **guard}
    return ExecutionSettings(guardrails=GuardrailSettings(**rules), symbols={"BTC-USD": BTC}, paper_slippage_bps=0.0)


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


class Harness:
    """A memory bus, the execution stage with a paper broker, and helpers to feed and read it."""

    def __init__(
        self, journal: Path, cfg: ExecutionSettings | None = None, broker: Any = None, symbols: list[str] | None = None
    ) -> None:
        self.bus = Bus.memory()
        self.cfg = cfg or settings()
        self.broker = broker or PaperBroker(
            self.cfg.guardrails.initial_balance, slippage_bps=self.cfg.paper_slippage_bps
        )
        self.journal = OrderJournal(journal)
        self.symbols = symbols or ["BTC-USD"]
        self.stage = ExecutionStage(self.cfg, self.broker, self.journal, self.symbols)
        outputs = [ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL, METRICS_ALERTS]
        topics = [signals("final"), *[candles(s, "1m") for s in self.symbols], *outputs]
        self.bus.admin().create_topics([(t, 1, 1, {}) for t in topics + [dlq_topic(t) for t in topics]])
        self.clock = EventClock(ns(T0))
        self.pipeline = Pipeline(self.bus, [self.stage], self.clock)
        self.producer = self.bus.producer()
        self.reader = self.bus.consumer("test-reader")
        self.reader.subscribe([*outputs, dlq_topic(signals("final"))])
        self.seen: list[Record] = []

    def at(self, t: datetime) -> None:
        self.clock.advance_to(ns(t))

    def candle(self, t: datetime, o: float, h: float, low: float, c: float) -> None:
        self.at(t)
        msg = Candle(timestamp=t, symbol="BTC-USD", interval="1m", open=o, high=h, low=low, close=c, volume=1.0,
                     source="test")  # fmt: skip
        self.send(candles("BTC-USD", "1m"), msg, ns(t))

    def signal(
        self, t: datetime, entry: float, sl: float, tp: float, p: float = 0.6, delay: float = 0.0, **kw: Any
    ) -> Signal:
        """A final signal made at `t`, arriving `delay` seconds later."""
        fields: dict[str, Any] = {
            "timestamp": t, "symbol": "BTC-USD", "signal_id": uuid.uuid4(), "stage": SignalStage.FINAL,
            "direction": SignalDirection.LONG if sl < entry else SignalDirection.SHORT, "confidence": p,
            "entry_price": entry, "stop_loss": sl, "take_profit": tp, "ttl_seconds": 120, **kw,
        }  # fmt: skip
        msg = Signal(**fields)
        self.at(t + timedelta(seconds=delay))
        self.send(signals("final"), msg, ns(t))
        return msg

    def send(self, topic: str, msg: Message, origin: int) -> None:
        codec = Codec(type(msg))
        self.producer.send(topic, codec.encode(msg), key=b"BTC-USD", headers=codec.headers(origin, "test"))
        self.producer.flush()
        self.pipeline.drain()

    def read(self) -> dict[str, list[Any]]:
        """Everything new on the output topics, decoded, by topic."""
        while batch := self.reader.poll(max_records=1000, timeout=0.0):
            self.seen += batch
        out: dict[str, list[Any]] = {}
        models: dict[str, type[Message]] = {ORDERS_PENDING: Order, ORDERS_CONFIRMED: Order, EXECUTIONS: Execution,
                                            PNL: PnlEvent, METRICS_ALERTS: Alert}  # fmt: skip
        for r in self.seen:
            if r.topic in models:
                out.setdefault(r.topic, []).append(Codec(models[r.topic]).decode_record(r))
            else:
                out.setdefault(r.topic, []).append(r)
        return out


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "orders.sqlite3")


def test_order_lifecycle_and_realized_pnl(h: Harness) -> None:
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    # p 0.6, stop 1 000 below, target 2 000 above: b = 2, f* = 0.4, quarter Kelly 0.1 -> capped at
    # 1 % of 100 000 = 1 000 USD at risk / 1 000 USD per BTC = 1.000 BTC.
    sig = h.signal(T0, 50_000, 49_000, 52_000, delay=5.0)
    out = h.read()
    [pending] = out[ORDERS_PENDING]
    assert (pending.status, pending.quantity, pending.side, pending.stop_loss, pending.take_profit) == (
        OrderStatus.PENDING, 1.0, Side.BUY, 49_000, 52_000,
    )  # fmt: skip
    assert pending.signal_id == sig.signal_id
    [confirmed] = out[ORDERS_CONFIRMED]
    assert confirmed.status is OrderStatus.CONFIRMED and confirmed.order_id.startswith("paper-")
    [fill] = out[EXECUTIONS]
    assert (fill.fill_price, fill.slippage_bps, fill.quantity, fill.latency_ms) == (50_000, 0.0, 1.0, 5_000.0)
    assert fill.session == "london"
    # the target is hit on a later candle: +2 000 USD
    h.candle(T0 + timedelta(minutes=1), 50_500, 52_500, 50_400, 52_100)
    [pnl] = h.read()[PNL]
    assert (pnl.exit_price, pnl.realized_pnl, pnl.balance, pnl.signal_id) == (52_000, 2_000, 102_000, sig.signal_id)
    assert pnl.exit_reason == "TAKE_PROFIT"


def test_a_redelivered_signal_never_produces_a_second_order(h: Harness) -> None:
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = h.signal(T0 + timedelta(seconds=5), 50_000, 49_000, 52_000)
    h.send(signals("final"), sig, ns(T0))  # the same signal again (at-least-once delivery)
    assert h.broker.sent == 1
    out = h.read()
    # what was decided is re-emitted (its outputs may never have reached the bus), same order id
    assert len(out[ORDERS_CONFIRMED]) == 2
    assert len({o.order_id for o in out[ORDERS_CONFIRMED]}) == 1
    assert len({e.execution_id for e in out[EXECUTIONS]}) == 1


def test_the_journal_survives_a_restart(tmp_path: Path) -> None:
    first = Harness(tmp_path / "j.sqlite3")
    first.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = first.signal(T0 + timedelta(seconds=5), 50_000, 49_000, 52_000)
    first.journal.close()
    second = Harness(tmp_path / "j.sqlite3")  # a new process: new broker connection, same journal
    second.candle(T0, 50_000, 50_000, 50_000, 50_000)
    second.send(signals("final"), sig, ns(T0))
    assert second.broker.sent == 0
    entry = second.journal.get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.FILLED and entry.attempts == 1


def test_expired_and_unsized_signals_are_dropped_with_a_reason(h: Harness) -> None:
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    old = h.signal(T0 - timedelta(minutes=3), 50_000, 49_000, 52_000)  # ttl 120 s, now is 3 min later
    no_edge = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000, p=0.3)  # 0.3 - 0.7/2 < 0
    assert h.broker.sent == 0
    alerts = {a.code: a for a in h.read()[METRICS_ALERTS]}
    assert str(old.signal_id) in alerts["SIGNAL_EXPIRED"].message
    assert str(no_edge.signal_id) in alerts["KELLY_NON_POSITIVE"].message
    entry = h.journal.get(str(old.signal_id))
    assert entry is not None and (entry.state, entry.reason) == (JournalState.DROPPED, "SIGNAL_EXPIRED")


def test_bad_signals_go_to_the_dead_letter_topic(h: Harness) -> None:
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    h.signal(T0, 50_000, 49_000, 52_000, stage=SignalStage.FILTERED)
    h.producer.send(signals("final"), b"\x02garbage", key=b"x", headers=Codec(Signal).headers(1, "test"))
    h.producer.flush()
    h.pipeline.drain()
    dead = h.read()[dlq_topic(signals("final"))]
    assert [r.header("dlq.error.code") for r in dead] == [b"NOT_FINAL_SIGNAL", b"MALFORMED"]
    assert h.broker.sent == 0
    h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)  # the stage is still alive
    assert h.broker.sent == 1


def test_a_daily_breach_halts_and_flattens_until_prague_midnight(tmp_path: Path) -> None:
    # 1 % daily limit (1 000 USD): the first trade risks all of it; the price gaps through its stop.
    h = Harness(tmp_path / "j.sqlite3", settings(max_daily_loss_pct=1.0, max_open_positions=5))
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    assert h.broker.sent == 1
    h.candle(T0 + timedelta(minutes=1), 48_500, 48_600, 48_400, 48_500)  # gap: filled at 48 500
    out = h.read()
    assert out[PNL][0].realized_pnl == -1_500 and out[PNL][0].exit_reason == "STOP_LOSS_GAP"
    assert "DAILY_LOSS_BREACHED" in [a.code for a in out[METRICS_ALERTS]]
    h.signal(T0 + timedelta(minutes=2), 48_500, 48_000, 49_500)
    assert h.broker.sent == 1
    assert h.journal.in_state(JournalState.DROPPED)[-1].reason == "TRADING_HALTED"
    # 23:00 UTC is Prague midnight in January: a new day, a new floor (98 500 - 1 000)
    midnight = datetime(2026, 1, 5, 23, 0, tzinfo=UTC)
    h.candle(midnight, 48_500, 48_500, 48_500, 48_500)
    h.signal(midnight + timedelta(seconds=1), 48_500, 48_300, 48_900)
    assert h.broker.sent == 2


class ScriptedBroker(PaperBroker):
    """A paper broker whose sends answer from a script first: REQUOTE, or a TIMEOUT after which
    the deal did happen (the case that must not become a second order)."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(100_000, slippage_bps=0.0)
        self.script = script
        self.tries = 0

    def send(self, request: OrderRequest, now_ns: int) -> BrokerReply:
        self.tries += 1
        step = self.script.pop(0) if self.script else "FILL"
        if step == "REQUOTE":
            return BrokerReply(Outcome.RETRYABLE, "REQUOTE")
        if step == "TIMEOUT_FILLED":
            super().send(request, now_ns)
            return BrokerReply(Outcome.UNKNOWN, "TIMEOUT")
        if step == "TIMEOUT":
            return BrokerReply(Outcome.UNKNOWN, "TIMEOUT")
        if step == "NO_MONEY":
            return BrokerReply(Outcome.REJECTED, "NO_MONEY")
        return super().send(request, now_ns)


def request() -> OrderRequest:
    return OrderRequest("ks-1", "BTC-USD", Side.BUY, 1.0, 50_000, 49_000, 52_000)


def router(broker: PaperBroker, breaker: CircuitBreaker | None = None) -> tuple[OrderRouter, EventClock]:
    clock = EventClock(ns(T0))
    return OrderRouter(broker, breaker or CircuitBreaker(5, 60), Backoff(initial=0.5, attempts=3), clock), clock


def test_requotes_are_retried_with_backoff_then_filled() -> None:
    broker = ScriptedBroker(["REQUOTE", "REQUOTE"])
    r, clock = router(broker)
    result = r.submit(request())
    assert result.reply.outcome is Outcome.FILLED and result.sends == 3
    # waited about 0.5 s then 1 s (+/- 20 % jitter) on the event clock
    assert 1.2e9 <= clock.now_ns() - ns(T0) <= 1.8e9


def test_retries_stop_after_three() -> None:
    broker = ScriptedBroker(["REQUOTE"] * 10)
    result = router(broker)[0].submit(request())
    assert (result.reply.code, result.sends, len(broker.positions)) == ("REQUOTE", 4, 0)


def test_a_rejection_is_never_retried() -> None:
    broker = ScriptedBroker(["NO_MONEY"])
    result = router(broker)[0].submit(request())
    assert (result.reply.outcome, result.sends) == (Outcome.REJECTED, 1)


def test_a_timeout_where_the_deal_happened_is_reconciled_not_resent() -> None:
    broker = ScriptedBroker(["TIMEOUT_FILLED"])
    result = router(broker)[0].submit(request())
    assert result.reply.outcome is Outcome.FILLED and result.reply.code == "RECONCILED"
    assert (broker.tries, len(broker.positions)) == (1, 1)


def test_the_circuit_breaker_opens_stops_sending_and_half_opens_after_the_cooldown() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=60)
    broker = ScriptedBroker(["TIMEOUT"] * 3)
    r, clock = router(broker, breaker)
    result = r.submit(request())
    assert result.breaker_opened and result.reply.code == "CIRCUIT_OPEN" and broker.tries == 3
    assert breaker.state(clock.now_ns()) is BreakerState.OPEN
    assert r.submit(request()).reply.code == "CIRCUIT_OPEN" and broker.tries == 3  # nothing sent
    clock.advance_to(clock.now_ns() + 60_000_000_000)
    assert breaker.state(clock.now_ns()) is BreakerState.HALF_OPEN
    assert r.submit(request()).reply.outcome is Outcome.FILLED and broker.tries == 4
    assert breaker.state(clock.now_ns()) is BreakerState.CLOSED


def test_a_half_open_failure_reopens() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=10)
    assert not breaker.failure(0) and breaker.failure(1)
    assert breaker.state(10_000_000_001) is BreakerState.HALF_OPEN
    assert breaker.failure(10_000_000_001)  # the trial failed: open again for another cooldown
    assert not breaker.allows(20_000_000_000) and breaker.allows(20_000_000_001)


def test_the_stage_alerts_when_the_breaker_opens(tmp_path: Path) -> None:
    cfg = ExecutionSettings(
        guardrails=GuardrailSettings(stop_slippage_bps=0.0), symbols={"BTC-USD": BTC}, breaker_failures=2,
        retry_attempts=1, retry_initial_s=0.1,
    )  # fmt: skip
    h = Harness(tmp_path / "j.sqlite3", cfg, ScriptedBroker(["TIMEOUT", "TIMEOUT"]))
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    codes = [a.code for a in h.read()[METRICS_ALERTS]]
    assert "CIRCUIT_OPEN" in codes and "ORDER_UNCERTAIN" in codes
    entry = h.journal.get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.UNCERTAIN


def test_a_restart_mid_send_reconciles_with_the_broker(tmp_path: Path) -> None:
    broker = PaperBroker(100_000, slippage_bps=0.0)
    h = Harness(tmp_path / "j.sqlite3", broker=broker)
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    # simulate a crash after the broker filled but before the journal heard back
    entry = h.journal.get(str(sig.signal_id))
    assert entry is not None
    h.journal.record(entry.signal_id, entry.client_order_id, JournalState.SUBMITTING, "BTC-USD", 0)
    fill: Fill | None = broker.find(entry.client_order_id, 0)
    assert fill is not None
    h.send(signals("final"), sig, ns(T0))
    assert broker.sent == 1
    after = h.journal.get(str(sig.signal_id))
    assert after is not None and after.state is JournalState.FILLED


class UnreachableBroker(PaperBroker):
    """A paper broker whose link can be cut (as a dead MT5 terminal or bridge would be)."""

    def __init__(self) -> None:
        super().__init__(100_000, slippage_bps=0.0)
        self.down = False

    def account(self, now_ns: int) -> Any:
        if self.down:
            raise ConnectionError("bridge closed")
        return super().account(now_ns)


def test_an_unreachable_broker_drops_signals_with_one_alert_and_recovers(tmp_path: Path) -> None:
    broker = UnreachableBroker()
    h = Harness(tmp_path / "j.sqlite3", broker=broker)
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    broker.down = True
    first = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    h.signal(T0 + timedelta(seconds=2), 50_000, 49_000, 52_000)
    alerts = [(a.code, a.severity.value) for a in h.read()[METRICS_ALERTS]]
    # one CRITICAL alert a minute, not one per event; each dropped signal says why (INFO)
    assert alerts.count(("BROKER_UNAVAILABLE", "CRITICAL")) == 1
    assert alerts.count(("BROKER_UNAVAILABLE", "INFO")) == 2
    entry = h.journal.get(str(first.signal_id))
    assert entry is not None and entry.reason == "BROKER_UNAVAILABLE"
    broker.down = False
    h.signal(T0 + timedelta(seconds=3), 50_000, 49_000, 52_000)
    assert broker.sent == 1


def test_an_uncertain_order_is_settled_when_the_broker_shows_it(tmp_path: Path) -> None:
    cfg = ExecutionSettings(
        guardrails=GuardrailSettings(stop_slippage_bps=0.0), symbols={"BTC-USD": BTC}, retry_attempts=0,
    )  # fmt: skip
    broker = ScriptedBroker(["TIMEOUT"])
    h = Harness(tmp_path / "j.sqlite3", cfg, broker)
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    entry = h.journal.get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.UNCERTAIN
    assert ORDERS_CONFIRMED not in h.read()
    # the deal shows up at the broker late (it was placed after all)
    PaperBroker.send(broker, OrderRequest(entry.client_order_id, "BTC-USD", Side.BUY, 1.0, 50_000, 49_000, 52_000), 0)
    h.at(T0 + timedelta(seconds=30))
    h.pipeline.step()
    [confirmed] = h.read()[ORDERS_CONFIRMED]
    assert confirmed.signal_id == sig.signal_id and confirmed.status is OrderStatus.CONFIRMED
    after = h.journal.get(str(sig.signal_id))
    assert after is not None and after.state is JournalState.FILLED
    assert broker.tries == 1  # looked up, never resent


def test_an_uncertain_order_never_found_is_given_up_after_a_day(tmp_path: Path) -> None:
    cfg = ExecutionSettings(
        guardrails=GuardrailSettings(stop_slippage_bps=0.0), symbols={"BTC-USD": BTC}, retry_attempts=0,
    )  # fmt: skip
    broker = ScriptedBroker(["TIMEOUT"])
    h = Harness(tmp_path / "j.sqlite3", cfg, broker)
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    sig = h.signal(T0 + timedelta(seconds=1), 50_000, 49_000, 52_000)
    h.at(T0 + timedelta(hours=23))
    h.pipeline.step()
    entry = h.journal.get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.UNCERTAIN  # still looking
    h.at(T0 + timedelta(hours=24, seconds=2))
    h.pipeline.step()
    entry = h.journal.get(str(sig.signal_id))
    assert entry is not None and (entry.state, entry.reason) == (JournalState.REJECTED, "NEVER_CONFIRMED")
    assert "ORDER_NEVER_CONFIRMED" in [a.code for a in h.read()[METRICS_ALERTS]]
    assert broker.tries == 1


def test_the_paper_account_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "paper.json"
    broker = PaperBroker(100_000, slippage_bps=0.0, state_path=path)
    broker.mark(Candle(timestamp=T0, symbol="BTC-USD", interval="1m", open=50_000, high=50_000, low=50_000,
                       close=50_000, volume=1, source="t"), 0)  # fmt: skip
    r = OrderRequest("ks-1", "BTC-USD", Side.BUY, 2.0, 50_000, 49_000, 52_000, 1.0, 5.0)
    assert broker.send(r, 1).outcome is Outcome.FILLED
    broker.send(OrderRequest("ks-2", "BTC-USD", Side.SELL, 1.0, 50_000, 51_000, 48_000, 1.0, 5.0), 2)
    broker.close_position(next(t for t, o in broker.positions.items() if o.position.client_order_id == "ks-2"), 3, "x")
    again = PaperBroker(0, state_path=path)  # the restarted service
    assert again.balance == pytest.approx(100_000 - 10 - 5 - 5)  # three commissions of 5 per lot, one of 10
    assert [p.client_order_id for p in again.account(4).positions] == ["ks-1"]
    assert again.find("ks-1", 4) == broker.find("ks-1", 4)
    [closed] = again.closed_trades(4)  # not yet reported before the restart: reported now, once
    assert closed.client_order_id == "ks-2" and again.closed_trades(5) == []
    assert PaperBroker(0, state_path=path).closed_trades(6) == []


def test_one_execution_process_per_journal(tmp_path: Path) -> None:
    from kstrade.execution.journal import JournalLocked

    first = OrderJournal(tmp_path / "orders.sqlite3")
    with pytest.raises(JournalLocked, match="one execution process per account"):
        OrderJournal(tmp_path / "orders.sqlite3")
    first.close()
    OrderJournal(tmp_path / "orders.sqlite3").close()  # free again once the first is gone


class StuckBroker(PaperBroker):
    """Cannot close anything (market closed, terminal refusing)."""

    def close_position(self, ticket: str, now_ns: int, reason: str) -> BrokerReply:
        return BrokerReply(Outcome.REJECTED, "MARKET_CLOSED")


def test_a_failing_flatten_is_retried_on_every_event_and_alerted_once_a_minute(tmp_path: Path) -> None:
    broker = StuckBroker(100_000, slippage_bps=0.0)
    h = Harness(tmp_path / "j.sqlite3", settings(funded=True), broker)
    friday = datetime(2026, 1, 9, 20, 0, tzinfo=UTC)  # 21:00 in Prague
    h.candle(friday, 50_000, 50_000, 50_000, 50_000)
    h.signal(friday + timedelta(seconds=1), 50_000, 49_000, 52_000)
    assert len(broker.positions) == 1
    close = datetime(2026, 1, 9, 20, 45, tzinfo=UTC)  # 21:45 in Prague: the weekend close
    for i in range(3):
        h.candle(close + timedelta(seconds=10 * i), 50_000, 50_000, 50_000, 50_000)
    codes = [a.code for a in h.read()[METRICS_ALERTS]]
    assert "WEEKEND_CLOSE" in codes
    assert codes.count("FLATTEN_FAILED") == 1  # tried on each of three events within a minute: told once
    h.candle(close + timedelta(minutes=2), 50_000, 50_000, 50_000, 50_000)
    assert [a.code for a in h.read()[METRICS_ALERTS]].count("FLATTEN_FAILED") == 2
    assert len(broker.positions) == 1


def test_funded_accounts_are_flat_over_the_weekend(tmp_path: Path) -> None:
    h = Harness(tmp_path / "j.sqlite3", settings(funded=True))
    friday = datetime(2026, 1, 9, 20, 0, tzinfo=UTC)
    h.candle(friday, 50_000, 50_000, 50_000, 50_000)
    h.signal(friday + timedelta(seconds=1), 50_000, 49_000, 52_000)
    h.candle(datetime(2026, 1, 9, 20, 45, tzinfo=UTC), 50_000, 50_300, 50_000, 50_200)  # 21:45 Prague
    assert h.broker.positions == {}
    # closed at the first event past the close time, at the price known then (before this candle)
    [pnl] = h.read()[PNL]
    assert pnl.exit_price == 50_000 and pnl.realized_pnl == 0 and pnl.exit_reason == "GUARDRAIL"
    h.signal(datetime(2026, 1, 10, 12, 0, tzinfo=UTC), 50_200, 49_200, 52_200)  # Saturday: nothing opens
    assert h.broker.sent == 1


def test_a_candle_of_another_symbol_on_a_candle_topic_is_dead_lettered(h: Harness) -> None:
    """Issue 19 (was a KNOWN_GAP of the poison test): it marked the paper broker with its prices."""
    h.candle(T0, 50_000, 50_000, 50_000, 50_000)
    check = h.bus.consumer("check")
    check.subscribe([dlq_topic(candles("BTC-USD", "1m"))])
    t = T0 + timedelta(minutes=1)
    h.at(t)
    msg = Candle(timestamp=t, symbol="ZZZ-USD", interval="1m", open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0,
                 source="test")  # fmt: skip
    h.send(candles("BTC-USD", "1m"), msg, ns(t))
    dead = check.poll(max_records=10, timeout=0.0)
    assert [r.header("dlq.error.code") for r in dead] == [b"SYMBOL_TOPIC_MISMATCH"]
    assert "ZZZ-USD" not in h.broker.prices and h.broker.prices["BTC-USD"] == 50_000


def test_a_non_durable_paper_account_is_written_once_on_close(tmp_path: Path) -> None:
    """A replay's account (`durable_state = false`): no write per fill, the whole account on close."""
    path = tmp_path / "paper.json"
    broker = PaperBroker(100_000, slippage_bps=0.0, state_path=path, durable=False)
    broker.mark(Candle(timestamp=T0, symbol="BTC-USD", interval="1m", open=50_000, high=50_000, low=50_000,
                       close=50_000, volume=1, source="t"), 0)  # fmt: skip
    assert broker.send(OrderRequest("ks-1", "BTC-USD", Side.BUY, 2.0, 50_000, 49_000, 52_000, 1.0, 5.0), 1).outcome \
        is Outcome.FILLED  # fmt: skip
    assert not path.exists()
    broker.close()
    again = PaperBroker(0, state_path=path)
    assert again.balance == broker.balance and again.find("ks-1", 2) == broker.find("ks-1", 2)
    assert [p.client_order_id for p in again.account(2).positions] == ["ks-1"]
