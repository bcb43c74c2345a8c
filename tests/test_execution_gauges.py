"""The execution service's account gauges: the stage the service builds (`execution.build`, with
its Prometheus endpoint on `execution.prometheus_port`) trades, is refused by the sizer, the
expiry check and the broker, breaches the daily loss and is halted by an operator; each time the
real endpoint is scraped and must say what the order journal, the paper account and the P&L
events say. The Grafana account dashboard queries only what the endpoint exports. The metrics
collector reads the same bus, and its Telegram /positions and /daily say what the paper account
and the P&L events say."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kstrade.app import _isolated
from kstrade.bus import Bus
from kstrade.bus.topics import (
    CONTROL_EXECUTION,
    EXECUTIONS,
    METRICS_ALERTS,
    METRICS_DRIFT,
    METRICS_LATENCY,
    METRICS_PERFORMANCE,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    candles,
    dlq_topic,
    signals,
)
from kstrade.clock import EventClock
from kstrade.config import GuardrailSettings, MetricsSettings, Settings, load
from kstrade.execution import (
    AccountGuard,
    AccountSnapshot,
    BrokerReply,
    CircuitBreaker,
    ExecutionStage,
    JournalState,
    OrderRequest,
    Outcome,
    PaperBroker,
)
from kstrade.execution.gauges import AccountGauges
from kstrade.execution.stage import build
from kstrade.execution.trading_day import trading_day
from kstrade.metrics import MetricsCollector
from kstrade.metrics.account import AccountView
from kstrade.schemas import Codec
from kstrade.schemas.models import (
    Alert,
    Candle,
    ControlAction,
    ControlCommand,
    Execution,
    Message,
    OrderStatus,
    OrderType,
    PnlEvent,
    Side,
    Signal,
    SignalDirection,
    SignalStage,
)
from kstrade.stage import Pipeline

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "kstrade-account.json"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Prague
SYMBOL = "BTC-USD"
ACCOUNT = "ftmo-test"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def service_settings(tmp_path: Path, port: int) -> Settings:
    """What `python -m kstrade service execution` would build from: paper broker, 1 % daily limit
    (1 000 USD on 100 000), no slippage, the endpoint on `port`."""
    return load(
        None,
        symbols=[SYMBOL],
        execution={
            "account": ACCOUNT, "journal_path": str(tmp_path / "orders.sqlite3"),
            "paper_state_path": str(tmp_path / "paper.json"), "paper_slippage_bps": 0.0,
            "prometheus_port": port, "symbols": {SYMBOL: {"value_per_unit": 1.0, "volume_step": 0.001}},
            "guardrails": {"max_daily_loss_pct": 1.0, "max_open_positions": 5, "stop_slippage_bps": 0.0},
        },
    )  # fmt: skip


class Service:
    """The built stage on a memory bus with the event clock, fed candles, signals and commands."""

    def __init__(self, stage: ExecutionStage) -> None:
        self.stage = stage
        assert isinstance(stage.broker, PaperBroker) and stage.gauges is not None and stage.gauges.server is not None
        self.paper: PaperBroker = stage.broker
        self.url = f"http://127.0.0.1:{stage.gauges.server.server_port}/metrics"
        self.bus = Bus.memory()
        topics = [signals("final"), candles(SYMBOL, "1m"), CONTROL_EXECUTION]
        outputs = [ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL, METRICS_ALERTS]
        metrics = [METRICS_LATENCY, METRICS_PERFORMANCE, METRICS_DRIFT]
        self.bus.admin().create_topics(
            [(t, 1, 1, {}) for t in topics + outputs + metrics + [dlq_topic(t) for t in topics]]
        )
        self.clock = EventClock(ns(T0))
        # The metrics collector on the same bus: the Telegram bot's process.
        self.collector = MetricsCollector(MetricsSettings(prometheus_port=0, database_url="", lag_groups=[]))
        self.pipeline = Pipeline(self.bus, [stage, self.collector], self.clock)
        self.producer = self.bus.producer()
        self.reader = self.bus.consumer("test-reader")
        self.reader.subscribe([PNL, METRICS_ALERTS])
        self.pnl: list[PnlEvent] = []
        self.alerts: list[str] = []

    def send(self, topic: str, msg: Message, at: datetime, origin: datetime) -> None:
        self.clock.advance_to(ns(at))
        codec = Codec(type(msg))
        self.producer.send(topic, codec.encode(msg), key=SYMBOL.encode(), headers=codec.headers(ns(origin), "test"))
        self.producer.flush()
        self.pipeline.drain()
        while batch := self.reader.poll(max_records=1000, timeout=0.0):
            for r in batch:
                if r.topic == PNL:
                    self.pnl.append(Codec(PnlEvent).decode_record(r))
                else:
                    self.alerts.append(Codec(Alert).decode_record(r).code)

    def candle(self, t: datetime, o: float, h: float, low: float, c: float) -> None:
        msg = Candle(timestamp=t, symbol=SYMBOL, interval="1m", open=o, high=h, low=low, close=c, volume=1.0,
                     source="test")  # fmt: skip
        self.send(candles(SYMBOL, "1m"), msg, t, t)

    def signal(self, t: datetime, entry: float, sl: float, tp: float, p: float = 0.6, delay_s: float = 1.0) -> None:
        msg = Signal(
            timestamp=t, symbol=SYMBOL, signal_id=uuid.uuid4(), stage=SignalStage.FINAL,
            direction=SignalDirection.LONG if sl < entry else SignalDirection.SHORT, confidence=p,
            entry_price=entry, stop_loss=sl, take_profit=tp, ttl_seconds=120,
        )  # fmt: skip
        self.send(signals("final"), msg, t + timedelta(seconds=delay_s), t)

    def command(self, t: datetime, action: ControlAction) -> None:
        msg = ControlCommand(timestamp=t, command_id=uuid.uuid4(), account=ACCOUNT, action=action,
                             issued_by="test", reason="gauge test")  # fmt: skip
        self.send(CONTROL_EXECUTION, msg, t, t)

    def tick(self) -> datetime:
        """A second later: the service's `on_time` looks at the account (every second, live)."""
        self.clock.advance_to(self.clock.now_ns() + 1_000_000_000)
        self.pipeline.drain()
        return datetime.fromtimestamp(self.clock.now_ns() / 1e9, UTC)

    def scrape(self) -> Samples:
        text = httpx.get(self.url, timeout=10).text
        return {
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "account"))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.labels.get("account", ACCOUNT) == ACCOUNT
        }


def expected(svc: Service, now: datetime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the gauges must read, from the journal, the paper account and the P&L events only."""
    journal, account = svc.stage.journal, svc.paper.account(ns(now))
    guard = svc.stage.guard  # its floors: the rules' own numbers, not the gauges'
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        ("kstrade_account_balance", ()): account.balance,
        ("kstrade_account_equity", ()): account.equity,
        ("kstrade_account_daily_loss_headroom", ()): account.equity - guard.daily.floor,
        ("kstrade_account_max_loss_headroom", ()): account.equity - guard.max_loss.floor,
        ("kstrade_account_realized_pnl_today", ()): sum(
            e.realized_pnl for e in svc.pnl if trading_day(ns(e.timestamp)) == trading_day(ns(now))
        ),
    }
    held = Counter(p.symbol for p in account.positions)
    out[("kstrade_account_open_positions", (("symbol", SYMBOL),))] = held[SYMBOL]
    for state in (JournalState.FILLED, JournalState.REJECTED, JournalState.UNCERTAIN, JournalState.DROPPED):
        entries = journal.in_state(state)
        out[("kstrade_execution_orders_total", (("status", state.value),))] = len(entries)
        if state in (JournalState.DROPPED, JournalState.REJECTED):
            source = "signal" if state is JournalState.DROPPED else "broker"
            for reason, n in Counter(e.reason for e in entries).items():
                out[("kstrade_execution_rejections_total", (("code", reason), ("source", source)))] = n
    return out


def check(svc: Service) -> Samples:
    """The endpoint against the journal and the account, once the service has looked (a tick)."""
    now = svc.tick()
    samples = svc.scrape()
    want = expected(svc, now)
    got = {k: samples.get(k) for k in want}
    assert got == pytest.approx(want), {k: (got[k], v) for k, v in want.items() if got[k] != pytest.approx(v)}
    # no refusal counted that the journal does not hold
    counted = {k for k, v in samples.items() if k[0] == "kstrade_execution_rejections_total" and v}
    assert counted <= set(want)
    # Telegram, from the collector's view of the same bus: the paper account's positions, and
    # today's P&L as the P&L events add up
    positions = svc.paper.account(ns(now)).positions
    rows = [f"{p.symbol} {p.side.value} {p.quantity:g} @ {p.entry_price:g} ({p.ticket})" for p in positions]
    assert svc.collector.command("/positions") == (
        "\n".join([f"open positions: {len(rows)}", *rows]) if rows else "open positions: none"
    )
    today = want[("kstrade_account_realized_pnl_today", ())]
    daily = svc.collector.command("/daily")
    assert daily.startswith(f"today ({trading_day(ns(now)).isoformat()}, Prague): realized P&L {today:.2f} "), daily
    assert daily.endswith(f"balance {svc.paper.balance:.2f} USD") or not svc.pnl, daily
    return samples


def state(samples: Samples, name: str) -> str:
    [current] = [dict(k[1])["state"] for k, v in samples.items() if k[0] == name and v == 1]
    return current


def test_the_endpoint_says_what_the_journal_and_the_paper_account_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service(build(service_settings(tmp_path, free_port())))
    try:
        _run(svc, monkeypatch)
    finally:
        assert svc.stage.gauges is not None and svc.stage.gauges.server is not None
        svc.stage.gauges.server.shutdown()
        svc.stage.journal.close()


def _run(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    m = timedelta(minutes=1)
    svc.candle(T0, 50_000, 50_000, 50_000, 50_000)
    svc.signal(T0, 50_000, 49_000, 52_000)  # filled: 1 BTC (1 000 at risk, the whole daily limit)
    samples = check(svc)
    assert samples[("kstrade_execution_orders_total", (("status", "FILLED"),))] == 1
    svc.candle(T0 + m, 50_500, 52_500, 50_400, 52_100)  # the target: +2 000, flat again
    svc.signal(T0 + m, 52_100, 51_100, 54_100, p=0.3)  # no edge: dropped by the sizer
    svc.signal(T0 - 2 * m, 52_100, 51_100, 54_100)  # made three minutes ago, ttl 120 s: expired
    real_send = svc.paper.send

    def no_money(request: OrderRequest, now_ns: int) -> BrokerReply:
        return BrokerReply(Outcome.REJECTED, "NO_MONEY", "not enough margin")

    monkeypatch.setattr(svc.paper, "send", no_money)
    svc.signal(T0 + m, 52_100, 51_100, 54_100)  # rejected by the broker
    monkeypatch.setattr(svc.paper, "send", real_send)
    svc.signal(T0 + m + timedelta(seconds=10), 52_100, 51_100, 54_100)  # filled: 1 BTC at 52 100
    svc.candle(T0 + 2 * m, 52_100, 52_200, 51_500, 51_600)  # open, marked at 51 600
    samples = check(svc)
    assert samples[("kstrade_account_open_positions", (("symbol", SYMBOL),))] == 1
    assert samples[("kstrade_account_equity", ())] == 101_500 and samples[("kstrade_account_balance", ())] == 102_000
    assert state(samples, "kstrade_execution_trading_state") == "ACTIVE"
    svc.signal(T0 + 2 * m, 51_600, 50_600, 53_600)  # no room overnight beside the open one: refused
    # The price gaps through the stop: 48 500 - 52 100 = -3 600; the day is at -1 600, the
    # balance 98 400, under today's floor of 99 000: halted until Prague midnight.
    svc.candle(T0 + 3 * m, 48_500, 48_600, 48_400, 48_500)
    assert "DAILY_LOSS_BREACHED" in svc.alerts
    svc.signal(T0 + 3 * m, 48_500, 48_000, 49_500)  # refused: TRADING_HALTED
    samples = check(svc)
    assert state(samples, "kstrade_execution_trading_state") == "HALTED"
    assert samples[("kstrade_account_daily_loss_headroom", ())] <= 0
    assert samples[("kstrade_account_max_loss_headroom", ())] > 0
    assert samples[("kstrade_account_open_positions", (("symbol", SYMBOL),))] == 0  # was 1: reads 0, not gone
    assert samples[("kstrade_account_realized_pnl_today", ())] == -1_600
    assert samples[("kstrade_execution_operator_halted", ())] == 0
    assert state(samples, "kstrade_execution_circuit_breaker_state") == "CLOSED"
    reasons = {e.reason for e in svc.stage.journal.in_state(JournalState.DROPPED)}
    assert {"KELLY_NON_POSITIVE", "SIGNAL_EXPIRED", "TRADING_HALTED"} <= reasons and len(reasons) == 4
    # An operator halt shows at once, and a resume lifts it (the loss limit's halt stands).
    svc.command(T0 + 4 * m, ControlAction.HALT)
    assert check(svc)[("kstrade_execution_operator_halted", ())] == 1
    svc.command(T0 + 5 * m, ControlAction.RESUME)
    samples = check(svc)
    assert samples[("kstrade_execution_operator_halted", ())] == 0
    assert state(samples, "kstrade_execution_trading_state") == "HALTED"


def test_the_account_dashboard_queries_only_what_the_endpoint_exports(tmp_path: Path) -> None:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    wanted = {name for e in exprs for name in re.findall(r"\bkstrade_[a-z0-9_]+", e)}
    assert len(wanted) >= 12  # equity, balance, floors, headroom, P&L, positions, states, orders, refusals
    svc = Service(build(service_settings(tmp_path, free_port())))
    try:
        svc.candle(T0, 50_000, 50_000, 50_000, 50_000)
        svc.signal(T0, 50_000, 49_000, 52_000)  # a fill
        svc.signal(T0, 50_000, 49_000, 52_000, p=0.3)  # a refusal
        exported = {name for name, _labels in svc.scrape()}
    finally:
        assert svc.stage.gauges is not None and svc.stage.gauges.server is not None
        svc.stage.gauges.server.shutdown()
        svc.stage.journal.close()
    assert sorted(wanted - exported) == []


def test_no_endpoint_when_the_port_is_0_nor_in_a_replay(tmp_path: Path) -> None:
    off = build(service_settings(tmp_path / "off", 0))
    assert off.gauges is None
    off.journal.close()
    # `python -m kstrade run` keeps to itself: whatever the config says, no port is opened.
    settings = service_settings(tmp_path / "cfg", 9465)
    assert _isolated(settings, tmp_path / "run").execution.prometheus_port == 0


def test_equity_moves_at_most_once_a_clock_second_and_a_discrete_change_at_once() -> None:
    gauges, breaker = AccountGauges(ACCOUNT), CircuitBreaker()
    guard = AccountGuard(GuardrailSettings(), ns(T0))

    def equity() -> float | None:
        return gauges.registry.get_sample_value("kstrade_account_equity", {"account": ACCOUNT})

    gauges.observe(ns(T0), AccountSnapshot(100_000, 100_000), guard, breaker)
    gauges.observe(ns(T0) + 500_000_000, AccountSnapshot(100_000, 99_000), guard, breaker)
    assert equity() == 100_000  # only the floating P&L moved, half a second later
    gauges.observe(ns(T0) + 600_000_000, AccountSnapshot(98_000, 98_000), guard, breaker)
    assert equity() == 98_000  # the balance moved: at once
    gauges.observe(ns(T0) + 1_700_000_000, AccountSnapshot(98_000, 97_500), guard, breaker)
    assert equity() == 97_500  # a second on


def _fill(order_id: str, symbol: str, qty: float, t: datetime) -> Execution:
    return Execution(
        timestamp=t, signal_id=uuid.uuid4(), order_id=order_id, execution_id=f"deal-{order_id}", symbol=symbol,
        side=Side.BUY, order_type=OrderType.MARKET, quantity=qty, price=100.0, status=OrderStatus.FILLED,
        fill_price=100.0, slippage_bps=0.0, latency_ms=1.0, session="london",
    )  # fmt: skip


def _close(order_id: str, symbol: str, qty: float, pnl: float, balance: float, t: datetime) -> PnlEvent:
    return PnlEvent(
        timestamp=t, signal_id=uuid.uuid4(), order_id=order_id, symbol=symbol, side=Side.BUY, quantity=qty,
        entry_price=100.0, exit_price=100.0 + pnl / qty, realized_pnl=pnl, commission=0.0, currency="USD",
        balance=balance,
    )  # fmt: skip


def test_the_account_view_matches_fills_to_closes_by_order_id_and_counts_the_prague_day() -> None:
    view = AccountView()
    late = datetime(2026, 1, 5, 22, 30, tzinfo=UTC)  # 23:30 in Prague: still 5 January
    view.execution(_fill("paper-1", "BTC-USD", 1.0, late))
    view.execution(_fill("paper-2", "ETH-USD", 2.0, late))
    view.pnl(_close("paper-1", "BTC-USD", 1.0, -50.0, 99_950.0, late))
    view.execution(_fill("paper-1", "BTC-USD", 1.0, late))  # redelivered after its close: stays closed
    view.pnl(_close("paper-2", "ETH-USD", 0.5, 30.0, 99_980.0, late + timedelta(hours=1)))  # 00:30 Prague: 6 Jan
    assert view.positions_reply() == "open positions: 1\nETH-USD BUY 1.5 @ 100 (paper-2)"
    assert view.daily_reply(ns(late)) == (
        "today (2026-01-05, Prague): realized P&L -50.00 over 1 closed trade(s), win rate 0.0%; balance 99980.00 USD"
    )
    assert view.daily_reply(ns(late + timedelta(hours=2))).startswith(
        "today (2026-01-06, Prague): realized P&L 30.00 over 1 closed trade(s), win rate 100.0%"
    )
    view.pnl(_close("paper-2", "ETH-USD", 1.5, 10.0, 99_990.0, late + timedelta(hours=1)))
    assert view.positions_reply() == "open positions: none"
