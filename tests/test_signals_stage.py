"""The signals stage end to end: a replay on the memory bus with the event clock (join,
deadline, one position per symbol, late and bad predictions, determinism), and the same stage
over the real broker: at most one final signal per candle, every other one with a reason."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from kstrade.bus import Bus, Output, Record
from kstrade.bus.topics import (
    EXECUTIONS,
    PNL,
    PREDICTIONS_TRANSFORMER,
    candles,
    catalogue,
    create_all,
    dlq_topic,
    features_aggregated,
    predictions_lstm,
    signals,
)
from kstrade.clock import EventClock
from kstrade.config import SignalSettings
from kstrade.schemas import Candle, Codec, Execution, FeatureVector, PnlEvent, Prediction, Signal
from kstrade.schemas.models import (
    ModelType,
    OrderStatus,
    OrderType,
    PredictedDirection,
    PredictionOutput,
    Side,
    SignalDirection,
    SignalStage,
    Tier,
)
from kstrade.signals import REJECT_REASON, REJECT_REASONS, FilterReason, SignalAggregator, signal_id
from kstrade.stage import Pipeline, Source, _runner

from .conftest import quiet

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
VERSIONS = {"lstm": "lstm-a1", "transformer": "trf-b2"}
SIGNAL_TOPICS = [signals(s) for s in ("raw", "calibrated", "filtered", "final")]
SIGNAL_CODEC = Codec(Signal)


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 10**9


class Replay(Source):
    """Batches of market and model messages, each at its instant on the event clock."""

    name = "replay"

    def __init__(self, batches: list[tuple[datetime, list[Output]]]) -> None:
        super().__init__()
        self.batches = batches
        self.i = 0

    def next_batch(self) -> list[Output] | None:
        if self.i >= len(self.batches):
            return None
        at, outs = self.batches[self.i]
        assert isinstance(self.clock, EventClock)
        self.clock.advance_to(ns(at))
        self.i += 1
        return outs


class Feed:
    """Encodes the inputs of the signals stage, as the upstream stages would write them."""

    def __init__(self) -> None:
        self.source = Replay([])

    def market(self, symbol: str, t: datetime, close: float, alignment: float) -> list[Output]:
        origin = ns(t + timedelta(minutes=1))
        candle = Candle(timestamp=t, symbol=symbol, interval="1m", open=close, high=close, low=close, close=close,
                        volume=1.0, source="test")  # fmt: skip
        names = ["5m_atr14", "mtf_alignment", "vol_regime_low", "vol_regime_medium", "vol_regime_high"]
        vector = FeatureVector(timestamp=t, symbol=symbol, version="test", names=names,
                               values=[0.01, alignment, 0.0, 1.0, 0.0])  # fmt: skip
        key = symbol.encode()
        return [
            self.source.emit(candles(symbol, "1m"), candle, key=key, origin_ns=origin),
            self.source.emit(features_aggregated(symbol), vector, key=key, origin_ns=origin),
        ]

    def prediction(
        self,
        model: str,
        symbol: str,
        t: datetime,
        direction: PredictedDirection,
        p: float,
        *,
        topic: str | None = None,
        version: str | None = None,
    ) -> Output:
        message = Prediction(
            timestamp=t, symbol=symbol, model_type=ModelType(model), model_version=version or VERSIONS[model],
            prediction=PredictionOutput(direction=direction, probability=p, confidence=p), inference_time_ms=0.3,
        )  # fmt: skip
        if topic is None:
            topic = predictions_lstm(symbol) if model == "lstm" else PREDICTIONS_TRANSFORMER
        return self.source.emit(topic, message, key=symbol.encode(), origin_ns=ns(t + timedelta(minutes=1)))

    def fill(self, symbol: str, t: datetime, sid: str) -> Output:
        message = Execution(
            timestamp=t, signal_id=sid, order_id="o-1", execution_id="x-1", symbol=symbol, side=Side.BUY,
            order_type=OrderType.MARKET, quantity=1.0, status=OrderStatus.FILLED, fill_price=100.0, slippage_bps=0.0,
            latency_ms=1.0, session="ny",
        )  # fmt: skip
        return self.source.emit(EXECUTIONS, message, key=symbol.encode(), origin_ns=ns(t))

    def closed(self, symbol: str, t: datetime, sid: str) -> Output:
        message = PnlEvent(
            timestamp=t, signal_id=sid, order_id="o-1", symbol=symbol, side=Side.BUY, quantity=1.0, entry_price=100.0,
            exit_price=101.0, realized_pnl=1.0, commission=0.0, currency="USD", balance=100_001.0,
        )  # fmt: skip
        return self.source.emit(PNL, message, key=symbol.encode(), origin_ns=ns(t))


def minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def scenario(feed: Feed) -> list[tuple[datetime, list[Output]]]:
    """Twelve minutes of BTC (both models bullish) and ETH (bearish; the transformer misses
    minutes 0 and 11), a position on BTC filled at 2 and closed at 6:30, a late and two bad
    predictions."""
    up, down = PredictedDirection.UP, PredictedDirection.DOWN
    btc0 = str(signal_id("BTC-USD", minute(0), VERSIONS))
    batches: list[tuple[datetime, list[Output]]] = []
    for m in range(12):
        t = minute(m)
        outs = feed.market("BTC-USD", t, 100.0 + m, 0.5) + feed.market("ETH-USD", t, 50.0 - m, -0.5)
        outs += [feed.prediction("lstm", "BTC-USD", t, up, 0.8), feed.prediction("transformer", "BTC-USD", t, up, 0.7)]
        outs.append(feed.prediction("lstm", "ETH-USD", t, down, 0.8))
        if m not in (0, 11):
            outs.append(feed.prediction("transformer", "ETH-USD", t, down, 0.7))
        if m == 2:
            outs.append(feed.fill("BTC-USD", t, btc0))
        if m == 3:
            outs.append(feed.prediction("transformer", "BTC-USD", minute(0), down, 0.99))  # late: BTC 0 is decided
            outs.append(feed.prediction("transformer", "BTC-USD", t, up, 0.7, topic=predictions_lstm("BTC-USD")))
            outs.append(Output(PREDICTIONS_TRANSFORMER, b"\x07junk", key=b"BTC-USD", headers=outs[-1].headers))
        batches.append((t + timedelta(minutes=1), outs))
        if m == 6:
            batches.append((t + timedelta(minutes=1, seconds=30), [feed.closed("BTC-USD", t, btc0)]))
    return batches


def replay() -> tuple[list[Record], SignalAggregator, Pipeline]:
    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD", "ETH-USD"]))
    stage = SignalAggregator(["BTC-USD", "ETH-USD"], SignalSettings())
    pipeline = Pipeline(bus, [stage])
    feed = Feed()
    feed.source = Replay(scenario(feed))
    pipeline.run(feed.source)
    assert isinstance(pipeline.clock, EventClock)
    pipeline.clock.sleep(5)  # past the join deadline of the last minute
    pipeline.drain()
    check = bus.consumer("check")
    check.subscribe([*SIGNAL_TOPICS, dlq_topic(predictions_lstm("BTC-USD")), dlq_topic(PREDICTIONS_TRANSFORMER)])
    return check.poll(max_records=10_000, timeout=0.0), stage, pipeline


def decode(records: list[Record], topic: str) -> list[tuple[Signal, Record]]:
    out = []
    for r in records:
        if r.topic == topic:
            s = SIGNAL_CODEC.decode_record(r)
            assert isinstance(s, Signal)
            out.append((s, r))
    return out


def test_replay_joins_every_candle_once_and_accounts_for_every_rejection() -> None:
    records, stage, _ = replay()
    raw, cal = decode(records, signals("raw")), decode(records, signals("calibrated"))
    final, filtered = decode(records, signals("final")), decode(records, signals("filtered"))
    keys = {(s.symbol, s.timestamp) for s, _ in raw}
    assert len(keys) == len(raw) == len(cal) == 24  # 12 minutes x 2 symbols, each decided once
    decided = [(s.symbol, s.timestamp) for s, _ in final + filtered]
    assert sorted(decided) == sorted(keys)  # every candle ends final or filtered, never both
    for s, r in filtered:
        assert s.stage is SignalStage.FILTERED
        assert FilterReason(r.header(REJECT_REASON).decode())  # type: ignore[union-attr]
        assert r.header(REJECT_REASONS) is not None
    by_key = {(s.symbol, s.timestamp): (s, r) for s, r in final + filtered}

    btc0, _ = by_key[("BTC-USD", minute(0))]
    assert btc0.stage is SignalStage.FINAL and btc0.direction is SignalDirection.LONG and btc0.tier is Tier.A
    assert btc0.signal_id == signal_id("BTC-USD", minute(0), VERSIONS)
    assert (btc0.entry_price, btc0.stop_loss, btc0.take_profit) == pytest.approx((100.0, 98.5, 102.5))
    # Filled at 2, closed at 6:30: busy through minute 6, free again at 7.
    for m in range(1, 7):
        s, r = by_key[("BTC-USD", minute(m))]
        assert s.stage is SignalStage.FILTERED and r.header(REJECT_REASON) == b"POSITION_OPEN", m
    assert by_key[("BTC-USD", minute(7))][0].stage is SignalStage.FINAL
    # ETH minute 0: the transformer never came; decided at the deadline without it.
    eth0, _ = by_key[("ETH-USD", minute(0))]
    assert eth0.stage is SignalStage.FINAL and eth0.direction is SignalDirection.SHORT
    assert eth0.ensemble_weights == {"lstm": 1.0, "transformer": 0.0}
    eth11, _ = by_key[("ETH-USD", minute(11))]
    assert eth11.ensemble_weights == {"lstm": 1.0, "transformer": 0.0}
    # An unfilled ETH signal holds the symbol for its TTL (5 minutes) only.
    assert [by_key[("ETH-USD", minute(m))][0].stage for m in (1, 4, 5)] == [
        SignalStage.FILTERED, SignalStage.FINAL, SignalStage.FILTERED,
    ]  # fmt: skip

    assert stage.join_stats().late == 1
    assert stage.stats.decided == 24 and stage.stats.final == len(final)
    assert sum(stage.stats.rejected.values()) == len(filtered)
    dead = [r for r in records if r.topic.startswith("dlq.")]
    assert sorted(r.header("dlq.error.code") for r in dead) == [b"MODEL_TOPIC_MISMATCH", b"TRUNCATED"]
    # Origin time travels from the candle to the signal.
    assert all(r.header("origin_ns") == str(ns(minute(0) + timedelta(minutes=1))).encode()
               for s, r in raw if s.symbol == "BTC-USD" and s.timestamp == minute(0))  # fmt: skip


def test_a_replay_gives_the_same_signals_byte_for_byte() -> None:
    a, _, _ = replay()
    b, _, _ = replay()
    # Dead letters carry the wall time they were written (dlq.time_ns): compare the signals.
    a, b = [r for r in a if r.topic in SIGNAL_TOPICS], [r for r in b if r.topic in SIGNAL_TOPICS]
    assert len(a) == 24 * 3
    assert [(r.topic, r.key, r.value, r.headers) for r in a] == [(r.topic, r.key, r.value, r.headers) for r in b]


@pytest.mark.kafka
def test_over_the_real_broker_at_most_one_final_per_candle(kafka_bootstrap: str, unique: str) -> None:
    bus = Bus.kafka(kafka_bootstrap)
    symbols = [f"S{unique}A", f"S{unique}B"]
    create_all(bus.admin(), catalogue(symbols))
    cfg = SignalSettings(join_deadline_ms=300, ttl_seconds=3600, one_position_per_symbol=False)
    stage = SignalAggregator(symbols, cfg)
    pipeline = Pipeline(bus, [stage])
    check = bus.consumer(f"check-{unique}")
    check.subscribe(SIGNAL_TOPICS)

    feed = Feed()
    producer = bus.producer()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    expected = 0
    for m in range(5):
        t = start + timedelta(minutes=m)
        for i, symbol in enumerate(symbols):
            outs = feed.market(symbol, t, 100.0 + m, 0.5)
            direction = PredictedDirection.FLAT if m == 2 else PredictedDirection.UP
            outs.append(feed.prediction("lstm", symbol, t, direction, 0.8))
            if not (i == 1 and m == 4):  # the last candle misses the transformer: decided at the deadline
                outs.append(feed.prediction("transformer", symbol, t, PredictedDirection.UP, 0.7))
            if m == 4:
                outs.append(feed.prediction("lstm", symbol, t, direction, 0.8))  # a redelivered prediction
            for o in outs:
                producer.send(o.topic, o.value, key=o.key, headers=o.headers)
            expected += 1
    producer.flush()

    got: list[Record] = []
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline and len(decode(got, signals("final")) + decode(got, signals("filtered"))) < expected
    ):
        pipeline.step()
        got += [r for r in check.poll(max_records=1000, timeout=0.05) if r.key and r.key.decode() in symbols]
    got += [r for r in quiet(check, 1.0) if r.key and r.key.decode() in symbols]

    final, filtered = decode(got, signals("final")), decode(got, signals("filtered"))
    finals = Counter((s.symbol, s.timestamp) for s, _ in final)
    assert finals and max(finals.values()) == 1
    rejected = {(s.symbol, s.timestamp): r.header(REJECT_REASON) for s, r in filtered}
    assert set(finals).isdisjoint(rejected)
    assert len(finals) + len(rejected) == expected  # every candle accounted for
    assert set(rejected.values()) == {b"FLAT"}  # minute 2 of each symbol
    assert len(decode(got, signals("raw"))) == len(decode(got, signals("calibrated"))) == expected
    missing = [s for s, _ in final if s.ensemble_weights.get("transformer") == 0.0]
    assert [(s.symbol, s.timestamp) for s in missing] == [(symbols[1], start + timedelta(minutes=4))]
    # The repeats are counted, never used: as repeated if their candle still waited, else late.
    assert stage.join_stats().repeated + stage.join_stats().late == 2


def test_over_the_real_broker_a_deadline_waits_until_every_input_on_the_bus_is_read(
    kafka_bootstrap: str, unique: str
) -> None:
    """Issue 18: a deadline that passes while a candle's missing prediction is still on the bus
    (the cluster was away, the service catches up) decides nothing; once all is read it does."""
    bus = Bus.kafka(kafka_bootstrap)
    symbol = f"S{unique}W"
    create_all(bus.admin(), catalogue([symbol]))
    stage = SignalAggregator([symbol], SignalSettings(join_deadline_ms=300, one_position_per_symbol=False))
    runner = _runner(bus, stage, poll_timeout=0.2)
    stage.caught_up = runner.caught_up  # as run_service binds it
    check = bus.consumer(f"check-{unique}")
    check.subscribe(SIGNAL_TOPICS)
    feed, producer = Feed(), bus.producer()
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)

    def send(outs: list[Output]) -> None:
        for o in outs:
            producer.send(o.topic, o.value, key=o.key, headers=o.headers)
        producer.flush()

    def read_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            runner.run_once()
        assert done()

    try:
        send([*feed.market(symbol, t0, 100.0, 0.5), feed.prediction("lstm", symbol, t0, PredictedDirection.UP, 0.8)])
        read_until(lambda: stage.is_pending(symbol, t0) and stage.market_close(symbol, t0) is not None)
        send([feed.prediction("transformer", symbol, t0, PredictedDirection.UP, 0.7)])  # on the bus, not read
        time.sleep(0.5)  # past the deadline
        assert list(stage.on_time(stage.clock.now_ns())) == []  # the transformer is the next record
        read_until(lambda: not stage.is_pending(symbol, t0))
        # Then a candle whose transformer never comes: decided at its deadline, all being read.
        t1 = t0 + timedelta(minutes=1)
        send([*feed.market(symbol, t1, 101.0, 0.5), feed.prediction("lstm", symbol, t1, PredictedDirection.UP, 0.8)])
        read_until(lambda: stage.is_pending(symbol, t1) and stage.market_features(symbol, t1) is not None
                   and stage.market_close(symbol, t1) is not None)  # fmt: skip
        time.sleep(1.2)  # past the deadline, and past the runner's pause after its last "no"
        # As the service loop does: on_time every round until the lag probe says all is read
        # (a probe that times out on a loaded machine is a "no", asked again a second later).
        decided: list[Output] = []
        deadline = time.monotonic() + 15
        while not decided and time.monotonic() < deadline:
            decided = list(stage.on_time(stage.clock.now_ns()))
            if not decided:
                runner.run_once()
        runner.send(decided)
        runner.commit_progress()
        got = [r for r in quiet(check, 3.0) if r.key == symbol.encode()]
    finally:
        runner.consumer.close()
    raw = {s.timestamp: s for s, _ in decode(got, signals("raw"))}
    assert set(raw) == {t0, t1}
    assert raw[t0].ensemble_weights["transformer"] > 0  # joined with both models, as an uninterrupted run
    assert raw[t1].ensemble_weights["transformer"] == 0.0


def test_a_decision_that_fails_is_counted_and_the_next_candle_is_still_decided() -> None:
    def broken(probability: float) -> float:
        raise RuntimeError("a calibrator bug")

    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD"]))
    stage = SignalAggregator(["BTC-USD"], SignalSettings(one_position_per_symbol=False), {"lstm-bad": broken})
    feed = Feed()
    bad = feed.prediction("lstm", "BTC-USD", minute(0), PredictedDirection.UP, 0.8, version="lstm-bad")
    batches = [(minute(1), [*feed.market("BTC-USD", minute(0), 100.0, 0.5), bad])]
    t = minute(1)
    good = [feed.prediction(m, "BTC-USD", t, PredictedDirection.UP, 0.8) for m in ("lstm", "transformer")]
    batches.append((minute(2), [*feed.market("BTC-USD", t, 101.0, 0.5), *good]))
    feed.source = Replay(batches)
    Pipeline(bus, [stage]).run(feed.source)
    assert stage.stats.errors == 1  # candle 0, decided when candle 1 completed, failed
    assert stage.stats.decided == 2
    check = bus.consumer("check")
    check.subscribe([signals("final")])
    finals = decode(check.poll(max_records=10, timeout=0.0), signals("final"))
    assert [s.timestamp for s, _ in finals] == [minute(1)]


def test_each_kind_of_bad_input_is_dead_lettered_with_its_code() -> None:
    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD", "ETH-USD"]))
    stage = SignalAggregator(["BTC-USD"])  # ETH-USD has topics but is not traded here
    feed = Feed()
    t = minute(0)
    wrong_symbol = feed.market("ETH-USD", t, 50.0, 0.0)[0]
    five_minute = Candle(timestamp=t, symbol="BTC-USD", interval="5m", open=1.0, high=1.0, low=1.0, close=1.0,
                         volume=1.0, source="test")  # fmt: skip
    bad = [
        Output(candles("BTC-USD", "1m"), wrong_symbol.value, key=b"x", headers=wrong_symbol.headers),
        feed.source.emit(candles("BTC-USD", "1m"), five_minute, key=b"BTC-USD", origin_ns=1),
        feed.prediction("transformer", "ETH-USD", t, PredictedDirection.UP, 0.7),
        Output(features_aggregated("BTC-USD"), b"", key=b"BTC-USD", headers=wrong_symbol.headers),
    ]
    # A prediction whose origin does not fit the 64 bits the join keeps times in.
    fine = feed.prediction("lstm", "BTC-USD", t, PredictedDirection.UP, 0.7)
    huge = [(n, str(2**64).encode() if n == "origin_ns" else v) for n, v in fine.headers]
    bad.append(Output(fine.topic, fine.value, key=fine.key, headers=huge))
    feed.source = Replay([(minute(1), bad)])
    pipeline = Pipeline(bus, [stage])
    pipeline.run(feed.source)
    check = bus.consumer("check")
    check.subscribe_pattern(r"^dlq\.")
    codes = sorted(r.header("dlq.error.code") or b"" for r in check.poll(max_records=100, timeout=0.0))
    assert codes == [b"BAD_HEADER", b"SCHEMA_MISMATCH", b"SYMBOL_TOPIC_MISMATCH", b"UNKNOWN_SYMBOL", b"WRONG_INTERVAL"]
    assert stage.stats.decided == 0


def test_a_crash_before_the_decision_redelivers_the_candle_with_its_price() -> None:
    """Candle, features and one of two predictions are in when the stage dies: nothing of that
    candle was committed, so a restarted stage still decides it with its price."""
    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD"]))
    feed = Feed()
    t = minute(0)
    producer = bus.producer()
    first = [*feed.market("BTC-USD", t, 100.0, 0.5), feed.prediction("lstm", "BTC-USD", t, PredictedDirection.UP, 0.8)]
    for out in first:
        producer.send(out.topic, out.value, key=out.key, headers=out.headers)
    stage = SignalAggregator(["BTC-USD"], SignalSettings())
    crashed = Pipeline(bus, [stage])
    crashed.drain()
    assert stage.retained()[(candles("BTC-USD", "1m"), 0)] == 0  # held, not committed
    consumer = crashed.runners[0].consumer
    tps = [(candles("BTC-USD", "1m"), p) for p in range(3)]
    assert all((c or 0) == 0 for _, _, c in consumer.committed(tps))  # nothing past the candle
    consumer.close()  # the crash: gone without deciding

    late = feed.prediction("transformer", "BTC-USD", t, PredictedDirection.UP, 0.7)
    producer.send(late.topic, late.value, key=late.key, headers=late.headers)
    restarted = SignalAggregator(["BTC-USD"], SignalSettings())
    Pipeline(bus, [restarted]).drain()
    check = bus.consumer("check")
    check.subscribe(SIGNAL_TOPICS)
    decided = decode(check.poll(max_records=100, timeout=0.0), signals("raw"))
    assert len(decided) == 1 and decided[0][0].entry_price == 100.0  # priced, not NO_PRICE
    assert restarted.retained() == {}


def test_an_execution_or_pnl_of_a_symbol_not_traded_here_is_dead_lettered() -> None:
    """Issue 19 (was a KNOWN_GAP of the poison test): ignored before, so a mis-keyed upstream went unnoticed."""
    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD", "ETH-USD"]))
    pipeline = Pipeline(bus, [SignalAggregator(["BTC-USD", "ETH-USD"], SignalSettings())])
    feed = Feed()
    sid = str(signal_id("BTC-USD", minute(0), VERSIONS))
    outs = [feed.fill("ZZZ-USD", minute(0), sid), feed.closed("ZZZ-USD", minute(1), sid), feed.fill("BTC-USD", T0, sid)]
    feed.source = Replay([(minute(2), outs)])
    pipeline.run(feed.source)
    pipeline.drain()
    check = bus.consumer("check")
    check.subscribe([dlq_topic(EXECUTIONS), dlq_topic(PNL)])
    dead = check.poll(max_records=100, timeout=0.0)
    assert sorted((r.topic, r.header("dlq.error.code")) for r in dead) == [
        (dlq_topic(EXECUTIONS), b"UNKNOWN_SYMBOL"),
        (dlq_topic(PNL), b"UNKNOWN_SYMBOL"),
    ]


def test_a_backlog_of_candles_ahead_of_the_predictions_is_decided_with_every_price() -> None:
    """After an outage the market topics catch up faster than the models: the stage reads 200
    minutes of candles and features before the first prediction. Every candle is still decided
    once, with its own close and both models (none unpriced, none without its price)."""
    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD"]))
    feed = Feed()
    producer = bus.producer()
    minutes = 200
    up = PredictedDirection.UP
    backlog = [out for m in range(minutes) for out in feed.market("BTC-USD", minute(m), 100.0 + m, 0.5)]
    backlog += [feed.prediction(model, "BTC-USD", minute(m), up, 0.8)
                for m in range(minutes) for model in ("lstm", "transformer")]  # fmt: skip
    for out in backlog:
        producer.send(out.topic, out.value, key=out.key, headers=out.headers)
    stage = SignalAggregator(["BTC-USD"], SignalSettings())
    pipeline = Pipeline(bus, [stage])
    pipeline.drain()
    check = bus.consumer("check")
    check.subscribe(SIGNAL_TOPICS)
    raw = decode(check.poll(max_records=10_000, timeout=0.0), signals("raw"))
    assert stage.stats.unpriced == 0
    assert [(s.timestamp, s.entry_price) for s, _ in raw] == [(minute(m), 100.0 + m) for m in range(minutes)]
    assert all(s.ensemble_weights.keys() == {"lstm", "transformer"} and min(s.ensemble_weights.values()) > 0
               for s, _ in raw)  # fmt: skip
    assert stage.retained() == {}
