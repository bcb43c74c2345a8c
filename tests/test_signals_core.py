"""The signals stage's native core (`kstrade._native.SignalCore`) against its Python path.

- A batch handed to the core gives exactly what the Python path gives record by record (every
  record read in Python, every candle decided in Python): the same outputs in the same order,
  the same dead letters, the same `retained()` after every batch, the same counters; over
  seeded sequences with records out of order, redelivered, malformed, on the wrong topic, of an
  unknown topic, with predictions missing (decided at their deadline by `on_time`), with fills
  and P&L, under settings the native planner takes and ones it declines.
- The join under any arrival order, the market book's backlog and `retained()` keep the rules
  the Python join and book had.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import kstrade._native as _native
from kstrade.bus import Batch, Output, Record
from kstrade.bus.topics import (
    EXECUTIONS,
    PNL,
    PREDICTIONS_TRANSFORMER,
    candles,
    predictions_lstm,
    signals,
)
from kstrade.clock import EventClock
from kstrade.config import OutcomeReweighting, SignalSettings, TierBands
from kstrade.schemas import Candle
from kstrade.schemas.models import PredictedDirection
from kstrade.signals import SignalAggregator, signal_id
from kstrade.signals.join import MARKET_BACKLOG

from .helpers import consumed
from .test_signals_stage import VERSIONS, Feed, minute, ns

SYMBOLS = ["BTC-USD", "ETH-USD"]
DIRECTIONS = list(PredictedDirection)


class _DeadLetters:
    """Where `Batch.reject` sends: kept to compare."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int, str, str]] = []

    def send(self, record: Record, code: str, message: str) -> None:
        self.sent.append((record.topic, record.partition, record.offset, code, message))


class _Counting(SignalAggregator):
    """The stage, counting the records its Python path reads."""

    python_reads = 0

    def _read(self, record: Record, now_ns: int) -> None:
        self.python_reads += 1
        super()._read(record, now_ns)


def _bad(feed: Feed, rng: random.Random) -> list[Output]:
    """One of each kind of record the core must hand to the Python path."""
    t = minute(rng.randint(0, 3))
    good = feed.prediction("lstm", "BTC-USD", t, PredictedDirection.UP, 0.8)
    headers = list(good.headers)
    five = Candle(timestamp=t, symbol="BTC-USD", interval="5m", open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0,
                  source="test")  # fmt: skip
    eth = feed.market("ETH-USD", t, 50.0, 0.1)
    spaced = [(n, b" 77 " if n == "origin_ns" else v) for n, v in headers]  # int() reads it; the core does not
    return [
        Output(PREDICTIONS_TRANSFORMER, b"\x07junk", key=b"BTC-USD", headers=headers),
        feed.prediction("transformer", "BTC-USD", t, PredictedDirection.UP, 0.7, topic=predictions_lstm("BTC-USD")),
        feed.prediction("transformer", "XRP-USD", t, PredictedDirection.UP, 0.7),
        Output(candles("BTC-USD", "1m"), eth[0].value, key=b"BTC-USD", headers=eth[0].headers),
        feed.source.emit(candles("BTC-USD", "1m"), five, key=b"BTC-USD", origin_ns=1),
        Output(eth[1].topic, b"", key=b"ETH-USD", headers=eth[1].headers),
        Output(signals("raw"), good.value, key=b"BTC-USD", headers=headers),
        Output(good.topic, good.value, key=b"BTC-USD", headers=spaced),
    ]


def _scenario(rng: random.Random) -> list[Output]:
    """Minutes of both symbols' candles, vectors and predictions (some missing), fills and P&L
    of earlier signals, and bad records, in time order."""
    feed = Feed()
    outs: list[Output] = []
    for m in range(rng.randint(3, 12)):
        t = minute(m)
        for symbol in SYMBOLS:
            outs += feed.market(symbol, t, 100.0 + rng.uniform(-3, 3), rng.uniform(-1, 1))
            for model in ("lstm", "transformer"):
                if rng.random() < 0.85:
                    direction, p = rng.choice(DIRECTIONS), rng.uniform(0.3, 1.0)
                    outs.append(feed.prediction(model, symbol, t, direction, p))
        if m and rng.random() < 0.3:
            symbol = rng.choice(SYMBOLS)
            sid = str(signal_id(symbol, minute(m - 1), VERSIONS))
            outs.append(feed.fill(symbol, t, sid) if rng.random() < 0.6 else feed.closed(symbol, t, sid))
    for bad in _bad(feed, rng):  # marked (a header no stage reads) to count what the core declines
        marked = Output(bad.topic, bad.value, key=bad.key, headers=[*bad.headers, ("bad", b"")])
        outs.insert(rng.randint(0, len(outs)), marked)
    return outs


def _records(outs: list[Output], rng: random.Random) -> list[Record]:
    """The outputs as consumed records, in their order, then shuffled a little and with some
    redelivered (the same record again, later)."""
    records = consumed(outs, SYMBOLS)
    for i in range(len(records) - 1):
        if rng.random() < 0.1:  # out of order
            records[i], records[i + 1] = records[i + 1], records[i]
    for i in range(len(records)):
        if rng.random() < 0.05:  # redelivered
            records.insert(rng.randint(i, len(records)), records[i])
    return records


Step = tuple[list[Record], int]
Seen = list[tuple[list[Output], list[tuple[str, int, int, str, str]], dict[tuple[str, int], int]]]


def _steps(records: list[Record], rng: random.Random) -> list[Step]:
    """Batches of any size, each at a time a little later (deadlines pass between some)."""
    steps: list[Step] = []
    now, i = ns(minute(1)), 0
    while i < len(records):
        n = rng.choice([1, 1, 2, 3, 5, 8, 13, 40])
        steps.append((records[i : i + n], now))
        i += n
        now += rng.choice([0, 0, 0, 500_000_000, 1_500_000_000, 60_000_000_000])
    steps.append(([], now + 3_600_000_000_000))  # every deadline passed
    return steps


def _run(stage: SignalAggregator, steps: list[Step], *, batched: bool) -> Seen:
    stage.clock = clock = EventClock(steps[0][1])
    seen: Seen = []
    for records, now in steps:
        clock.advance_to(now)
        dead = _DeadLetters()
        batch = Batch(records, dead)  # type: ignore[arg-type]
        outs = list(stage.handle_batch(batch) if batched else batch.each(stage.handle))
        outs += stage.on_time(now)
        seen.append((outs, dead.sent, dict(stage.retained())))
    return seen


def _user_calibrator(p: float) -> float:
    return 0.9 * p


def _stage(calibrators: dict[str, Callable[[float], float]] | None = None, **settings: Any) -> SignalAggregator:
    return _Counting(SYMBOLS, SignalSettings(join_deadline_ms=1000, **settings), calibrators)


SETTINGS: list[tuple[str, Callable[[], SignalAggregator]]] = [
    ("default", lambda: _stage()),
    ("low tiers", lambda: _stage(tiers=TierBands(a=0.5, b=0.45, c=0.34))),
    ("user calibrator", lambda: _stage({"lstm-a1": _user_calibrator})),  # the native planner declines it
    ("re-weighting", lambda: _stage(reweighting=OutcomeReweighting(enabled=True, horizon_minutes=1, min_outcomes=2))),
]


@pytest.mark.parametrize("name,make", SETTINGS, ids=[n for n, _ in SETTINGS])
def test_a_batch_through_the_core_gives_what_the_python_path_gives_record_by_record(
    name: str, make: Callable[[], SignalAggregator]
) -> None:
    rng = random.Random(name)
    for _ in range(25):
        records = _records(_scenario(rng), rng)
        steps = _steps(records, rng)
        batched, record_by_record, python = make(), make(), make()
        python.core = python._core(native=False)
        seen = _run(batched, steps, batched=True)
        assert _run(record_by_record, steps, batched=False) == seen
        assert _run(python, steps, batched=False) == seen
        for stage in (record_by_record, python):
            assert stage.stats == batched.stats and stage.join_stats() == batched.join_stats()
        assert isinstance(python, _Counting) and isinstance(batched, _Counting)
        assert python.python_reads == len(records)
        # The core declines only the bad records, fills and P&L (and candles, with re-weighting:
        # their closes score the models in Python).
        declined = {EXECUTIONS, PNL, *(candles(s, "1m") for s in SYMBOLS if name == "re-weighting")}
        assert batched.python_reads == sum(1 for r in records if r.header("bad") is not None or r.topic in declined)
    assert batched.stats.decided and sum(len(outs) for outs, _, _ in seen)


# -- the core's rules, driven directly ---------------------------------------------------------
US = 60_000_000  # a minute


def _core(memory: int = 64, backlog: int = MARKET_BACKLOG) -> _native.SignalCore:
    """A core without readers or planner: every candle comes back to be decided (`feed`)."""
    return _native.SignalCore(
        symbols=SYMBOLS, required=["lstm", "transformer"], deadline_ns=2_000_000_000, memory=memory,
        backlog=backlog, planner=None, candle_topics=[], feature_topics=[], lstm_topics=[], transformer_topic="",
        candles=None, features=None, predictions=None,
    )  # fmt: skip


def _decided(core: _native.SignalCore, now: int) -> list[tuple[int, int, list[tuple[str, str, int, float, float]]]]:
    out = []
    while (context := core.feed([], 0, now)[2]) is not None:
        out.append((context[0], context[1], context[2]))
    return out


arrival = st.one_of(
    st.tuples(st.just("prediction"), st.sampled_from(("lstm", "transformer", "ensemble")), st.sampled_from((0, 1)),
              st.integers(0, 5)),
    st.tuples(st.just("close"), st.just(""), st.sampled_from((0, 1)), st.integers(0, 5)),
    st.tuples(st.just("features"), st.just(""), st.sampled_from((0, 1)), st.integers(0, 5)),
    st.tuples(st.just("tick"), st.just(""), st.just(0), st.integers(0, 3)),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(arrival, max_size=60))
# An older candle that starts waiting after a newer one must still be decided first.
@example([("prediction", "lstm", 0, 2), ("tick", "", 0, 1), ("prediction", "lstm", 0, 1), ("tick", "", 0, 1)])
def test_any_arrival_order_decides_each_candle_once_in_time_order(events: list[tuple[str, str, int, int]]) -> None:
    """Each candle decided at most once, a symbol's candles in time order, predictions never
    mixed across candle times ("ensemble" has no weight: ignored), nothing left behind."""
    core = _core()
    now = 0
    decided: list[tuple[int, int]] = []
    used = 0

    def take() -> None:
        nonlocal used
        for symbol, ts, votes in _decided(core, now):
            assert votes and all(version == f"{model}@{ts}" for model, version, *_ in votes)
            assert {model for model, *_ in votes} <= {"lstm", "transformer"}
            decided.append((symbol, ts))
            used += len(votes)

    for offset, (kind, model, symbol, n) in enumerate(events):
        ts = n * US
        if kind == "tick":
            now += n * 1_000_000_000
            if core.has_due(now):
                core.queue_due(now)
        elif kind == "prediction":
            core.add_prediction(symbol, ts, (model, f"{model}@{ts}", 2, 0.6, 0.6), now, 1, "p", 0, offset)
        elif kind == "close":
            core.add_close(symbol, ts, 100.0, "c", 0, offset)
        else:
            core.add_features(symbol, ts, [1.0], "f", 0, offset)
        take()
    now += 2_000_000_000
    core.queue_due(now)
    take()

    assert len(decided) == len(set(decided))
    assert not core.has_due(now + 10**12)  # nothing waits forever
    for symbol in (0, 1):
        times = [t for s, t in decided if s == symbol]
        assert times == sorted(times)
    late, repeated, ignored, _ = core.stats()
    assert used + late + repeated + ignored == sum(1 for e in events if e[0] == "prediction")


def test_the_market_book_keeps_every_undecided_candle_up_to_its_backlog() -> None:
    core = _core(memory=4, backlog=10)

    def closes(upto: int) -> list[int]:
        return [m for m in range(upto) if core.close(0, m * US) is not None]

    for m in range(12):  # nothing decided yet: kept up to the backlog, the oldest then forgotten
        core.add_close(0, m * US, float(m), "c", 0, m)
    assert closes(12) == list(range(2, 12))
    assert core.stats()[3] == 2 and core.take_warnings() == []  # warming up: let go quietly
    for m in range(10):  # decide through 9 (0 and 1 without a price): those go while the book holds more than `memory`
        core.add_features(0, m * US, [1.0], "f", 0, m)
        core.add_prediction(0, m * US, ("lstm", "a", 2, 0.6, 0.6), 0, 1, "p", 0, m)
        core.add_prediction(0, m * US, ("transformer", "b", 2, 0.6, 0.6), 0, 1, "t", 0, m)
    assert [ts // US for _, ts, _ in _decided(core, 0)] == list(range(10))
    core.add_close(0, 12 * US, 12.0, "c", 0, 12)
    assert closes(13) == [9, 10, 11, 12] and core.stats()[3] == 2
    for m in range(40, 60):  # the models stop: undecided candles pile up past the backlog
        core.add_close(0, m * US, float(m), "c", 0, m)
    assert closes(60) == list(range(50, 60))  # the newest `backlog` undecided: 10..12, 40..49 forgotten
    assert core.stats()[3] == 2 + 13
    warnings = core.take_warnings()
    assert [(kind, ts // US, n) for kind, _, _, ts, _, n in warnings] == [("forgotten", 10, 1)]


@pytest.mark.parametrize("seed", range(3))
def test_retained_is_the_lowest_offset_held_per_partition(seed: int) -> None:
    """Against a model of the rule: a candle's inputs are held from when they are read until it
    or a newer candle of the symbol is decided (one already decided holds nothing), at most
    `MARKET_BACKLOG` candle times per symbol; offsets come in order per partition, but for a
    redelivery from earlier."""
    rng = random.Random(seed)
    core = _core()
    held: dict[int, dict[int, list[tuple[str, int, int]]]] = {0: {}, 1: {}}
    through: dict[int, int] = {}
    next_offset: dict[tuple[str, int], int] = {}
    for step in range(4000):
        symbol = rng.randint(0, 1)
        ts = (step // 4 + rng.choice([0, 0, 0, -1, -5, -80])) * US
        tp = (rng.choice(["a", "b"]), rng.randint(0, 1))
        offset = next_offset.get(tp, 0)
        if step == 2500 and offset > 50:
            offset -= 50
        next_offset[tp] = offset + 1
        core.add_close(symbol, ts, 1.0, tp[0], tp[1], offset)
        if ts > through.get(symbol, ts - 1):
            held[symbol].setdefault(ts, []).append((*tp, offset))
            while len(held[symbol]) > MARKET_BACKLOG:
                del held[symbol][min(held[symbol])]
        if rng.random() < 0.05 and ts > through.get(symbol, ts - 1):  # decide this candle
            core.add_features(symbol, ts, [1.0], "z", 0, step)
            for model in ("lstm", "transformer"):
                core.add_prediction(symbol, ts, (model, "v", 2, 0.6, 0.6), 0, 1, "z", 0, step)
            assert [t for _, t, _ in _decided(core, 0)][-1:] == [ts]
            through[symbol] = ts
            held[symbol] = {t: p for t, p in held[symbol].items() if t > ts}
        low: dict[tuple[str, int], int] = {}
        for positions in (p for h in held.values() for p in h.values()):
            for topic, partition, o in positions:
                low[(topic, partition)] = min(o, low.get((topic, partition), o))
        assert core.retained() == low, step
