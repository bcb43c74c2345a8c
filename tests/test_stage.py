"""Stages and the in-process pipeline: headers carried, bad input dead-lettered, time-driven
work on the event clock, deterministic output."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from kstrade.bus import Bus, MessageError, Output, Record
from kstrade.bus.topics import dlq_topic
from kstrade.clock import Clock, EventClock, WallClock
from kstrade.schemas import Candle, MessageHeaders
from kstrade.stage import Pipeline, Source, Stage, _runner

from .conftest import drain

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def candle(i: int, close: float) -> Candle:
    return Candle(
        timestamp=T0 + timedelta(minutes=i), symbol="BTC-USD", interval="1m",
        open=close, high=close, low=close, close=close, volume=1.0, source="test",
    )  # fmt: skip


class Prices(Source):
    name = "prices"

    def __init__(self, closes: list[float]) -> None:
        super().__init__()
        self.closes = closes
        self.i = 0

    def next_batch(self) -> list[Output] | None:
        if self.i >= len(self.closes):
            return None
        c = candle(self.i, self.closes[self.i])
        origin = int((c.timestamp + timedelta(minutes=1)).timestamp() * 1e9)
        assert isinstance(self.clock, EventClock)
        self.clock.advance_to(origin)
        self.i += 1
        return [self.emit("in", c, key=b"BTC-USD", origin_ns=origin)]


class Doubler(Stage):
    name = "doubler"

    def __init__(self) -> None:
        super().__init__()
        self.timer_calls: list[int] = []

    def inputs(self) -> list[str]:
        return ["in"]

    def handle(self, record: Record) -> Iterable[Output]:
        price = self.decode(record, Candle)
        if price.close < 0:
            raise MessageError("NEGATIVE_PRICE", f"close {price.close} < 0")
        doubled = price.model_copy(update={"close": 2 * price.close, "high": 2 * price.close})
        yield self.emit("out", doubled, key=record.key, origin_ns=self.origin_ns(record))

    def on_time(self, now_ns: int) -> Iterable[Output]:
        if not self.timer_calls or self.timer_calls[-1] != now_ns:
            self.timer_calls.append(now_ns)
        return ()


def _run(closes: list[float]) -> tuple[list[Record], list[Record], Doubler]:
    bus = Bus.memory()
    bus.admin().create_topics([(t, 1, 1, {}) for t in ("in", "out", dlq_topic("in"))])
    doubler = Doubler()
    pipeline = Pipeline(bus, [doubler])
    assert pipeline.run(Prices(closes)) == len(closes)
    check = bus.consumer("check")
    check.subscribe(["out", dlq_topic("in")])
    got = drain(check, len(closes))
    return [r for r in got if r.topic == "out"], [r for r in got if r.topic != "out"], doubler


def test_outputs_carry_origin_time_and_stage_and_bad_input_is_dead_lettered() -> None:
    out, dead, doubler = _run([1.0, 2.0, -5.0, 3.0])
    codec = Doubler().codec(Candle)
    assert [codec.decode_record(r).close for r in out] == [2.0, 4.0, 6.0]  # type: ignore[attr-defined]
    headers = [MessageHeaders.from_kafka(r.headers) for r in out]
    assert [h.stage for h in headers] == ["doubler"] * 3
    assert [h.origin_ns for h in headers] == [int((T0 + timedelta(minutes=m)).timestamp() * 1e9) for m in (1, 2, 4)]
    assert len(dead) == 1 and dead[0].header("dlq.error.code") == b"NEGATIVE_PRICE"
    # on_time saw the event clock walk minute by minute, not the wall clock
    assert doubler.timer_calls == [int((T0 + timedelta(minutes=m)).timestamp() * 1e9) for m in range(1, 5)]


def test_a_malformed_value_is_dead_lettered_with_the_codec_error_code() -> None:
    bus = Bus.memory()
    bus.admin().create_topics([(t, 1, 1, {}) for t in ("in", "out", dlq_topic("in"))])
    pipeline = Pipeline(bus, [Doubler()])
    codec = Doubler().codec(Candle)
    producer = bus.producer()
    producer.send("in", b"\x02garbage", key=b"BTC-USD", headers=codec.headers(1, "test"))
    producer.send("in", codec.encode(candle(0, 1.0)), key=b"BTC-USD")  # no headers at all
    pipeline.drain()
    check = bus.consumer("check")
    check.subscribe([dlq_topic("in")])
    dead = drain(check, 2)
    assert [r.header("dlq.error.code") for r in dead] == [b"MALFORMED", b"MISSING_HEADER"]
    assert b"topic 'in', offset 0" in (dead[0].header("dlq.error.message") or b"")
    assert pipeline.stats.dead_lettered["doubler"] == 2


def test_same_input_gives_byte_identical_outputs() -> None:
    closes = [float(i % 7) for i in range(50)]
    a, _, _ = _run(closes)
    b, _, _ = _run(closes)
    assert [(r.value, r.headers, r.partition, r.offset) for r in a] == [
        (r.value, r.headers, r.partition, r.offset) for r in b
    ]


def test_a_stage_gets_the_consumer_properties_it_declares() -> None:
    class Late(Doubler):
        name = "late-reader"
        consumer_config = {"auto.offset.reset": "latest"}  # noqa: RUF012

    bus = Bus.memory()
    bus.admin().create_topics([(t, 1, 1, {}) for t in ("in", "out", dlq_topic("in"))])
    codec = Doubler().codec(Candle)
    bus.producer().send("in", codec.encode(candle(0, 1.0)), key=b"BTC-USD", headers=codec.headers(1, "t"))
    early, late = Pipeline(bus, [Doubler()]), Pipeline(bus, [Late()])
    early.drain()
    late.drain()
    assert early.stats.polled["doubler"] == 1
    assert late.stats.polled["late-reader"] == 0  # joined after the record: 'latest' skips it


class Pairer(Stage):
    """Holds a record until another with the same key arrives (a toy join)."""

    name = "pairer"

    def __init__(self, source: str, sink: str) -> None:
        super().__init__()
        self.source, self.sink = source, sink
        self.waiting: dict[bytes, Record] = {}
        self.seen: list[int] = []

    def inputs(self) -> list[str]:
        return [self.source]

    def handle(self, record: Record) -> Iterable[Output]:
        self.seen.append(record.offset)
        key = record.key or b""
        first = self.waiting.pop(key, None)
        if first is None:
            self.waiting[key] = record
            return []
        return [Output(self.sink, (first.value or b"") + (record.value or b""), key=key)]

    def retained(self) -> dict[tuple[str, int], int]:
        held: dict[tuple[str, int], int] = {}
        for r in self.waiting.values():
            tp = (r.topic, r.partition)
            held[tp] = min(held.get(tp, r.offset), r.offset)
        return held


def test_records_a_stage_still_holds_are_not_committed(bus: Bus, unique: str) -> None:
    source, sink = f"halves-{unique}", f"pairs-{unique}"
    bus.admin().create_topics([(source, 1, 1, {}), (sink, 1, 1, {})])
    producer = bus.producer()
    for value, key in ((b"a1", b"a"), (b"b1", b"b"), (b"a2", b"a")):
        producer.send(source, value, key=key)
    producer.flush()
    stage = Pairer(source, sink)
    runner = _runner(bus, stage, poll_timeout=0.2)
    for _ in range(100):
        runner.run_once()
        if len(stage.seen) >= 3:
            break
    assert runner.consumer.committed([(source, 0)]) == [(source, 0, 1)]  # b1 (offset 1) is still held
    runner.consumer.close()
    again = Pairer(source, sink)
    again_runner = _runner(bus, again, poll_timeout=0.2)
    for _ in range(100):
        again_runner.run_once()
        if len(again.seen) >= 2:
            break
    assert again.seen == [1, 2]  # the held record comes back, then what followed it


def _through_the_door(clock: Clock, origins: list[int], future_skew_ns: int | None = None) -> tuple[int, list[Record]]:
    """A Doubler fed one candle per origin_ns in `origins` on one partition, run with `clock`:
    what it produced, and the dead letters of its input."""
    bus = Bus.memory()
    bus.admin().create_topics([(t, 1, 1, {}) for t in ("in", "out", dlq_topic("in"))])
    doubler = Doubler()
    if future_skew_ns is not None:
        doubler.max_future_skew_ns = future_skew_ns
    codec = doubler.codec(Candle)
    producer = bus.producer()
    for origin in origins:
        producer.send("in", codec.encode(candle(0, 1.0)), key=b"BTC-USD", headers=codec.headers(origin, "t"))
    pipeline = Pipeline(bus, [doubler], clock=clock)
    pipeline.drain()
    check = bus.consumer("check")
    check.subscribe([dlq_topic("in")])
    return pipeline.stats.produced["doubler"], check.poll(100, 0.0)


def test_live_a_record_from_beyond_the_allowed_skew_is_dead_lettered_at_the_door() -> None:
    """Any stage, any message: origin_ns (the market time behind it) more than the skew ahead of
    the wall clock goes to the DLQ as FUTURE_TIMESTAMP without reaching `handle`; in replays
    (event clock) there is no wall clock to compare with and nothing is refused."""
    now_ns = time.time_ns()
    origins = [now_ns, now_ns + 50 * 10**9, now_ns + 3600 * 10**9, now_ns]
    assert _through_the_door(EventClock(), origins, 60 * 10**9) == (4, [])
    produced, (dead,) = _through_the_door(WallClock(), origins, 60 * 10**9)
    assert produced == 3
    assert dead.header("dlq.error.code") == b"FUTURE_TIMESTAMP"
    assert b"beyond the clock plus the allowed skew" in (dead.header("dlq.error.message") or b"")


def test_live_a_record_from_far_behind_its_partitions_newest_is_dead_lettered_at_the_door() -> None:
    """Backwards: once a partition gave a record of now, one a year older goes to the DLQ as
    PAST_TIMESTAMP without reaching `handle`; one a few hours older (a redelivery after a
    rebalance, a catch-up) is handled. The first record a process sees is taken however old it
    is (nothing to jump back from: a service catching up after a long outage), and in replays
    (event clock) nothing is refused."""
    now_ns = time.time_ns()
    year, hours = 365 * 86_400 * 10**9, 5 * 3600 * 10**9
    origins = [now_ns - 2 * year, now_ns, now_ns - hours, now_ns - year, now_ns]
    assert _through_the_door(EventClock(), origins) == (5, [])
    produced, (dead,) = _through_the_door(WallClock(), origins)
    assert produced == 4
    assert dead.header("dlq.error.code") == b"PAST_TIMESTAMP" and dead.header("dlq.source.offset") == b"3"
    assert b"days behind this partition's newest" in (dead.header("dlq.error.message") or b"")


def test_services_take_the_skew_from_the_bus_settings() -> None:
    from kstrade.config import load
    from kstrade.metrics.collector import MetricsCollector
    from kstrade.services import build

    stage = build("features", load(bus={"max_future_skew_s": 5, "max_past_jump_s": 60}), Bus.memory())
    assert stage.max_future_skew_ns == 5 * 10**9 and stage.max_past_jump_ns == 60 * 10**9
    # The metrics collector observes and never dead-letters (it has no ACL to): no door check.
    bus = Bus.memory()
    assert _runner(bus, MetricsCollector(), poll_timeout=0.0).future_limit is None
    assert _runner(bus, stage, poll_timeout=0.0).future_limit is not None
