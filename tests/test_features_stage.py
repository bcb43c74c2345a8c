"""The features stage on the bus: what it emits equals the batch path (the training data code)
on the same candles, warm-up is never emitted, and bad candles are dead-lettered."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import numpy as np
import polars as pl
import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import candles, dlq_topic, features_aggregated
from kstrade.clock import WallClock
from kstrade.features import FEATURE_NAMES, features_from_frame
from kstrade.features.stage import FeatureStage
from kstrade.ingest.synthetic import generate
from kstrade.schemas import Candle, Codec, FeatureVector
from kstrade.schemas.codec import schema_dir
from kstrade.stage import Pipeline

from .conftest import drain

START = datetime(2026, 1, 5, tzinfo=UTC)
TOPIC = candles("BTC-USD", "1m")


def _candle(row: dict[str, object], symbol: str = "BTC-USD") -> Candle:
    return Candle(
        timestamp=row["timestamp"], symbol=symbol, interval="1m", open=row["open"], high=row["high"],
        low=row["low"], close=row["close"], volume=row["volume"], source="synthetic",
    )  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def minutes() -> pl.DataFrame:
    return generate("BTC-USD", START, 2, seed=5)  # SYNTHETIC


def _bus_with_topics(symbols: list[str]) -> Bus:
    bus = Bus.memory()
    names = [candles(s, "1m") for s in symbols] + [features_aggregated(s) for s in symbols]
    bus.admin().create_topics([(t, 3, 1, {}) for t in names + [dlq_topic(n) for n in names]])
    return bus


def test_streamed_vectors_equal_the_batch_path_and_warm_up_is_not_emitted(minutes: pl.DataFrame) -> None:
    bus = _bus_with_topics(["BTC-USD"])
    codec = Codec(Candle)
    producer = bus.producer()
    for row in minutes.iter_rows(named=True):
        close_ns = int((row["timestamp"] + timedelta(minutes=1)).timestamp() * 1e9)
        producer.send(TOPIC, codec.encode(_candle(row)), key=b"BTC-USD", headers=codec.headers(close_ns, "test"))
    stage = FeatureStage(["BTC-USD"])
    Pipeline(bus, [stage]).drain()

    batch = features_from_frame(minutes.rename({"timestamp": "open_time"}))
    ready = batch.filter(pl.col("ready"))
    assert 0 < ready.height < minutes.height  # the 1h timeframe needs a day and a half of minutes
    assert stage.stats.emitted == ready.height and stage.stats.warming == minutes.height - ready.height

    check = bus.consumer("check")
    check.subscribe([features_aggregated("BTC-USD")])
    vectors = [Codec(FeatureVector).decode_record(r) for r in drain(check, ready.height)]
    vectors.sort(key=lambda v: v.timestamp)
    got = np.array([v.values for v in vectors])  # type: ignore[attr-defined]
    want = ready.select(FEATURE_NAMES).to_numpy()
    assert np.array_equal(got, want)  # bit for bit: live and training features cannot differ
    first = vectors[0]
    assert first.names == list(FEATURE_NAMES) and first.symbol == "BTC-USD"  # type: ignore[attr-defined]
    assert int(first.timestamp.timestamp() * 1000) == ready["open_time_ms"][0]


def test_bad_candles_are_dead_lettered_with_a_reason(minutes: pl.DataFrame) -> None:
    bus = _bus_with_topics(["BTC-USD", "ETH-USD"])
    codec = Codec(Candle)
    producer = bus.producer()
    rows = list(minutes.head(5).iter_rows(named=True))
    sends = [
        (TOPIC, _candle(rows[0])),
        (TOPIC, _candle(rows[2])),
        (TOPIC, _candle(rows[1])),  # late: minute 1 after minute 2
        (TOPIC, _candle(rows[3], symbol="ETH-USD")),  # on the wrong symbol's topic
    ]
    for topic, c in sends:
        producer.send(topic, codec.encode(c), key=b"BTC-USD", headers=codec.headers(1, "test"))
    producer.send(TOPIC, b"\x00\x01", key=b"BTC-USD", headers=codec.headers(1, "test"))
    stage = FeatureStage(["BTC-USD", "ETH-USD"])
    Pipeline(bus, [stage]).drain()
    check = bus.consumer("check")
    check.subscribe([dlq_topic(TOPIC)])
    codes = sorted((r.header("dlq.error.code") or b"").decode() for r in drain(check, 3))
    assert codes == ["LATE_CANDLE", "MALFORMED", "SYMBOL_TOPIC_MISMATCH"]
    assert stage.stats.candles == 3


def test_a_restart_from_the_checkpoint_is_warm_and_skips_what_it_already_handled(
    minutes: pl.DataFrame, tmp_path: Path
) -> None:
    codec = Codec(Candle)
    records = [
        (codec.encode(_candle(row)), codec.headers(1, "test"), i) for i, row in enumerate(minutes.iter_rows(named=True))
    ]
    split = 2500  # past the warm-up of every timeframe

    def feed(stage: FeatureStage, rows: list[tuple[bytes, list[tuple[str, bytes]], int]]) -> int:
        bus = _bus_with_topics(["BTC-USD"])
        producer = bus.producer()
        for value, headers, _ in rows:
            producer.send(TOPIC, value, key=b"BTC-USD", headers=headers)
        Pipeline(bus, [stage]).drain()  # the runner checkpoints before each commit
        return stage.stats.emitted

    first = FeatureStage(["BTC-USD"], state_dir=tmp_path)
    feed(first, records[:split])
    # Restarted; the last 5 candles before the split come again (checkpointed, not committed).
    restarted = FeatureStage(["BTC-USD"], state_dir=tmp_path)
    emitted = feed(restarted, records[split - 5 :])
    assert restarted.stats.replayed == 5 and emitted == len(records) - split  # warm at once
    uninterrupted = FeatureStage(["BTC-USD"])
    feed(uninterrupted, records)
    assert restarted.engines["BTC-USD"].snapshot() == uninterrupted.engines["BTC-USD"].snapshot()


# -- completeness: incomplete higher bars, v1 candles ------------------------------------------------


def _feed_frame(stage: FeatureStage, frame: pl.DataFrame, *, v1_every: int = 0) -> dict[int, list[float]]:
    """`frame`'s minutes through `stage` on the bus (every `v1_every`-th written as schema v1);
    the emitted vectors by open time (ms)."""
    bus = _bus_with_topics(["BTC-USD"])
    codec = Codec(Candle)
    v1 = fastavro.parse_schema(json.loads((schema_dir() / "released" / "candle.v1.avsc").read_text()))
    producer = bus.producer()
    for i, row in enumerate(frame.iter_rows(named=True)):
        candle = _candle(row)
        headers = codec.headers(_close_ns(candle), "test")
        value = codec.encode(candle)
        if v1_every and i % v1_every == 0:
            body = io.BytesIO()
            written = {k: v for k, v in candle.model_dump().items() if k not in ("minutes", "origin")}
            fastavro.schemaless_writer(body, v1, written)
            value = body.getvalue()
            headers = [(k, b"1" if k == "schema_version" else v) for k, v in headers]
        producer.send(TOPIC, value, key=b"BTC-USD", headers=headers)
    Pipeline(bus, [stage]).drain()
    check = bus.consumer("check")
    check.subscribe([features_aggregated("BTC-USD")])
    vectors = [Codec(FeatureVector).decode_record(r) for r in drain(check, stage.stats.emitted)]
    assert not check.poll(max_records=10, timeout=0.1)
    out = {}
    for v in vectors:
        assert v.names == list(FEATURE_NAMES)  # type: ignore[attr-defined]  # the models' input, unchanged
        out[int(v.timestamp.timestamp() * 1000)] = v.values  # type: ignore[attr-defined]
    return out


def test_an_incomplete_higher_bar_updates_the_indicators_as_built_and_is_counted(minutes: pl.DataFrame) -> None:
    """The rule (kstrade.features.stage): a 5m/15m/1h bar built from fewer 1m candles than its
    interval updates the indicators as it was built (never dropped, never padded), vectors keep
    coming, and the stage counts such bars per timeframe."""
    start = 2400  # warm by then
    dropped = [start + 3, *range(start + 80, start + 85)]  # a minute of one 5m bar; a whole 5m bar
    frame = minutes.with_row_index("i").filter(~pl.col("i").is_in(dropped)).drop("i")
    stage = FeatureStage(["BTC-USD"])
    vectors = _feed_frame(stage, frame)
    # Independent count: buckets that had some of their minutes, not all.
    times = frame.with_columns(pl.col("timestamp").dt.epoch("ms").alias("t"))
    want = {}
    for interval, n in (("5m", 5), ("15m", 15), ("1h", 60)):
        sizes = times.group_by(pl.col("t") // (n * 60_000)).len()
        want[interval] = sizes.filter(pl.col("len") < n).height
    assert want == {"5m": 1, "15m": 2, "1h": 2}
    assert stage.stats.incomplete_bars == want
    # The bar of 4 minutes closed on its last minute, with the close of that minute.
    t0 = int(minutes["timestamp"][0].timestamp() * 1000)
    close = minutes["close"].to_list()
    log_return = FEATURE_NAMES.index("5m_log_return")
    at = t0 + (start + 4) * 60_000
    assert vectors[at][log_return] == math.log(close[start + 4] / close[start - 1])
    # The bar with no minute at all is not made up: the next one follows the one before the gap.
    at = t0 + (start + 89) * 60_000
    assert vectors[at][log_return] == math.log(close[start + 89] / close[start + 79])
    assert stage.stats.emitted == stage.stats.candles - stage.stats.warming == len(vectors)


def test_candles_written_as_v1_go_through_the_stage_like_v2_ones(minutes: pl.DataFrame) -> None:
    """A v1 candle (schema_version 1, still on the topic after the upgrade) is read like a v2
    one, interleaved with v2 candles in the same polls: the same vectors, nothing dead-lettered."""
    mixed, current = FeatureStage(["BTC-USD"]), FeatureStage(["BTC-USD"])
    assert _feed_frame(mixed, minutes, v1_every=3) == _feed_frame(current, minutes)
    assert mixed.stats.candles == current.stats.candles == minutes.height
    assert mixed.engines["BTC-USD"].snapshot() == current.engines["BTC-USD"].snapshot()


# -- time sanity: one far-future candle must not poison a symbol's clock --------------------------


def _now_minutes() -> pl.DataFrame:
    """Two days of SYNTHETIC minutes ending a minute ago: real candles to a live (wall clock) stage."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return generate("BTC-USD", now - timedelta(days=2, minutes=1), 2, seed=5)


def _close_ns(c: Candle) -> int:
    return int((c.timestamp + timedelta(minutes=1)).timestamp() * 1e9)


def _live_feed(stage: FeatureStage, sends: list[tuple[Candle, int]], *, batched: bool = True) -> Bus:
    """`sends` (a candle, its origin_ns header) through a live stage: the wall clock, as a service."""
    bus = _bus_with_topics(["BTC-USD"])
    codec = Codec(Candle)
    producer = bus.producer()
    for c, origin in sends:
        producer.send(TOPIC, codec.encode(c), key=b"BTC-USD", headers=codec.headers(origin, "test"))
    Pipeline(bus, [stage], clock=WallClock(), batched=batched).drain()
    return bus


def _dead_letter_codes(bus: Bus, count: int) -> list[str]:
    check = bus.consumer("check-dlq")
    check.subscribe([dlq_topic(TOPIC)])
    codes = [(r.header("dlq.error.code") or b"").decode() for r in drain(check, count)]
    assert not check.poll(max_records=10, timeout=0.2)
    return codes


def test_a_far_future_candle_is_dead_lettered_and_the_real_ones_after_it_all_count(tmp_path: Path) -> None:
    real = [_candle(row) for row in _now_minutes().iter_rows(named=True)]
    split = 2450  # warm by then; and mid-poll (polls of 500): the batched path meets it
    ahead = real[split].model_copy(update={"timestamp": real[split].timestamp + timedelta(days=365)})
    # One honest about its time in the header (refused at the runner's door), one whose header
    # claims the present (refused by the features stage on the payload's minute).
    sends = [(c, _close_ns(c)) for c in real[:split]]
    sends += [(ahead, _close_ns(ahead)), (ahead, _close_ns(real[split - 1]))]
    sends += [(c, _close_ns(c)) for c in real[split : split + 100]]
    poisoned = FeatureStage(["BTC-USD"], state_dir=tmp_path)
    bus = _live_feed(poisoned, sends)
    assert _dead_letter_codes(bus, 2) == ["FUTURE_TIMESTAMP", "FUTURE_TIMESTAMP"]  # and no LATE_CANDLE

    # Restarted from its checkpoint (the last 5 candles come again): every later real candle
    # gives its vector, none is dead-lettered ...
    restarted = FeatureStage(["BTC-USD"], state_dir=tmp_path)
    rest = [(c, _close_ns(c)) for c in real[split + 95 :]]
    bus = _live_feed(restarted, rest)
    assert restarted.stats.replayed == 5 and restarted.stats.emitted == len(rest) - 5
    check = bus.consumer("check-dlq")
    check.subscribe([dlq_topic(TOPIC)])
    assert not check.poll(max_records=10, timeout=0.2)
    # ... and the state is exactly that of a stage that never saw the future candle.
    clean = FeatureStage(["BTC-USD"])
    _live_feed(clean, [(c, _close_ns(c)) for c in real])
    assert poisoned.stats.emitted + restarted.stats.emitted == clean.stats.emitted
    assert restarted.engines["BTC-USD"].snapshot() == clean.engines["BTC-USD"].snapshot()


def test_the_record_path_refuses_a_future_candle_before_the_engine() -> None:
    real = [_candle(row) for row in _now_minutes().tail(6).iter_rows(named=True)]
    ahead = real[3].model_copy(update={"timestamp": real[3].timestamp + timedelta(days=365)})
    sends = [(c, _close_ns(c)) for c in real[:3]] + [(ahead, _close_ns(real[2]))]
    sends += [(c, _close_ns(c)) for c in real[3:]]
    stage = FeatureStage(["BTC-USD"])
    bus = _live_feed(stage, sends, batched=False)
    assert _dead_letter_codes(bus, 1) == ["FUTURE_TIMESTAMP"]
    assert stage.stats.candles == 6  # every real candle reached the engine, none was late


def test_a_checkpoint_poisoned_before_the_check_existed_is_discarded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = [_candle(row) for row in _now_minutes().tail(10).iter_rows(named=True)]
    first = FeatureStage(["BTC-USD"], state_dir=tmp_path)
    _live_feed(first, [(c, _close_ns(c)) for c in real[:5]])
    assert first.state_file is not None
    state = json.loads(first.state_file.read_text())
    future = real[5].timestamp + timedelta(days=365)
    state["symbols"]["BTC-USD"]["through_ms"] = int(future.timestamp() * 1000)  # as the bug left it
    first.state_file.write_text(json.dumps(state))
    restarted = FeatureStage(["BTC-USD"], state_dir=tmp_path)
    assert "discarded" in capsys.readouterr().err
    bus = _live_feed(restarted, [(c, _close_ns(c)) for c in real[5:]])
    assert restarted.stats.candles == 5 and restarted.stats.replayed == 0
    check = bus.consumer("check-dlq")
    check.subscribe([dlq_topic(TOPIC)])
    assert not check.poll(max_records=10, timeout=0.2)  # no LATE_CANDLE


def test_a_replay_has_no_wall_clock_to_be_ahead_of(minutes: pl.DataFrame) -> None:
    """On the event clock the data is the clock: candles of any date are the replay's present."""
    stage = FeatureStage(["BTC-USD"])
    later = [_candle(row) for row in minutes.head(3).iter_rows(named=True)]
    later = [c.model_copy(update={"timestamp": c.timestamp + timedelta(days=3650)}) for c in later]
    bus = _bus_with_topics(["BTC-USD"])
    codec = Codec(Candle)
    producer = bus.producer()
    for c in later:
        producer.send(TOPIC, codec.encode(c), key=b"BTC-USD", headers=codec.headers(_close_ns(c), "test"))
    Pipeline(bus, [stage]).drain()
    assert stage.stats.candles == 3
