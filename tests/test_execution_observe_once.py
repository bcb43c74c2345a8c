"""A candle's second observation of the paper account is skipped when the account did not change
since the first (`ExecutionStage.handle`, `PaperBroker.unchanged_since`). Checked against a stage
that always observes twice, on generated runs of candles on two symbols, signals, operator
commands and bad records, with the rules that act on the time and the account (daily and maximum
loss, funded weekend and news closes, halts and flattens): the same output bytes, the same guard
saved at the same moments, the same account."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstrade.bus.topics import CONTROL_EXECUTION, candles, dlq_topic, signals
from kstrade.execution import PaperBroker
from kstrade.execution.account import AccountSnapshot, Position
from kstrade.execution.guardrails import NewsBlackout, NewsEvent
from kstrade.execution.paper import _Open
from kstrade.schemas.models import (
    Candle,
    ControlAction,
    ControlCommand,
    Message,
    Side,
    Signal,
    SignalDirection,
    SignalStage,
)
from tests.test_execution_stage import BTC, T0, Harness, ns
from tests.test_execution_stage import settings as execution_settings

SYMBOLS = ["BTC-USD", "ETH-USD"]
PRICE = {"BTC-USD": 50_000.0, "ETH-USD": 3_000.0}


class AlwaysObserved(PaperBroker):
    """The paper broker as it was before: a fresh account snapshot on every read, never known
    unchanged, so every candle is observed twice."""

    def account(self, now_ns: int) -> AccountSnapshot:
        positions = tuple(o.position for o in self.positions.values())
        return AccountSnapshot(self.balance, self.balance + sum(p.floating_pnl for p in positions), positions)

    def unchanged_since(self, account: AccountSnapshot) -> bool:
        return False


def harness(path: Path, broker: PaperBroker, *, funded: bool = True) -> tuple[Harness, list[str]]:
    """An execution stage on `broker` (funded by default), news ahead, every guard save kept."""
    cfg = execution_settings(max_daily_loss_pct=1.0, max_open_positions=3, funded=funded, reducing_at_pct=20.0)
    cfg = cfg.model_copy(update={"symbols": dict.fromkeys(SYMBOLS, BTC)})
    h = Harness(path, cfg, broker, SYMBOLS)
    h.bus.admin().create_topics(
        [(t, 1, 1, {}) for t in (CONTROL_EXECUTION, dlq_topic(CONTROL_EXECUTION), *map(dlq_topic, h.stage.inputs()))]
    )
    # a USD release two hours in: a funded account closes positions on both symbols ahead of it
    h.stage.news = NewsBlackout([NewsEvent(ns(T0 + timedelta(hours=2)), ("USD",), "release")], 2)
    saved: list[str] = []
    save = h.journal.save_guard

    def saving(data: dict[str, Any]) -> None:
        saved.append(json.dumps(data, sort_keys=True))
        save(data)

    h.journal.save_guard = saving  # type: ignore[method-assign]
    return h, saved


def send(h: Harness, topic: str, msg: Message | bytes, t_ns: int) -> None:
    h.clock.advance_to(t_ns)
    if isinstance(msg, bytes):  # a record no codec reads: dead-lettered
        h.producer.send(topic, msg, key=b"x", headers=[("schema", b"kstrade.Candle")])
        h.producer.flush()
        h.pipeline.drain()
    else:
        h.send(topic, msg, t_ns)


def _id(n: int) -> uuid.UUID:
    """The n-th id of a run: distinct in the 24 hex digits an order id keeps."""
    return uuid.UUID(int=(n + 1) << 100)


#: Mostly candles and signals: positions open, move, hit their stops and the loss floors.
step = st.sampled_from(["candle"] * 8 + ["signal"] * 3 + ["control", "bad", "wait"]).flatmap(
    lambda kind: {
        "candle": st.tuples(st.just(kind), st.sampled_from(SYMBOLS), st.floats(-0.006, 0.006), st.floats(0, 0.004)),
        "signal": st.tuples(st.just(kind), st.sampled_from(SYMBOLS), st.booleans(), st.floats(0.55, 0.95)),
        "control": st.tuples(st.just(kind), st.sampled_from(list(ControlAction)), st.just(0), st.just(0)),
        "bad": st.tuples(st.just(kind), st.sampled_from(SYMBOLS), st.just(0), st.just(0)),
        # minutes: across Prague midnights and into a weekend
        "wait": st.tuples(st.just(kind), st.integers(1, 3000), st.just(0), st.just(0)),
    }[kind]
)


def messages(steps: list[tuple[Any, ...]]) -> list[tuple[str, Message | bytes, int]]:
    """The records of a run, made once so both stages get the same bytes (ids included)."""
    out: list[tuple[str, Message | bytes, int]] = []
    t = T0
    price = dict(PRICE)
    for kind, a, b, c in steps:
        t += timedelta(minutes=1)
        if kind == "wait":
            t += timedelta(minutes=a)
        elif kind == "candle":
            move, spread = b, c
            o = price[a]
            close = o * (1 + move)
            high, low = max(o, close) * (1 + spread), min(o, close) * (1 - spread)
            price[a] = close
            candle = Candle(timestamp=t, symbol=a, interval="1m", open=o, high=high, low=low, close=close,
                            volume=1.0, source="test")  # fmt: skip
            out.append((candles(a, "1m"), candle, ns(t)))
        elif kind == "signal":
            p, long = price[a], b
            signal = Signal(
                timestamp=t, symbol=a, signal_id=_id(len(out)), stage=SignalStage.FINAL,
                direction=SignalDirection.LONG if long else SignalDirection.SHORT, confidence=c,
                entry_price=p, stop_loss=p * (0.99 if long else 1.01), take_profit=p * (1.02 if long else 0.98),
                ttl_seconds=120,
            )  # fmt: skip
            out.append((signals("final"), signal, ns(t)))
        elif kind == "control":
            command = ControlCommand(timestamp=t, command_id=_id(len(out)), account="default",
                                     action=a, issued_by="test:operator", reason="test")  # fmt: skip
            out.append((CONTROL_EXECUTION, command, ns(t)))
        else:
            out.append((candles(a, "1m"), b"\x00not a candle", ns(t)))
    return out


def run(path: Path, broker: PaperBroker, records: list[tuple[str, Message | bytes, int]]) -> Any:
    h, saved = harness(path, broker)
    for topic, msg, t_ns in records:
        send(h, topic, msg, t_ns)
    reader = h.bus.consumer("test-everything")
    reader.subscribe([*h.stage.outputs_for(SYMBOLS), *map(dlq_topic, h.stage.inputs())])
    written = []
    while batch := reader.poll(max_records=1000, timeout=0.0):
        # every byte but a dead letter's wall-clock time
        written += [(r.topic, r.key, r.value, [x for x in r.headers if x[0] != "dlq.time_ns"]) for r in batch]
    account = broker.account(h.clock.now_ns())
    return written, saved, account, h.stage.guard.snapshot(), h.stage.guard.state, broker.prices


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=60))
def test_skipping_an_unchanged_observation_changes_nothing(tmp_path: Path, steps: list[tuple[Any, ...]]) -> None:
    records = messages(steps)
    case = tmp_path / uuid.uuid4().hex
    skipped = run(case / "skipped.sqlite3", PaperBroker(100_000, slippage_bps=0.0), records)
    always = run(case / "always.sqlite3", AlwaysObserved(100_000, slippage_bps=0.0), records)
    assert skipped == always


def test_a_mark_is_the_position_with_the_new_price() -> None:
    """`mark_prices` builds the marked position field by field: every other field stays."""
    # It names the fields in this order: a field added to Position must be added there too.
    assert [f.name for f in fields(Position)] == [
        "ticket", "client_order_id", "symbol", "side", "quantity", "entry_price", "stop_loss", "take_profit", "mark",
        "value_per_unit", "close_commission", "opened_ns",
    ], "Position changed: PaperBroker.mark_prices builds one field by field"  # fmt: skip
    broker = PaperBroker(100_000)
    held = Position("t-1", "ks-1", "BTC-USD", Side.SELL, 2.5, 50_000.0, 51_000.0, 48_000.0, 50_000.0, 3.0, 7.5, 42)
    broker.positions["t-1"] = _Open(held, 7.5, 3.0, "t-1")
    before = broker.account(0)
    assert broker.unchanged_since(before) and broker.account(0) is before
    broker.mark_prices("ETH-USD", 3_000.0, 3_000.0, 3_000.0, 3_000.0, 0)  # another symbol: nothing moves
    assert broker.unchanged_since(before)
    broker.mark_prices("BTC-USD", 50_000.0, 50_100.0, 49_900.0, 50_050.0, 0)
    assert broker.positions["t-1"].position == replace(held, mark=50_050.0)
    assert not broker.unchanged_since(before)
    assert broker.account(0).equity == 100_000 + (-1) * (50_050.0 - 50_000.0) * 2.5 * 3.0
