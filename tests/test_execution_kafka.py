"""Over the real broker: the execution service is killed after the order went to the broker but
before its outputs were flushed and its offset committed, either once the fill was journaled or
inside the broker call itself (the journal still says SUBMITTING; the paper account on disk has
the position). The restarted service gets the signal again and sends no second order.

Each test trades its own symbol: signals.final is shared by every test on the session's broker,
and a signal for another symbol is dead-lettered, never traded.

Run as a script, this file is the service (argv: bootstrap group journal kill_point symbol).
"""

from __future__ import annotations

import json
import os
import signal as signals_
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kstrade.bus import Bus, StageRunner
from kstrade.bus.topics import (
    EXECUTIONS,
    METRICS_ALERTS,
    ORDERS_CONFIRMED,
    ORDERS_PENDING,
    PNL,
    candles,
    dlq_topic,
    signals,
)
from kstrade.clock import WallClock
from kstrade.config import ExecutionSettings, GuardrailSettings, SymbolSettings
from kstrade.execution import ExecutionStage, JournalState, OrderJournal, PaperBroker
from kstrade.schemas import Codec, CodecError
from kstrade.schemas.models import Order, Signal, SignalDirection, SignalStage

FAST_GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
OUTPUTS = [ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS, PNL, METRICS_ALERTS]


class DyingPaperBroker(PaperBroker):
    """Dies (hangs until SIGKILLed) right after the order is on the paper account."""

    def send(self, request: Any, now_ns: int) -> Any:
        reply = super().send(request, now_ns)
        print("SENT", flush=True)
        time.sleep(600)
        return reply


def serve(bootstrap: str, group: str, journal_path: str, kill_point: str, symbol: str) -> None:
    cfg = ExecutionSettings(
        guardrails=GuardrailSettings(stop_slippage_bps=0.0),
        symbols={symbol: SymbolSettings(value_per_unit=1.0, volume_step=0.001, volume_min=0.001)},
        paper_slippage_bps=0.0,
    )
    account = Path(journal_path).with_name("paper-account.json")
    broker_class = DyingPaperBroker if kill_point == "sent" else PaperBroker
    broker = broker_class(100_000, slippage_bps=0.0, state_path=account)
    journal = OrderJournal(journal_path)
    if kill_point == "filled":
        record = journal.record

        def record_then_hang(*args: Any, **kwargs: Any) -> None:
            record(*args, **kwargs)
            if args[2] is JournalState.FILLED:
                print("FILLED", flush=True)  # sent and journaled; outputs not flushed, offset not committed
                time.sleep(600)

        journal.record = record_then_hang  # type: ignore[method-assign]

    class Service(ExecutionStage):
        name = group

    stage = Service(cfg, broker, journal, [symbol])
    stage.clock = WallClock()
    bus = Bus.kafka(bootstrap)
    consumer = bus.consumer(stage.group, FAST_GROUP)
    consumer.subscribe(stage.inputs())
    runner = StageRunner(consumer, bus.producer(), stage.handle, stage=stage.name, poll_timeout=0.1)
    stop = threading.Event()
    signals_.signal(signals_.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.is_set():
        runner.run_once()
    runner.producer.flush()
    consumer.close()
    print(json.dumps({"sent": broker.sent}), flush=True)


def _start(bootstrap: str, group: str, journal: Path, kill_point: str, symbol: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, bootstrap, group, str(journal), kill_point, symbol],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
    )  # fmt: skip


def _line(proc: subprocess.Popen[str], expected: str, timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(timeout)
    assert result and result[0].startswith(expected), f"expected {expected!r} from the service, got {result!r}"
    return result[0]


@pytest.mark.kafka
@pytest.mark.parametrize(("kill_point", "said"), [("filled", "FILLED"), ("sent", "SENT")])
def test_killed_before_commit_then_restarted_sends_no_second_order(
    kafka_bootstrap: str, tmp_path: Path, kill_point: str, said: str
) -> None:
    bus = Bus.kafka(kafka_bootstrap)
    symbol = f"T{uuid.uuid4().hex[:8].upper()}-USD"
    topics = [signals("final"), candles(symbol, "1m"), *OUTPUTS]
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics + [dlq_topic(t) for t in topics]], 30.0)
    group = f"execution-{uuid.uuid4().hex[:8]}"
    journal = tmp_path / "orders.sqlite3"
    reader = bus.consumer(f"reader-{group}", {"auto.offset.reset": "latest"})
    reader.subscribe([ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS])

    first = _start(kafka_bootstrap, group, journal, kill_point, symbol)
    try:
        _line(first, "READY")
        time.sleep(1.0)  # let the reader's assignment settle before anything is produced
        reader.poll(max_records=10, timeout=1.0)
        sig = Signal(
            timestamp=datetime.now(UTC), symbol=symbol, signal_id=uuid.uuid4(), stage=SignalStage.FINAL,
            direction=SignalDirection.LONG, confidence=0.6, entry_price=50_000, stop_loss=49_000,
            take_profit=52_000, ttl_seconds=600,
        )  # fmt: skip
        codec = Codec(Signal)
        producer = bus.producer()
        # A live service: the origin is now (PAST_TIMESTAMP refuses a week behind its partition's newest)
        headers = codec.headers(time.time_ns(), "test")
        producer.send(signals("final"), codec.encode(sig), key=symbol.encode(), headers=headers)
        producer.flush()
        _line(first, said)
    finally:
        first.kill()  # SIGKILL: no flush, no commit
        first.wait(30)

    second = _start(kafka_bootstrap, group, journal, "none", symbol)
    try:
        _line(second, "READY")
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            got += reader.poll(max_records=10, timeout=0.2)
    finally:
        second.send_signal(signals_.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1]) == {"sent": 0}  # the restarted service sent nothing
    entry = OrderJournal(journal).get(str(sig.signal_id))
    assert entry is not None and entry.state is JournalState.FILLED
    assert len(PaperBroker(0, state_path=journal.with_name("paper-account.json")).positions) == 1
    # the decided outputs reached the bus once, from the journal, after the restart
    assert sorted(r.topic for r in got) == sorted([ORDERS_PENDING, ORDERS_CONFIRMED, EXECUTIONS])
    confirmed = [Codec(Order).decode_record(r) for r in got if r.topic == ORDERS_CONFIRMED]
    assert [o.signal_id for o in confirmed] == [sig.signal_id]  # type: ignore[attr-defined]


if __name__ == "__main__":
    serve(*sys.argv[1:6])


@pytest.mark.kafka
def test_python_m_kstrade_service_execution_trades_a_signal(kafka_bootstrap: str, tmp_path: Path) -> None:
    symbol = f"T{uuid.uuid4().hex[:8].upper()}-USD"
    bus = Bus.kafka(kafka_bootstrap)
    env = {
        **os.environ,
        "KSTRADE_SYMBOLS": json.dumps([symbol]),
        "KSTRADE_EXECUTION__JOURNAL_PATH": str(tmp_path / "orders.sqlite3"),
        "KSTRADE_EXECUTION__PAPER_STATE_PATH": str(tmp_path / "paper.json"),
        "KSTRADE_EXECUTION__SYMBOLS": json.dumps({symbol: {"value_per_unit": 1.0, "volume_step": 0.001}}),
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "kstrade", "service", "execution", "--bus", "kafka", "--bootstrap", kafka_bootstrap],
        stderr=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    try:
        assert service.stderr is not None
        assert "consuming as kstrade.execution" in service.stderr.readline()
        reader = bus.consumer(f"reader-{symbol}", {"auto.offset.reset": "earliest"})
        reader.subscribe([ORDERS_CONFIRMED])
        sig = Signal(
            timestamp=datetime.now(UTC), symbol=symbol, signal_id=uuid.uuid4(), stage=SignalStage.FINAL,
            direction=SignalDirection.LONG, confidence=0.6, entry_price=50_000, stop_loss=49_000,
            take_profit=52_000, ttl_seconds=600,
        )  # fmt: skip
        codec = Codec(Signal)
        producer = bus.producer()
        # A live service: the origin is now (PAST_TIMESTAMP refuses a week behind its partition's newest)
        headers = codec.headers(time.time_ns(), "test")
        producer.send(signals("final"), codec.encode(sig), key=symbol.encode(), headers=headers)
        producer.flush()
        mine: list[Any] = []
        deadline = time.monotonic() + 60
        while not mine and time.monotonic() < deadline:
            for r in reader.poll(max_records=100, timeout=0.2):
                try:
                    order = Codec(Order).decode_record(r)
                except CodecError:  # trades.orders.confirmed is shared: the poison tests write there too
                    continue
                if order.signal_id == sig.signal_id:  # type: ignore[attr-defined]
                    mine.append(order)
        # Default guard: fills and stops assumed 10 bps worse. Entry 50 000 x 1.001 = 50 050; loss per
        # unit 1 050 to the stop + 49 stop slippage = 1 099; 1 % of 100 000 / 1 099 = 0.9099 -> 0.909
        assert [(o.status.value, o.quantity) for o in mine] == [("CONFIRMED", 0.909)]
    finally:
        service.send_signal(signals_.SIGTERM)
        service.wait(30)
    assert service.returncode == 0
