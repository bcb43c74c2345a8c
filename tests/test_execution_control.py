"""Operator control on the execution stage (in-process bus, event clock): a halt stops orders,
a flatten closes every position and halts, a resume resumes; each command is applied once,
survives a restart, and is acknowledged with the state it left. Tested by their effect on the
broker and the journal, not by the acknowledgement alone."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kstrade.bus.topics import CONTROL_EXECUTION, METRICS_ALERTS, PNL, dlq_topic
from kstrade.config import ExecutionSettings
from kstrade.execution import JournalState
from kstrade.execution.guardrails import TradingState
from kstrade.schemas import Codec
from kstrade.schemas.models import ControlAction, ControlCommand, Signal, SignalDirection, SignalStage
from tests.test_execution_stage import T0, Harness, ns, settings


class Controlled(Harness):
    """The execution harness with the control topic, and a way to send commands."""

    def __init__(self, journal: Path, cfg: ExecutionSettings | None = None) -> None:
        super().__init__(journal, cfg)
        self.bus.admin().create_topics([(t, 1, 1, {}) for t in (CONTROL_EXECUTION, dlq_topic(CONTROL_EXECUTION))])
        self.dead = self.bus.consumer("test-dead")
        self.dead.subscribe([dlq_topic(CONTROL_EXECUTION)])

    def command(self, t: datetime, action: str, *, account: str = "default", issued: datetime | None = None,
                send: bool = True, **kw: Any) -> ControlCommand:  # fmt: skip
        cmd = ControlCommand(timestamp=issued or t, command_id=uuid.uuid4(), account=account,
                             action=ControlAction(action), issued_by="test:operator",
                             reason=kw.get("reason", "test"))  # fmt: skip
        if send:
            self.at(t)
            self.send(CONTROL_EXECUTION, cmd, ns(t))
        return cmd

    def acks(self) -> list[Any]:
        acks = {"OPERATOR_HALT", "OPERATOR_RESUME", "OPERATOR_FLATTEN"}  # not the OPERATOR_HALTED drops
        return [a for a in self.read().get(METRICS_ALERTS, []) if a.code in acks]


@pytest.fixture
def c(tmp_path: Path) -> Controlled:
    return Controlled(tmp_path / "orders.sqlite3")


def _open_a_position(c: Controlled, t: datetime) -> None:
    c.candle(t, 50_000, 50_000, 50_000, 50_000)
    c.signal(t, 50_000, 49_000, 52_000, delay=1.0)
    assert len(c.broker.positions) == 1


def test_a_halt_stops_new_orders_but_keeps_positions_and_their_stops(c: Controlled) -> None:
    _open_a_position(c, T0)
    sent = c.broker.sent
    cmd = c.command(T0 + timedelta(seconds=10), "HALT", reason="bad day")
    [ack] = c.acks()
    assert ack.code == "OPERATOR_HALT" and str(cmd.command_id) in ack.message and "state HALTED" in ack.message
    assert "1 position(s) open" in ack.message
    blocked = c.signal(T0 + timedelta(seconds=20), 50_000, 49_000, 52_000)
    assert c.broker.sent == sent  # nothing went to the broker
    entry = c.journal.get(str(blocked.signal_id))
    assert entry is not None and (entry.state, entry.reason) == (JournalState.DROPPED, "OPERATOR_HALTED")
    assert len(c.broker.positions) == 1  # a halt is not a flatten
    c.candle(T0 + timedelta(minutes=1), 50_500, 52_500, 50_400, 52_100)  # the target still works
    assert [p.realized_pnl for p in c.read()[PNL]] == [2_000]


def test_resume_resumes_and_the_halt_survives_a_restart(tmp_path: Path) -> None:
    first = Controlled(tmp_path / "j.sqlite3")
    first.candle(T0, 50_000, 50_000, 50_000, 50_000)
    first.command(T0 + timedelta(seconds=1), "HALT")
    first.journal.close()
    second = Controlled(tmp_path / "j.sqlite3")  # a new process on the same journal
    second.candle(T0 + timedelta(seconds=2), 50_000, 50_000, 50_000, 50_000)
    blocked = second.signal(T0 + timedelta(seconds=3), 50_000, 49_000, 52_000)
    assert second.broker.sent == 0
    assert second.stage.guard.state is TradingState.HALTED
    entry = second.journal.get(str(blocked.signal_id))
    assert entry is not None and entry.reason == "OPERATOR_HALTED"
    second.command(T0 + timedelta(seconds=4), "RESUME")
    [ack] = second.acks()
    assert ack.code == "OPERATOR_RESUME" and "state ACTIVE" in ack.message
    second.signal(T0 + timedelta(seconds=5), 50_000, 49_000, 52_000)
    assert second.broker.sent == 1
    assert [e.action for e in second.journal.controls()] == ["HALT", "RESUME"]


def test_flatten_closes_every_position_records_the_pnl_and_halts(c: Controlled) -> None:
    _open_a_position(c, T0)
    c.candle(T0 + timedelta(minutes=1), 50_200, 50_300, 50_100, 50_200)
    c.command(T0 + timedelta(minutes=1, seconds=5), "FLATTEN", reason="news")
    assert c.broker.positions == {}
    [pnl] = c.read()[PNL]
    assert pnl.exit_price == 50_200 and pnl.realized_pnl == pytest.approx(200.0)
    assert pnl.exit_reason == "OPERATOR_FLATTEN"
    assert c.broker.balance == pytest.approx(100_200.0)
    [ack] = c.acks()
    assert ack.code == "OPERATOR_FLATTEN" and "state HALTED" in ack.message and "0 position(s) open" in ack.message
    c.signal(T0 + timedelta(minutes=2), 50_200, 49_200, 52_200)
    assert c.broker.sent == 1 and c.broker.positions == {}


def test_each_command_is_applied_once_however_often_it_is_delivered(c: Controlled) -> None:
    c.candle(T0, 50_000, 50_000, 50_000, 50_000)
    halt = c.command(T0 + timedelta(seconds=1), "HALT")
    c.command(T0 + timedelta(seconds=2), "RESUME")
    c.send(CONTROL_EXECUTION, halt, ns(T0))  # the old halt redelivered after the resume
    assert c.stage.guard.state is TradingState.ACTIVE
    c.signal(T0 + timedelta(seconds=3), 50_000, 49_000, 52_000)
    assert c.broker.sent == 1
    assert [a.code for a in c.acks()] == ["OPERATOR_HALT", "OPERATOR_RESUME"]


def test_a_halt_polled_with_a_signal_stops_it_whichever_came_first(c: Controlled) -> None:
    c.candle(T0, 50_000, 50_000, 50_000, 50_000)
    c.at(T0 + timedelta(seconds=1))
    # the signal is on the bus before the halt; both are read in one poll
    signal = Signal(timestamp=T0 + timedelta(seconds=1), symbol="BTC-USD", signal_id=uuid.uuid4(),
                    stage=SignalStage.FINAL, direction=SignalDirection.LONG, confidence=0.6, entry_price=50_000,
                    stop_loss=49_000, take_profit=52_000, ttl_seconds=120)  # fmt: skip
    codec = Codec(Signal)
    c.producer.send("signals.final", codec.encode(signal), key=b"BTC-USD", headers=codec.headers(ns(T0), "test"))
    cmd = c.command(T0 + timedelta(seconds=1), "HALT", send=False)
    control = Codec(ControlCommand)
    c.producer.send(CONTROL_EXECUTION, control.encode(cmd), key=b"default", headers=control.headers(ns(T0), "test"))
    c.producer.flush()
    c.pipeline.drain()
    assert c.broker.sent == 0
    entry = c.journal.get(str(signal.signal_id))
    assert entry is not None and entry.reason == "OPERATOR_HALTED"


def test_commands_for_another_account_change_nothing_and_star_is_every_account(c: Controlled) -> None:
    c.candle(T0, 50_000, 50_000, 50_000, 50_000)
    c.command(T0 + timedelta(seconds=1), "HALT", account="someone-else")
    assert c.acks() == [] and c.stage.guard.state is TradingState.ACTIVE
    c.command(T0 + timedelta(seconds=2), "HALT", account="*")
    assert c.stage.guard.state is TradingState.HALTED


def test_a_stale_flatten_only_halts(c: Controlled) -> None:
    _open_a_position(c, T0)
    c.command(T0 + timedelta(minutes=30), "FLATTEN", issued=T0 + timedelta(seconds=2))  # read 30 min late
    assert len(c.broker.positions) == 1
    [ack] = c.acks()
    assert "halted only" in ack.message and c.stage.guard.state is TradingState.HALTED


def test_resume_does_not_lift_a_loss_limit_halt(tmp_path: Path) -> None:
    c = Controlled(tmp_path / "j.sqlite3", settings(max_daily_loss_pct=1.0))
    _open_a_position(c, T0)
    c.candle(T0 + timedelta(minutes=1), 48_500, 48_600, 48_400, 48_500)  # a gap through the stop: -1 500
    assert c.stage.guard.state is TradingState.HALTED and c.broker.positions == {}
    c.command(T0 + timedelta(minutes=2), "RESUME")
    assert c.stage.guard.state is TradingState.HALTED
    [ack] = c.acks()
    assert "state HALTED" in ack.message
    c.signal(T0 + timedelta(minutes=3), 48_500, 48_000, 49_500)
    assert c.broker.sent == 1


def test_a_malformed_command_is_dead_lettered_and_the_stage_goes_on(c: Controlled) -> None:
    c.candle(T0, 50_000, 50_000, 50_000, 50_000)
    c.producer.send(CONTROL_EXECUTION, b"\x00garbage", key=b"default", headers=[("schema", b"kstrade.ControlCommand")])
    c.producer.flush()
    c.pipeline.drain()
    [dead] = c.dead.poll(max_records=10, timeout=0.0)
    assert dict(dead.headers)["dlq.error.code"]
    c.command(T0 + timedelta(seconds=1), "HALT")
    assert c.stage.guard.state is TradingState.HALTED
