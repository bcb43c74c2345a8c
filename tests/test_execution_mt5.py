"""The MT5 adapter against a fake MetaTrader5 terminal that behaves as the reference describes,
called directly and through a real RPyC classic server (the mt5linux path): requotes, a timeout
after which the deal happened, a lost connection, NO_MONEY, INVALID_STOPS, a closed market. In no
case is there a second position for one order."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from kstrade.bus.topics import METRICS_ALERTS, PNL, signals
from kstrade.clock import EventClock
from kstrade.config import ExecutionSettings, GuardrailSettings, SymbolSettings
from kstrade.execution import CircuitBreaker, JournalState, OrderRequest, OrderRouter, Outcome
from kstrade.execution.broker import LINK_ERRORS
from kstrade.execution.mt5 import MT5Broker, TerminalLost, connect_mt5linux, open_mt5
from kstrade.retry import Backoff
from kstrade.schemas.models import Side, Signal, SignalDirection, SignalStage

from . import execution_fake_mt5
from .test_execution_stage import Harness

MAGIC = 770_001
NOW = datetime(2026, 1, 5, 10, 0, 5, tzinfo=UTC)  # the fake terminal's clock is 10:00:00
NOW_NS = int(NOW.timestamp()) * 1_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def bridge() -> Iterator[tuple[Any, Any, int]]:
    """The fake terminal behind a real RPyC classic server on loopback (as mt5linux runs it)."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(execution_fake_mt5.__file__)), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        yield (*connect_mt5linux("127.0.0.1", port), port)
    finally:
        server.terminate()
        server.wait(10)


def reconnecting(module: Any, remote_dict: Any = dict, reconnect_s: float = 5.0) -> MT5Broker:
    """A broker that connects again through initialize(), as open_mt5's does."""

    def connect() -> tuple[Any, Any]:
        if not module.initialize():
            raise ConnectionError(f"initialize failed: {module.last_error()}")
        return module, remote_dict

    return MT5Broker(module, magic=MAGIC, remote_dict=remote_dict, connect=connect, reconnect_s=reconnect_s)


@pytest.fixture(params=["direct", "mt5linux"])
def terminal(request: pytest.FixtureRequest) -> tuple[Any, MT5Broker]:
    """(control module, broker): the fake in this process, or behind the bridge."""
    if request.param == "direct":
        execution_fake_mt5.reset()
        return execution_fake_mt5, reconnecting(execution_fake_mt5)
    module, remote_dict, _ = request.getfixturevalue("bridge")
    module.reset()
    return module, reconnecting(module, remote_dict)


def order(cid: str = "ks-abc", qty: float = 1.0, sl: float = 1.0950, tp: float = 1.1100) -> OrderRequest:
    return OrderRequest(cid, "EURUSD", Side.BUY, qty, 1.1001, sl, tp, 100_000, 3.0)


def route(broker: MT5Broker, request: OrderRequest) -> Any:
    clock = EventClock(NOW_NS)
    return OrderRouter(broker, CircuitBreaker(5, 60), Backoff(initial=0.5, attempts=3), clock).submit(request)


def test_a_market_order_fills_with_broker_held_stops(terminal: tuple[Any, MT5Broker]) -> None:
    fake, broker = terminal
    reply = broker.send(order(), NOW_NS)
    assert reply.outcome is Outcome.FILLED and reply.fill is not None
    assert reply.fill.fill_price == 1.10010  # bought at the ask
    assert reply.fill.commission == 3.0
    [p] = fake.positions_get()
    assert (p.sl, p.tp, p.magic, p.comment, p.volume) == (1.0950, 1.1100, MAGIC, "ks-abc", 1.0)
    assert broker.price("EURUSD", Side.SELL, NOW_NS) == 1.10000


def test_requotes_are_retried_with_a_fresh_price(terminal: tuple[Any, MT5Broker]) -> None:
    fake, broker = terminal
    fake.script("REQUOTE", "REQUOTE")
    result = route(broker, order())
    assert result.reply.outcome is Outcome.FILLED and result.sends == 3
    assert result.reply.fill.fill_price == pytest.approx(1.10050)  # two requotes moved the ask by 2 x 2 pips
    assert len(fake.positions_get()) == 1


@pytest.mark.parametrize("trouble", ["TIMEOUT_AFTER_DEAL", "LOST_AFTER_DEAL"])
def test_a_timeout_or_lost_connection_after_the_deal_is_reconciled_not_resent(
    terminal: tuple[Any, MT5Broker], trouble: str
) -> None:
    fake, broker = terminal
    fake.script(trouble)
    result = route(broker, order())
    assert result.reply.outcome is Outcome.FILLED and result.reply.code == "RECONCILED"
    assert (fake.calls(), len(fake.positions_get())) == (1, 1)


def test_a_timeout_without_a_deal_is_resent_after_looking(terminal: tuple[Any, MT5Broker]) -> None:
    fake, broker = terminal
    fake.script("TIMEOUT")
    result = route(broker, order())
    assert result.reply.outcome is Outcome.FILLED and result.sends == 2
    assert len(fake.positions_get()) == 1


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda fake: fake.script("NO_MONEY"), "NO_MONEY"),
        (lambda fake: fake.close_market("EURUSD"), "MARKET_CLOSED"),
        (lambda fake: None, "INVALID_STOPS"),
    ],
)
def test_refusals_are_final(terminal: tuple[Any, MT5Broker], setup: Any, code: str) -> None:
    fake, broker = terminal
    setup(fake)
    # INVALID_STOPS: a stop 5 points under the ask, inside the 10-point stops level
    request = order(sl=1.10005) if code == "INVALID_STOPS" else order()
    result = route(broker, request)
    assert (result.reply.outcome, result.reply.code, result.sends) == (Outcome.REJECTED, code, 1)
    assert fake.positions_get() == ()


def test_real_no_money_from_margin(terminal: tuple[Any, MT5Broker]) -> None:
    _, broker = terminal
    # 50 lots of EURUSD at 1:100 need 55 005 USD of margin... twice is more than 100 000
    assert broker.send(order("ks-1", qty=50.0), NOW_NS).outcome is Outcome.FILLED
    reply = broker.send(order("ks-2", qty=50.0), NOW_NS)
    assert (reply.outcome, reply.code) == (Outcome.REJECTED, "NO_MONEY")


def test_account_positions_and_closes(terminal: tuple[Any, MT5Broker]) -> None:
    fake, broker = terminal
    broker.send(order(), NOW_NS)
    fake.move("EURUSD", 1.10100, 1.10110)
    account = broker.account(NOW_NS)
    # bought at 1.10010, marked at the bid 1.10100: +0.0009 x 100 000 = 90; balance paid 3 commission
    assert account.balance == pytest.approx(99_997)
    assert account.equity == pytest.approx(100_087)
    [p] = account.positions
    assert (p.client_order_id, p.stop_loss, p.value_per_unit) == ("ks-abc", 1.0950, pytest.approx(100_000))
    fake.move("EURUSD", 1.09400, 1.09410)  # through the stop: the server closes at 1.0950
    [trade] = broker.closed_trades(NOW_NS)
    # (1.0950 - 1.1001) x 100 000 = -510, minus 3 + 3 commission
    assert (trade.client_order_id, trade.exit_price) == ("ks-abc", 1.0950)
    assert trade.realized_pnl == pytest.approx(-516)
    assert broker.closed_trades(NOW_NS) == []  # reported once


def test_close_position(terminal: tuple[Any, MT5Broker]) -> None:
    fake, broker = terminal
    broker.send(order(), NOW_NS)
    [p] = broker.account(NOW_NS).positions
    assert broker.close_position(p.ticket, NOW_NS, "guardrail").outcome is Outcome.FILLED
    assert fake.positions_get() == ()


def test_the_bridge_is_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        connect_mt5linux("192.168.1.20", 18812)


def test_the_stage_over_mt5_restarts_mid_send_without_a_second_order(
    terminal: tuple[Any, MT5Broker], tmp_path: Path
) -> None:
    fake, broker = terminal
    eurusd = SymbolSettings(value_per_unit=100_000, volume_step=0.01, volume_min=0.01, volume_max=50,
                            commission_per_lot=3.0)  # fmt: skip
    cfg = ExecutionSettings(guardrails=GuardrailSettings(), symbols={"EURUSD": eurusd}, broker="mt5")
    journal = tmp_path / "orders.sqlite3"
    h = Harness(journal, cfg, broker, symbols=["EURUSD"])
    h.at(NOW)
    # the first process crashes inside send after the terminal made the deal (the journal says SUBMITTING)
    fake.script("LOST_AFTER_DEAL")
    original_find = broker.find
    broker.find = lambda cid, now: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        h.signal(NOW, 1.1001, 1.0950, 1.1100, symbol="EURUSD", delay=1.0)
    broker.find = original_find  # type: ignore[method-assign]
    [entry] = h.journal.in_state(JournalState.SUBMITTING)
    sig = Signal(
        timestamp=NOW, symbol="EURUSD", signal_id=UUID(entry.signal_id), stage=SignalStage.FINAL,
        direction=SignalDirection.LONG, confidence=0.6, entry_price=1.1001, stop_loss=1.0950, take_profit=1.1100,
        ttl_seconds=120,
    )  # fmt: skip
    assert fake.calls() == 1
    # the restarted service: same journal, same terminal; the signal is redelivered
    h.journal.close()
    again = Harness(journal, cfg, broker, symbols=["EURUSD"])
    again.at(NOW + timedelta(seconds=2))
    again.send(signals("final"), sig, int(NOW.timestamp()) * 1_000_000_000)
    assert (fake.calls(), len(fake.positions_get())) == (1, 1)
    entry = again.journal.get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.FILLED
    # the server stops it out later: realized P&L reaches trades.pnl from on_time
    fake.move("EURUSD", 1.09400, 1.09410)
    again.at(NOW + timedelta(seconds=30))
    again.pipeline.step()
    out = again.read()
    [pnl] = out[PNL]
    assert pnl.signal_id == sig.signal_id and pnl.exit_price == 1.0950
    assert "DAILY_LOSS_BREACHED" not in [a.code for a in out.get(METRICS_ALERTS, [])]


def test_build_connects_over_the_bridge_and_keeps_the_password_out_of_errors(
    bridge: tuple[Any, Any, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kstrade.config import load
    from kstrade.execution.stage import build

    module, _, port = bridge
    module.reset(balance=25_000.0)
    monkeypatch.setenv("KSTRADE_EXECUTION__MT5_PASSWORD", "wrong")
    flags = {"execution": {"broker": "mt5linux", "mt5linux_port": port, "mt5_login": 7001,
                           "journal_path": str(tmp_path / "o.sqlite3")}, "symbols": ["EURUSD"]}  # fmt: skip
    with pytest.raises(ConnectionError, match="Authorization failed") as failed:
        build(load(None, **flags))
    assert "wrong" not in str(failed.value)
    monkeypatch.setenv("KSTRADE_EXECUTION__MT5_PASSWORD", "s3cret")
    stage = build(load(None, **flags))
    assert isinstance(stage.broker, MT5Broker)
    assert stage.broker.account(NOW_NS).balance == 25_000  # the bridged terminal's account


def test_build_defaults_to_the_paper_broker(tmp_path: Path) -> None:
    from kstrade.config import load
    from kstrade.execution import PaperBroker
    from kstrade.execution.stage import build

    paths = {"journal_path": str(tmp_path / "o.sqlite3"), "paper_state_path": str(tmp_path / "paper.json")}
    stage = build(load(None, execution=paths))
    assert isinstance(stage.broker, PaperBroker) and stage.inputs()[0] == "signals.final"
    assert (tmp_path / "o.sqlite3").exists()


def test_a_terminal_that_exits_is_reconnected_and_nothing_is_sent_twice(terminal: tuple[Any, MT5Broker]) -> None:
    """The terminal process exits (every call answers None, last_error -10004) and comes back:
    while it is gone no query reads as "no positions" or "no deal" and no order is sent; once it
    runs again, the next call after the reconnect delay initializes again and trading resumes,
    with the position opened before still there."""
    fake, broker = terminal
    assert broker.send(order("ks-before"), NOW_NS).outcome is Outcome.FILLED
    fake.exit_terminal()
    # A look-up fails loudly: "no deal" here would let the router send an order again.
    with pytest.raises(TerminalLost, match="-10004"):
        broker.find("ks-before", NOW_NS)
    with pytest.raises(ConnectionError, match="initialize failed"):
        broker.account(NOW_NS)  # the first reconnect attempt: the terminal is not running
    with pytest.raises(TerminalLost, match="next reconnect attempt"):
        broker.account(NOW_NS)  # none again within 5 s of the last
    # An order while it is gone: nothing reaches order_send, and it is refused, not UNCERTAIN.
    during = route(broker, order("ks-during"))
    assert (during.reply.outcome, during.reply.code, fake.calls()) == (Outcome.RETRYABLE, "NOT_CONNECTED", 1)
    fake.start_terminal()
    later = NOW_NS + 10 * 1_000_000_000  # past the router's backoff (3.5 s) and the delay (5 s)
    snapshot = broker.account(later)
    assert [p.client_order_id for p in snapshot.positions] == ["ks-before"]
    assert broker.find("ks-during", later) is None  # never sent: reconciliation will say so
    assert broker.send(order("ks-after"), later).outcome is Outcome.FILLED
    assert fake.calls() == 2


def test_a_dead_bridge_is_reconnected_by_open_mt5(tmp_path: Path) -> None:
    """mt5linux: the bridge process (the terminal under Wine) is killed and started again on the
    same port; the broker open_mt5 built opens a new RPyC connection and logs in again."""
    port = _free_port()

    def start() -> subprocess.Popen[str]:
        server = subprocess.Popen(
            [sys.executable, str(Path(execution_fake_mt5.__file__)), str(port)], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        return server

    server = start()
    try:
        broker = open_mt5(ExecutionSettings(broker="mt5linux", mt5linux_port=port, mt5_magic=MAGIC))
        assert broker.send(order("ks-1"), NOW_NS).outcome is Outcome.FILLED
        server.kill()
        server.wait(10)
        with pytest.raises(LINK_ERRORS):
            broker.account(NOW_NS)  # the dead link
        with pytest.raises(LINK_ERRORS):
            broker.account(NOW_NS)  # a reconnect attempt: refused, nothing listens
        server = start()
        with pytest.raises(TerminalLost, match="next reconnect attempt"):
            broker.account(NOW_NS + 1_000_000_000)  # no attempt within 5 s of the last one
        later = NOW_NS + 6 * 1_000_000_000
        assert broker.account(later).balance == 100_000.0  # a fresh fake terminal
        assert broker.send(order("ks-2"), later).outcome is Outcome.FILLED
    finally:
        server.kill()
        server.wait(10)
