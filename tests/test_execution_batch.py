"""The execution stage's batch path gives what the record-by-record path gave: a poll's current
candles read in one native call (`kstrade._native.CandleMarks`), an observation repeated at
the same instant skipped (`ExecutionStage._observe`), and an observation of an unchanged
account on the same Prague day reduced to noting the time (`AccountGuard._settled`).

Checked on generated instants of several records each (candles of two symbols, signals,
operator commands, and bad records among them: a NaN price, a candle of another symbol on a
topic, a signal for a symbol not traded, a body that is no candle), funded and not, against
the stage as it was: `handle` per record after the commands, on a paper account whose every
read is a fresh snapshot (no skip can apply). The same bytes on every topic and dead-letter
topic, the same guard saved at the same moments, the same account and guard at the end; and
the native read against `_candle` on varied single candles."""

from __future__ import annotations

import functools
import math
import struct
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstrade._native import CodecError, encode_candle
from kstrade.bus import Bus, Output, Record
from kstrade.bus.runner import Batch
from kstrade.bus.topics import CONTROL_EXECUTION, candles, dlq_topic, signals
from kstrade.execution import ExecutionStage, OrderJournal, PaperBroker
from kstrade.execution.guardrails import AccountGuard
from kstrade.execution.stage import _MICROS_MAX, _MICROS_MIN
from kstrade.schemas import Codec
from kstrade.schemas.models import (
    Candle,
    ControlAction,
    ControlCommand,
    Message,
    Signal,
    SignalDirection,
    SignalStage,
)
from tests.test_execution_observe_once import SYMBOLS, AlwaysObserved, _id
from tests.test_execution_observe_once import harness as observe_once_harness
from tests.test_execution_stage import T0, Harness, ns
from tests.test_execution_stage import settings as execution_settings

PRICE = {"BTC-USD": 50_000.0, "ETH-USD": 3_000.0}
#: A price no generated candle has: its 8 bytes in a body are replaced by a NaN.
_MARKER = 12_345.678125


class Reference(ExecutionStage):
    """The stage's batch handler before the native read: the commands of a poll first, then
    `handle` for each other record in poll order."""

    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        def each() -> Iterator[Output]:
            yield from batch.each(self.handle, [r for r in batch.records if r.topic == CONTROL_EXECUTION])
            yield from batch.each(self.handle, [r for r in batch.records if r.topic != CONTROL_EXECUTION])

        return each()


def harness(path: Path, *, reference: bool, funded: bool) -> tuple[Harness, list[str]]:
    broker = (AlwaysObserved if reference else PaperBroker)(100_000, slippage_bps=0.0)
    h, saved = observe_once_harness(path, broker, funded=funded)
    if reference:  # the same stage object in the same pipeline, with the old batch handler
        h.stage.__class__ = Reference
    return h, saved


def nan_candle(symbol: str, t: Any) -> bytes:
    """A current candle body with a NaN open (no writer here writes one: the codec refuses it)."""
    candle = Candle(timestamp=t, symbol=symbol, interval="1m", open=_MARKER, high=2 * _MARKER, low=1.0,
                    close=_MARKER, volume=1.0, source="test")  # fmt: skip
    body = Codec(Candle).encode(candle)
    marker = struct.pack("<d", _MARKER)
    assert body.count(marker) == 2
    return body.replace(marker, struct.pack("<d", math.nan), 1)


#: One record of an instant: mostly candles and signals, and now and then a command or a bad record.
record = st.sampled_from(["candle"] * 6 + ["signal"] * 3 + ["control", "bad"]).flatmap(
    lambda kind: {
        "candle": st.tuples(st.just(kind), st.sampled_from(SYMBOLS), st.floats(-0.006, 0.006), st.floats(0, 0.004)),
        "signal": st.tuples(st.just(kind), st.sampled_from(SYMBOLS), st.booleans(), st.floats(0.55, 0.95)),
        "control": st.tuples(st.just(kind), st.sampled_from(list(ControlAction)), st.just(0), st.just(0)),
        "bad": st.tuples(
            st.just(kind),
            st.sampled_from(["nan", "foreign", "unknown", "malformed"]),
            st.sampled_from(SYMBOLS),
            st.just(0),
        ),
    }[kind]
)
#: An instant: minutes after the last one (across Prague midnights and into a weekend), and its records.
instant = st.tuples(st.sampled_from([1] * 6 + [5, 60, 700, 2000]), st.lists(record, min_size=1, max_size=6))

Sent = tuple[str, Message | bytes, bytes]


def messages(instants: list[tuple[int, list[tuple[Any, ...]]]]) -> list[tuple[int, list[Sent]]]:
    """Each instant's time and records (topic, message or raw body, key), made once so both
    stages get the same bytes."""
    out: list[tuple[int, list[Sent]]] = []
    t = T0
    price = dict(PRICE)
    n = 0
    for minutes, records in instants:
        t += timedelta(minutes=minutes)
        sent: list[Sent] = []
        for kind, a, b, c in records:
            n += 1
            if kind == "candle":
                o = price[a]
                close = o * (1 + b)
                high, low = max(o, close) * (1 + c), min(o, close) * (1 - c)
                price[a] = close
                candle = Candle(timestamp=t, symbol=a, interval="1m", open=o, high=high, low=low, close=close,
                                volume=1.0, source="test")  # fmt: skip
                sent.append((candles(a, "1m"), candle, a.encode()))
            elif kind == "signal":
                p, long = price[a], b
                signal = Signal(
                    timestamp=t, symbol=a, signal_id=_id(n), stage=SignalStage.FINAL,
                    direction=SignalDirection.LONG if long else SignalDirection.SHORT, confidence=c,
                    entry_price=p, stop_loss=p * (0.99 if long else 1.01), take_profit=p * (1.02 if long else 0.98),
                    ttl_seconds=120,
                )  # fmt: skip
                sent.append((signals("final"), signal, a.encode()))
            elif kind == "control":
                command = ControlCommand(timestamp=t, command_id=_id(n), account="default", action=a,
                                         issued_by="test:operator", reason="test")  # fmt: skip
                sent.append((CONTROL_EXECUTION, command, b"default"))
            elif a == "nan":
                sent.append((candles(b, "1m"), nan_candle(b, t), b.encode()))
            elif a == "foreign":  # the other symbol's candle on this topic
                other = SYMBOLS[1 - SYMBOLS.index(b)]
                candle = Candle(timestamp=t, symbol=other, interval="1m", open=1, high=1, low=1, close=1, volume=1,
                                source="test")  # fmt: skip
                sent.append((candles(b, "1m"), candle, b.encode()))
            elif a == "unknown":  # a signal for a symbol not traded here
                p = price[b]
                signal = Signal(timestamp=t, symbol="XRP-USD", signal_id=_id(n), stage=SignalStage.FINAL,
                                direction=SignalDirection.LONG, confidence=0.9, entry_price=p, stop_loss=p * 0.99,
                                take_profit=p * 1.02, ttl_seconds=120)  # fmt: skip
                sent.append((signals("final"), signal, b"XRP-USD"))
            else:
                sent.append((candles(b, "1m"), b"\x00not a candle", b.encode()))
        out.append((ns(t), sent))
    return out


def run(path: Path, instants: list[tuple[int, list[Sent]]], *, reference: bool, funded: bool) -> Any:
    h, saved = harness(path, reference=reference, funded=funded)
    for t_ns, sent in instants:
        h.clock.advance_to(t_ns)
        for topic, msg, key in sent:
            if isinstance(msg, bytes):  # the current candle headers over a body no model reads
                h.producer.send(topic, msg, key=key, headers=Codec(Candle).headers(t_ns, "test"))
            else:
                codec = Codec(type(msg))
                h.producer.send(topic, codec.encode(msg), key=key, headers=codec.headers(t_ns, "test"))
        h.producer.flush()
        h.pipeline.drain()  # the instant's records in one poll
    reader = h.bus.consumer("test-everything")
    reader.subscribe([*h.stage.outputs_for(SYMBOLS), *map(dlq_topic, h.stage.inputs())])
    written = []
    while batch := reader.poll(max_records=1000, timeout=0.0):
        # every byte but a dead letter's wall-clock time
        written += [(r.topic, r.key, r.value, [x for x in r.headers if x[0] != "dlq.time_ns"]) for r in batch]
    account = h.broker.account(h.clock.now_ns())
    guard = h.stage.guard
    h.journal.close()
    return written, saved, account, guard.snapshot(), guard.state, h.broker.prices


@pytest.mark.parametrize("funded", [False, True], ids=["challenge", "funded"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(instant, min_size=1, max_size=40))
def test_the_batch_path_writes_what_the_record_path_wrote(
    tmp_path: Path, funded: bool, instants: list[tuple[int, list[tuple[Any, ...]]]]
) -> None:
    sent = messages(instants)
    case = tmp_path / uuid.uuid4().hex
    new = run(case / "new.sqlite3", sent, reference=False, funded=funded)
    old = run(case / "old.sqlite3", sent, reference=True, funded=funded)
    assert new == old


def one_poll(path: Path, sent: list[Sent], t_ns: int, *, reference: bool) -> Any:
    """The records of one instant in one poll: the runner's counts, each dead letter's record
    and code, the marks and the orders sent."""
    h, _ = harness(path, reference=reference, funded=False)
    h.clock.advance_to(t_ns)
    for topic, msg, key in sent:
        if isinstance(msg, bytes):
            h.producer.send(topic, msg, key=key, headers=Codec(Candle).headers(t_ns, "test"))
        else:
            codec = Codec(type(msg))
            h.producer.send(topic, codec.encode(msg), key=key, headers=codec.headers(t_ns, "test"))
    h.producer.flush()
    result = h.pipeline.runners[0].run_once(timeout=0.0)
    letters = []
    for topic in (candles("BTC-USD", "1m"), candles("ETH-USD", "1m"), signals("final")):
        reader = h.bus.consumer(f"dlq-{topic}")
        reader.subscribe([dlq_topic(topic)])
        letters += [(r.value, dict(r.headers)["dlq.error.code"]) for r in reader.poll(100, 0.0)]
    h.journal.close()
    return (result.polled, result.dead_lettered, result.processed), letters, h.broker.prices, h.broker.sent


def test_each_bad_record_is_dead_lettered_alone_and_the_rest_of_the_poll_goes_on(tmp_path: Path) -> None:
    records = [
        ("candle", "BTC-USD", 0.0, 0.0), ("bad", "nan", "BTC-USD", 0), ("candle", "ETH-USD", 0.001, 0.0),
        ("bad", "foreign", "ETH-USD", 0), ("bad", "malformed", "BTC-USD", 0), ("bad", "unknown", "BTC-USD", 0),
        ("signal", "BTC-USD", True, 0.9), ("candle", "BTC-USD", 0.001, 0.0),
    ]  # fmt: skip
    [(t_ns, sent)] = messages([(1, records)])
    new = one_poll(tmp_path / "new.sqlite3", sent, t_ns, reference=False)
    old = one_poll(tmp_path / "old.sqlite3", sent, t_ns, reference=True)
    assert new == old
    counts, letters, prices, orders = new
    assert counts == (8, 4, 4)
    bad = {msg for _, msg, _ in sent if isinstance(msg, bytes)} | {
        Codec(type(msg)).encode(msg) for _, msg, _ in sent
        if (isinstance(msg, Candle) and msg.open == 1)
        or (isinstance(msg, Signal) and msg.symbol == "XRP-USD")
    }  # fmt: skip
    assert {value for value, _ in letters} == bad and len(letters) == 4  # each bad record, once
    codes = {code for _, code in letters}
    assert {b"SYMBOL_TOPIC_MISMATCH", b"UNKNOWN_SYMBOL"} <= codes and len(codes) == 4
    # the good records went on: both symbols marked at their last closes, the signal traded
    last = {msg.symbol: msg.close for _, msg, _ in sent if isinstance(msg, Candle) and msg.open != 1}
    assert prices == last and orders == 1


@functools.cache
def _stage() -> ExecutionStage:
    journal = OrderJournal(Path(tempfile.mkdtemp()) / "orders.sqlite3")
    return ExecutionStage(execution_settings(), PaperBroker(100_000), journal, ["BTC-USD"])


def _one_record(body: bytes, headers: list[tuple[str, bytes]]) -> Record:
    bus = Bus.memory()
    topic = candles("BTC-USD", "1m")
    bus.admin().create_topics([(topic, 1, 1, {})])
    producer = bus.producer()
    producer.send(topic, body, key=b"BTC-USD", headers=headers)
    producer.flush()
    reader = bus.consumer("peek")
    reader.subscribe([topic])
    [got] = reader.poll(10, 0.0)
    return got


prices = st.floats(-1e6, 1e6) | st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e300])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(prices, min_size=4, max_size=4),
    st.booleans(),
    prices,
    st.sampled_from(["1m", "5m", "15m", "1h", "2m"]),
    st.sampled_from([None, 0, 1, 5, 60, 61]),
    st.sampled_from([None, "TRADES", "REST"]),
    st.sampled_from(["BTC-USD", "", "ETH-USD"]),
    st.integers(-(2**63), 2**63 - 1) | st.integers(-(10**15), 10**17),
    st.sampled_from([b"0", b"0042", b"-5", b" 7", b"99999999999999999999", b"1e3", b"", b"\xd9\xa3"]),
)
def test_the_native_read_is_the_python_read_or_leaves_it(
    four: list[float], ordered: bool, volume: float, interval: str, minutes: int | None, origin: str | None,
    symbol: str, micros: int, origin_ns: bytes,
) -> None:  # fmt: skip
    """Any current candle body and header: where `CandleMarks` reads a mark of the topic's
    symbol, `_candle` reads the same one; where it leaves the record, `_candle` takes it (and
    may well refuse it)."""
    low, o, c, h = sorted(four) if ordered else four
    value = {"timestamp": micros, "symbol": symbol, "interval": interval, "open": o, "high": h, "low": low,
             "close": c, "volume": volume, "source": "t", "minutes": minutes, "origin": origin}  # fmt: skip
    try:
        body = encode_candle(value)
    except (CodecError, OverflowError):
        return  # the writer refuses it
    stage = _stage()
    reader = stage._reader()
    assert reader.marks is not None
    headers = [("schema", b"kstrade.Candle"), ("schema_version", reader.version_header), ("origin_ns", origin_ns),
               ("stage", b"t"), ("encoding", b"avro")]  # fmt: skip
    record = _one_record(body, headers)
    [mark] = reader.marks.read([record])
    try:
        python: tuple[Any, ...] | None = stage._candle(record)
    except Exception:
        python = None
    if mark is not None and mark[0] != "BTC-USD":
        assert python is None  # another symbol's candle on this topic: `_in_order` leaves it to `handle`
    elif mark is not None:
        assert python == mark
        assert all(type(x) is float for x in mark[1:5]) and type(mark[5]) is int
    elif ordered and symbol == "BTC-USD" and origin_ns.isdigit() and len(origin_ns) < 19 and interval == "1m":
        # a plain candle the native read leaves can only be one the model refuses
        assert python is None or not (volume >= 0 and _MICROS_MIN <= micros <= _MICROS_MAX
                                      and minutes in (None, 1)), python  # fmt: skip


def test_a_settled_observation_is_a_full_one(tmp_path: Path) -> None:
    """`AccountGuard._settled` holds only where the full observation finds nothing new: a guard
    that never takes it, on the same accounts and times, gives the same events and snapshots."""
    from kstrade.config import GuardrailSettings
    from kstrade.execution.account import AccountSnapshot, Position
    from kstrade.schemas.models import Side

    rules = GuardrailSettings(max_daily_loss_pct=1.0, reducing_at_pct=20.0)
    fast, full = AccountGuard(rules, ns(T0)), AccountGuard(rules, ns(T0))
    full._settled = lambda now_ns, account: False  # type: ignore[method-assign]
    held = Position("t-1", "ks-1", "BTC-USD", Side.BUY, 1.0, 50_000.0, 49_000.0, 52_000.0, 50_000.0, 1.0)
    accounts = [AccountSnapshot(100_000.0, 100_000.0), AccountSnapshot(100_000.0, 99_500.0, (held,)),
                AccountSnapshot(100_000.0, 98_900.0, (held,)), AccountSnapshot(98_900.0, 98_900.0)]  # fmt: skip
    t = ns(T0)
    for step in range(4000):
        t += [60, 60, 60, 3600, 43_200][step % 5] * 1_000_000_000
        account = accounts[(step // 7) % len(accounts)]
        if step % 97 == 0:
            for g in (fast, full):
                g.record_close(t, -10.0)
        assert fast.observe(t, account) == full.observe(t, account), step
        assert (
            fast.snapshot() == full.snapshot() and fast.state is full.state and fast.durable_key() == full.durable_key()
        )
