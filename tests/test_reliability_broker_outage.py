"""The broker of record failing under a steady stream of signals (issue 11).

`python -m kstrade service execution` runs as its own process on the session's Kafka broker and
trades through the mt5linux bridge: a fake MetaTrader5 terminal (tests/execution_fake_mt5.py)
behind a real RPyC classic server. Mid-stream the terminal loses its trade server, the common
real outage (network, the broker's server restarting): the terminal keeps answering account and
history queries from what it last knew, and every order_send gets TRADE_RETCODE_CONNECTION
(10031). Then the server comes back.

Counted: the sends while it is down (bounded by the circuit breaker, not one retry chain per
signal), the CRITICAL alerts (one per opening of the breaker, not one per signal), the fate of
every signal (an order, or a rejection or alert naming it), and orders per signal (never two).
"""

from __future__ import annotations

import json
import os
import signal as signals_
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kstrade.bus import Bus, Producer
from kstrade.bus.topics import METRICS_ALERTS, ORDERS_CONFIRMED, candles, signals
from kstrade.execution import JournalState, OrderJournal, client_order_id
from kstrade.execution.mt5 import connect_mt5linux
from kstrade.schemas import Codec, CodecError
from kstrade.schemas.models import Alert, Candle, Order, Signal, SignalDirection, SignalStage

from . import execution_fake_mt5
from .conftest import FAST_GROUP

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
#: Small on purpose so the test is quick; production defaults are 5 failures and 60 s.
BREAKER_FAILURES, COOLDOWN_S, RETRIES = 3, 2.0, 2
EVERY_S = 0.25  # one signal per quarter second


@pytest.fixture
def terminal() -> Iterator[tuple[Any, int]]:
    """The fake terminal behind its own RPyC server (as mt5linux serves MT5 under Wine), and the
    port; the test controls it through the same bridge."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = subprocess.Popen(
        [sys.executable, execution_fake_mt5.__file__, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        module, _ = connect_mt5linux("127.0.0.1", port)
        yield module, port
    finally:
        server.terminate()
        server.wait(10)


def _service(bootstrap: str, port: int, symbol: str, journal: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "KSTRADE_SYMBOLS": json.dumps([symbol]),
        "KSTRADE_EXECUTION__BROKER": "mt5linux",
        "KSTRADE_EXECUTION__MT5LINUX_PORT": str(port),
        "KSTRADE_EXECUTION__JOURNAL_PATH": str(journal),
        "KSTRADE_EXECUTION__BREAKER_FAILURES": str(BREAKER_FAILURES),
        "KSTRADE_EXECUTION__BREAKER_COOLDOWN_S": str(COOLDOWN_S),
        "KSTRADE_EXECUTION__RETRY_ATTEMPTS": str(RETRIES),
        "KSTRADE_EXECUTION__RETRY_INITIAL_S": "0.05",
        # the stream is many small orders: the per-minute and open-position caps are not under test
        "KSTRADE_EXECUTION__GUARDRAILS__MAX_ORDERS_PER_MINUTE": "1000",
        "KSTRADE_EXECUTION__GUARDRAILS__MAX_OPEN_POSITIONS": "1000",
        "KSTRADE_EXECUTION__SYMBOLS": json.dumps(
            {symbol: {"value_per_unit": 100_000, "volume_step": 0.01, "volume_min": 0.01, "commission_per_lot": 3.0}}
        ),
    }
    run = [sys.executable, "-m", "kstrade", "service", "execution", "--bus", "kafka", "--bootstrap", bootstrap]
    proc = subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "consuming as kstrade.execution" in line, line
    return proc


class Stream:
    """The upstream: final signals (an EURUSD-like long, 0.01 lot) and a 1m candle a second."""

    def __init__(self, producer: Producer, symbol: str) -> None:
        self.producer = producer
        self.symbol = symbol
        self.sent: list[tuple[float, str]] = []  # (when, signal id)
        self._signal = Codec(Signal)
        self._candle = Codec(Candle)
        self._last_candle = 0.0

    def tick(self) -> None:
        now = datetime.now(UTC)
        sig = Signal(
            timestamp=now, symbol=self.symbol, signal_id=uuid.uuid4(), stage=SignalStage.FINAL,
            direction=SignalDirection.LONG, confidence=0.6, entry_price=1.1001, stop_loss=1.0950,
            take_profit=1.1100, position_size=0.01, ttl_seconds=600,
        )  # fmt: skip
        origin = time.time_ns()
        self.producer.send(signals("final"), self._signal.encode(sig), key=self.symbol.encode(),
                           headers=self._signal.headers(origin, "signals"))  # fmt: skip
        self.sent.append((time.monotonic(), str(sig.signal_id)))
        if time.monotonic() - self._last_candle >= 1.0:
            self._last_candle = time.monotonic()
            minute = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
            candle = Candle(timestamp=minute, symbol=self.symbol, interval="1m", open=1.1, high=1.1002, low=1.0999,
                            close=1.1001, volume=10.0, source="test")  # fmt: skip
            self.producer.send(candles(self.symbol, "1m"), self._candle.encode(candle), key=self.symbol.encode(),
                               headers=self._candle.headers(origin, "ingest"))  # fmt: skip
        self.producer.flush()

    def run_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            time.sleep(EVERY_S)


class Outcomes:
    """What the service says about signals, read as it comes: orders.confirmed (an order, or its
    rejection) and metrics.alerts (the shared topics: other tests' records are there too)."""

    def __init__(self, bus: Bus) -> None:
        self.reader = bus.consumer(f"outcomes-{uuid.uuid4().hex[:8]}", FAST_GROUP)
        self.reader.subscribe([ORDERS_CONFIRMED, METRICS_ALERTS])
        self.orders: list[Order] = []
        self.alerts: list[Alert] = []

    def read(self) -> None:
        for r in self.reader.poll(max_records=1000, timeout=0.2):
            try:
                message = Codec(Order if r.topic == ORDERS_CONFIRMED else Alert).decode_record(r)
            except CodecError:
                continue  # another test's poison on the shared topic (the poison test writes some on purpose)
            if isinstance(message, Order):
                self.orders.append(message)
            else:
                assert isinstance(message, Alert)
                self.alerts.append(message)

    def decided(self, ids: set[str]) -> set[str]:
        """The signals among `ids` that have an order event or an alert naming them."""
        named = {str(o.signal_id) for o in self.orders}
        return {sid for sid in ids if sid in named or any(sid in a.message for a in self.alerts)}

    def wait_for(self, ids: set[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.decided(ids) != ids and time.monotonic() < deadline:
            self.read()
        missing = ids - self.decided(ids)
        assert not missing, f"{len(missing)} signals neither ordered nor refused with an alert after {timeout}s"


def test_a_broker_outage_opens_the_breaker_without_a_retry_storm_and_trading_resumes(
    kafka_bootstrap: str, terminal: tuple[Any, int], tmp_path: Path
) -> None:
    """Three phases of the stream, each waited for until the service has decided every signal
    sent so far (so a slow machine cannot move a signal into the wrong phase): healthy, the
    trade server lost, the trade server back."""
    fake, port = terminal
    symbol = f"EU{uuid.uuid4().hex[:6].upper()}"
    fake.add_symbol(symbol)
    fake.set_time(time.time())
    bus = Bus.kafka(kafka_bootstrap)
    journal = tmp_path / "orders.sqlite3"
    started = datetime.now(UTC)
    outcomes = Outcomes(bus)
    proc = _service(kafka_bootstrap, port, symbol, journal)
    stream = Stream(bus.producer(), symbol)

    def ids(phase: list[tuple[float, str]]) -> list[str]:
        return [sid for _, sid in phase]

    try:
        stream.run_for(3.0)
        healthy = ids(stream.sent)
        outcomes.wait_for(set(healthy))
        fake.lose_server()
        down_at, sends_before = time.monotonic(), fake.calls()
        stream.run_for(6.0)
        outage = ids(stream.sent)[len(healthy) :]
        outcomes.wait_for(set(outage))
        sends_down, down_s = fake.calls() - sends_before, time.monotonic() - down_at
        fake.restore_server()
        back_at = time.monotonic()
        stream.run_for(COOLDOWN_S + 4.0)  # the breaker's cooldown, then trading again
        recovery = ids(stream.sent)[len(healthy) + len(outage) :]
        outcomes.wait_for(set(recovery))
        assert proc.poll() is None, "the execution service exited"
        proc.send_signal(signals_.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        outcomes.reader.close()

    journaled = OrderJournal(journal)
    entries = {sid: journaled.get(sid) for sid in healthy + outage + recovery}
    journaled.close()
    fate = {sid: (e.state, e.reason) for sid, e in entries.items() if e is not None}
    assert len(fate) == len(entries)  # every signal is in the journal
    filled = {sid for sid, (state, _) in fate.items() if state is JournalState.FILLED}
    mine = [a for a in outcomes.alerts if a.timestamp >= started and a.source == "execution"]
    critical = Counter(a.code for a in mine if a.severity.value == "CRITICAL")

    # no retry storm: F consecutive failed sends open the breaker, then one trial per cooldown
    bound = BREAKER_FAILURES + int(down_s / COOLDOWN_S) + 1
    assert 0 < sends_down <= bound, f"{sends_down} sends in {down_s:.1f}s (bound {bound})"
    # alerted, and rate-limited: one CIRCUIT_OPEN per opening, not one per signal
    assert 1 <= critical["CIRCUIT_OPEN"] <= int(down_s / COOLDOWN_S) + 1
    assert sum(critical.values()) < len(outage) / 2
    # every signal an order or a refusal with the outage as its reason
    assert set(healthy) <= filled
    assert not set(outage) & filled
    assert {fate[sid][1] for sid in outage} <= {"CIRCUIT_OPEN", "CONNECTION"}
    # after the cooldown a trial goes through and trading resumes: refusals only at the start
    after = ["filled" if sid in filled else fate[sid][1] for sid in recovery]
    assert "filled" in after, f"trading never resumed: {after}"
    resumed = after.index("filled")
    assert set(after[:resumed]) <= {"CIRCUIT_OPEN"} and set(after[resumed:]) == {"filled"}
    # never two orders for one signal: one position per client order id, one confirmation per fill
    comments = Counter(str(p.comment) for p in fake.positions_get())
    assert set(comments) == {client_order_id(uuid.UUID(sid)) for sid in filled} and max(comments.values()) == 1
    ours = Counter(str(o.signal_id) for o in outcomes.orders if o.status.value == "CONFIRMED")
    assert {sid for sid in ours if sid in fate} == filled and max(ours[sid] for sid in filled) == 1
    first_fill_s = stream.sent[len(healthy) + len(outage) + resumed][0] - back_at
    print(
        f"\nbroker down {down_s:.1f}s: {len(outage)} signals, {sends_down} order_send calls (bound {bound}), "
        f"CRITICAL alerts {dict(critical)}; refusals {dict(Counter(fate[sid][1] for sid in outage))}; "
        f"after the server came back {resumed} more refused (CIRCUIT_OPEN), then every signal filled, the "
        f"first sent {first_fill_s:.1f}s after; {len(filled)} of {len(fate)} signals filled in all"
    )
