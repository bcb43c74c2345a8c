"""Replay ingest: bundled and synthetic candles through the aggregator onto the four timeframe
topics, on the memory bus and the real broker; restarts resume exactly where they left off.

Expected candles come from an independent computation: a polars group_by over the input 1m rows.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from kstrade.broker.local import free_port_block
from kstrade.bus import Bus, Output, Record
from kstrade.bus.topics import INTERVALS, METRICS_INGEST_HEALTH, candles
from kstrade.clock import EventClock
from kstrade.data import DATA_DIR
from kstrade.features import Candle as NativeCandle
from kstrade.ingest import replay
from kstrade.ingest.health import FeedHealth as SourceHealth
from kstrade.ingest.health import HealthReport
from kstrade.ingest.replay import ReplaySource, Speed, eurusd_1h_candles, interval_of, read_candles
from kstrade.ingest.resume import resume_points
from kstrade.ingest.rollup import INTERVAL_MS, MultiTimeframeCandles
from kstrade.ingest.service import HealthPublisher, ensure_candle_topics, run_ingest
from kstrade.ingest.synthetic import generate
from kstrade.schemas import Candle, CandleOrigin, Codec, MessageHeaders
from kstrade.schemas.models import IngestHealth
from kstrade.stage import Pipeline

from .conftest import FAST_GROUP, drain, quiet

START = datetime(2026, 1, 5, tzinfo=UTC)
CODEC = Codec(Candle)


def synthetic_minutes(symbol: str, minutes: int, seed: int, drop: tuple[int, ...] = ()) -> pl.DataFrame:
    """`minutes` synthetic 1m candles of the BTC-USD model renamed to `symbol`, some minutes
    dropped (minutes with no trades)."""
    frame = generate("BTC-USD", START, 1, seed).head(minutes).with_row_index("i")
    frame = frame.filter(~pl.col("i").is_in(list(drop))).drop("i", "regime")
    return frame.with_columns(pl.lit(symbol).alias("symbol"))


def expected(frame: pl.DataFrame, interval: str) -> pl.DataFrame:
    """Independent aggregation: bucket by UTC boundary, first open, max high, min low, last close,
    summed volume; a bucket is known once its last minute or any later minute arrived."""
    ms = INTERVAL_MS[interval]
    rows = frame.with_columns(pl.col("timestamp").dt.epoch("ms").alias("t")).sort("t")
    rows = rows.with_columns(pl.col("t").max().over("symbol").alias("last_t"))
    out = (
        rows.group_by("symbol", (pl.col("t") // ms * ms).alias("open_ms"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("last_t").first(),
        )
        .sort("symbol", "open_ms")
    )
    # The newest bucket is still open unless its last minute arrived.
    return out.filter(pl.col("open_ms") + ms <= pl.col("last_t") + 60_000).drop("last_t")


def topic_frame(records: list[Record]) -> pl.DataFrame:
    rows = []
    for r in records:
        c = CODEC.decode_record(r)
        assert isinstance(c, Candle)
        h = MessageHeaders.from_kafka(r.headers, topic=r.topic, offset=r.offset)
        open_ms = int(c.timestamp.timestamp() * 1000)
        assert h.origin_ns == (open_ms + INTERVAL_MS[c.interval]) * 1_000_000  # origin = close time
        assert r.key == c.symbol.encode()
        rows.append((c.symbol, open_ms, c.open, c.high, c.low, c.close, c.volume))
    return pl.DataFrame(
        rows, schema=["symbol", "open_ms", "open", "high", "low", "close", "volume"], orient="row"
    ).sort("symbol", "open_ms")


def read_topics(bus: Bus, symbols: list[str], group: str, count: int) -> dict[str, list[Record]]:
    """The `count` candles expected, then nothing more (a duplicate would show up here)."""
    consumer = bus.consumer(group, FAST_GROUP)
    topics = [candles(s, i) for s in symbols for i in INTERVALS]
    consumer.subscribe(topics)
    records = drain(consumer, count, timeout=60.0)
    records += quiet(consumer, 1.0 if bus.transport == "kafka" else 0.1)
    consumer.close()
    by_topic: dict[str, list[Record]] = {t: [] for t in topics}
    for r in records:
        by_topic[r.topic].append(r)
    return by_topic


def health_reports(bus: Bus, symbols: list[str], group: str) -> list[IngestHealth]:
    """The reports on metrics.ingest_health of the ingest of `symbols` (the broker is shared)."""
    consumer = bus.consumer(group, FAST_GROUP)
    consumer.subscribe([METRICS_INGEST_HEALTH])
    codec = Codec(IngestHealth)
    reports: list[IngestHealth] = []
    deadline = time.monotonic() + 30
    while not reports and time.monotonic() < deadline:
        for r in consumer.poll(100, 0.2) + quiet(consumer, 0.5):
            report = codec.decode_record(r)
            assert isinstance(report, IngestHealth)
            if report.symbols == symbols:
                assert r.key == report.source.encode()
                reports.append(report)
    consumer.close()
    assert reports, "no health report on metrics.ingest_health"
    return reports


def assert_topics_match(bus: Bus, frame: pl.DataFrame, symbols: list[str], group: str) -> None:
    got = read_topics(bus, symbols, group, sum(expected(frame, i).height for i in INTERVALS))
    for interval in INTERVALS:
        want = expected(frame, interval)
        have = topic_frame([r for s in symbols for r in got[candles(s, interval)]])
        assert have.height == want.height, f"{interval}: {have.height} candles, expected {want.height}"
        assert have["open_ms"].to_list() == want["open_ms"].to_list(), interval
        assert have["symbol"].to_list() == want["symbol"].to_list(), interval
        for col in ("open", "high", "low", "close"):
            assert have[col].to_list() == want[col].to_list(), (interval, col)
        # Summation order may differ in the last bit.
        assert have["volume"].to_list() == pytest.approx(want["volume"].to_list(), rel=1e-12)


def test_replay_fills_all_four_timeframes_exactly(bus: Bus, unique: str) -> None:
    symbols = [f"BTC{unique}", f"ETH{unique}"]
    frame = pl.concat(
        [
            synthetic_minutes(symbols[0], 185, seed=1, drop=(7, 59, 60, 61, 119)),  # gaps, a missing hour end
            synthetic_minutes(symbols[1], 150, seed=2, drop=(0, 14)),
        ]
    )
    ensure_candle_topics(bus, symbols)
    source = ReplaySource(frame)
    batches = run_ingest(bus, source)
    assert batches == frame["timestamp"].n_unique()
    assert_topics_match(bus, frame, symbols, f"check-{unique}")
    assert source.health.missing_minutes == 5 + 1  # 7; 59-61; 119 | ETH 14 (0 is before its first)
    assert source.health.incomplete_bars > 0
    # The service's last health report (at shutdown) counts exactly what reached the topics.
    reports = health_reports(bus, symbols, f"health-{unique}")
    last = reports[-1]
    produced = sum(expected(frame, i).height for i in INTERVALS)
    assert (last.source, last.candles_produced, last.missing_minutes) == ("replay", produced, 6)
    assert last.last_message_age_s is None and len({r.started for r in reports}) == 1


@pytest.mark.parametrize("at_once", [1, 2, 5, 7])
def test_a_replay_reading_its_rows_a_slice_at_a_time_writes_what_it_writes_from_all_of_them(
    at_once: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source turns its frame into Python rows a slice at a time (bounded memory over a
    year); an instant whose rows straddle two slices must come out whole, in the same order."""
    frame = pl.concat([synthetic_minutes(s, 40, seed=i, drop=(3, 4, 17)) for i, s in enumerate(("BTC-USD", "ETH-USD"))])

    def batches() -> list[list[tuple[str, bytes | None]]]:
        source, out = ReplaySource(frame), []
        while (batch := source.next_batch()) is not None:
            out.append([(o.topic, o.value) for o in batch])
        assert source.remaining == 0
        return out

    whole = batches()
    monkeypatch.setattr(replay, "_ROWS_AT_ONCE", at_once)
    assert batches() == whole
    assert len(whole) == frame["timestamp"].n_unique()


def _unreachable_bus() -> Bus:
    """A Kafka bus on a port where nothing listens: a send is queued and never acknowledged (as
    while the cluster is away, or a client stays stuck after it came back)."""
    return Bus.kafka(f"127.0.0.1:{free_port_block(1)}")


def test_health_reports_that_cannot_be_delivered_never_hold_up_the_candles(unique: str) -> None:
    """The replay at full speed with a report due at every instant that never gets through:
    every candle is produced at once (a health report that waited for its acknowledgement, as it
    did, held each instant up for 10 s here), and only the last report is waited for, once."""
    bus = Bus.memory()
    symbols = [f"BTC{unique}"]
    frame = synthetic_minutes(symbols[0], 600, seed=3)
    ensure_candle_topics(bus, symbols)
    source = ReplaySource(frame)
    started = time.monotonic()
    batches = run_ingest(bus, source, health_every_s=0.0, health_bus=_unreachable_bus())
    took = time.monotonic() - started
    assert batches == 600
    assert source.health.candles_produced == sum(expected(frame, i).height for i in INTERVALS)
    assert took < 10.0 + 8.0, f"{took:.1f} s: the loop waited for health reports"  # the last one waits 10 s


def test_an_unacknowledged_health_report_is_not_queued_behind_and_a_stuck_one_is_renewed() -> None:
    """While the last report is on its way, a due one is skipped (memory stays one report); once
    the last has been stuck for `stale_after_s`, its client is dropped and the next report goes
    on a new one; the last, at shutdown, is sent behind it all the same; on a bus that answers,
    every due report is sent."""
    report = HealthReport(SourceHealth(), "replay", ["BTC-USD"], every_s=0.01)
    publisher = HealthPublisher(_unreachable_bus(), report, stale_after_s=0.5, final_flush_s=0.1)
    first = publisher.producer
    assert publisher.publish()
    for _ in range(5):
        assert not publisher.publish()
    assert (publisher.skipped, publisher.renewed, publisher.producer.in_flight) == (5, 0, 1)
    time.sleep(0.6)
    assert publisher.publish()
    assert publisher.renewed == 1 and publisher.producer is not first and publisher.producer.in_flight == 1
    started = time.monotonic()
    publisher.close()  # the last word is queued behind the unacknowledged one, not skipped
    assert time.monotonic() - started < 2.0
    assert publisher.producer.in_flight == 2 and publisher.skipped == 5
    answering = Bus.memory()
    ensure_candle_topics(answering, ["BTC-USD"])
    publisher = HealthPublisher(answering, report)
    assert all(publisher.publish() for _ in range(5)) and publisher.skipped == 0
    reader = answering.consumer("health-reader")
    reader.subscribe([METRICS_INGEST_HEALTH])
    assert len(drain(reader, 5)) == 5


@pytest.mark.kafka
def test_restart_mid_stream_over_the_broker_leaves_no_gap_and_no_duplicate(kafka_bootstrap: str, unique: str) -> None:
    bus = Bus.kafka(kafka_bootstrap)
    symbols = [f"SOL{unique}"]
    frame = synthetic_minutes(symbols[0], 130, seed=5, drop=(3,))
    ensure_candle_topics(bus, symbols)
    # First run: 73 instants (minutes 0-73 but 3), then a crash in the middle of the next: minute
    # 74's 1m candle reached the broker, the 5m and 15m bars it closed did not.
    first = ReplaySource(frame)
    assert run_ingest(bus, first, max_batches=73) == 73
    batch = first.next_batch()
    assert batch is not None and {o.topic for o in batch} == {candles(symbols[0], i) for i in ("1m", "5m", "15m")}
    producer = bus.producer()
    for out in batch:
        if out.topic.endswith(".1m"):
            producer.send(out.topic, out.value, key=out.key, headers=out.headers)
    producer.flush()

    points = resume_points(bus, symbols)
    assert points[symbols[0]].last_1m_ms == int(START.timestamp() * 1000) + 74 * 60_000
    second = ReplaySource(frame, resume=points)
    run_ingest(bus, second)
    assert_topics_match(bus, frame, symbols, f"check-{unique}")

    # A third start with nothing new produces nothing at all.
    third = ReplaySource(frame, resume=resume_points(bus, symbols))
    assert third.remaining == 0
    assert run_ingest(bus, third) == 0


def test_restart_on_the_memory_bus_after_a_clean_stop(unique: str) -> None:
    bus = Bus.memory()
    symbols = [f"BTC{unique}"]
    frame = synthetic_minutes(symbols[0], 200, seed=9)
    ensure_candle_topics(bus, symbols)
    for stop_after in (17, 61, 30):  # each run resumes from the topics, never from memory
        run_ingest(bus, ReplaySource(frame, resume=resume_points(bus, symbols)), max_batches=stop_after)
    run_ingest(bus, ReplaySource(frame, resume=resume_points(bus, symbols)))
    assert_topics_match(bus, frame, symbols, f"check-{unique}")


def test_eurusd_1h_goes_to_the_hour_topic_only(bus: Bus, unique: str) -> None:
    frame = eurusd_1h_candles()
    assert frame.height == 6225 and interval_of(frame) == "1h"
    symbol = f"EURUSD{unique}" if bus.transport == "kafka" else "EURUSD"
    frame = frame.with_columns(pl.lit(symbol).alias("symbol"))
    ensure_candle_topics(bus, [symbol])
    source = ReplaySource(frame, interval="1h", source="gym-anytrading")
    started = time.perf_counter()
    run_ingest(bus, source)
    print(f"EURUSD 1h on {bus.transport}: {6225 / (time.perf_counter() - started):,.0f} candles/s")
    got = read_topics(bus, [symbol], f"check-{unique}", 6225)
    assert [len(got[candles(symbol, i)]) for i in INTERVALS] == [0, 0, 0, 6225]
    # Expected straight from the CSV text, parsed here with the standard library.
    with (DATA_DIR / "eurusd_1h_ask.csv").open() as f:
        rows = list(csv.DictReader(f))
    want = [
        (
            int(datetime.strptime(r["Time"], "%d.%m.%Y %H:%M:%S.%f").replace(tzinfo=UTC).timestamp() * 1000),
            float(r["Open"]),
            float(r["High"]),
            float(r["Low"]),
            float(r["Close"]),
            float(r["Volume"]),
        )
        for r in rows
    ]
    have = topic_frame(got[candles(symbol, "1h")]).drop("symbol").rows()
    assert have == want


def test_replay_is_deterministic_through_the_pipeline_and_paces_by_event_time(tmp_path: Path) -> None:
    frame = synthetic_minutes("BTC-USD", 30, seed=4)
    path = tmp_path / "candles.parquet"
    frame.write_parquet(path)
    csv = tmp_path / "candles.csv"
    frame.write_csv(csv)
    assert read_candles(path).equals(read_candles(csv))

    def run_once(speed: Speed) -> tuple[list[bytes], float, int]:
        bus = Bus.memory()
        ensure_candle_topics(bus, ["BTC-USD"])
        pacer = EventClock()
        source = ReplaySource(read_candles(path), speed=speed, pacer=pacer)
        pipeline = Pipeline(bus, [])
        assert pipeline.run(source) == 30
        consumer = bus.consumer("check")
        consumer.subscribe([candles("BTC-USD", i) for i in INTERVALS])
        values = [r.value or b"" for r in drain(consumer, 30 + 6 + 2)]
        return values, pacer.now_ns() / 1e9, pipeline.clock.now_ns()

    fast, waited_fast, now = run_once(Speed())
    sixty, waited_sixty, _ = run_once(Speed.parse("x60"))
    assert fast == sixty and waited_fast == 0
    assert waited_sixty == pytest.approx(29 * 60 / 60)  # 29 minutes between first and last, at x60
    assert now == (int(START.timestamp()) + 30 * 60) * 1_000_000_000  # event time: last close


def test_bad_rows_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="symbol"):
        ReplaySource(pl.DataFrame({"open_time_ms": [0], "open": [1.0]}))
    with pytest.raises(ValueError, match="speed"):
        Speed(0)
    # A row whose high is below its low is logged and skipped; the rest goes on.
    frame = synthetic_minutes("BTC-USD", 3, seed=1).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(0.0).otherwise(pl.col("high")).alias("high")
    )
    source = ReplaySource(frame)
    outputs = [o for b in iter(source.next_batch, None) for o in b]
    assert len(outputs) == 2 and source.health.rejected == 1


def test_fast_encoding_is_byte_identical_to_the_validated_model() -> None:
    fast = MultiTimeframeCandles("BTC-USD", "replay")
    slow = MultiTimeframeCandles("BTC-USD", "replay")
    slow._direct = False
    candle = NativeCandle(1_767_571_200_000, 1.0, 2.0, 0.5, 1.5, 3.0)
    for interval in INTERVALS:
        for minutes, origin in [(None, None), (1, None), (INTERVAL_MS[interval] // 60_000, None)]:
            a = fast.output(interval, candle, "aggregated", minutes, origin)
            b = slow.output(interval, candle, "aggregated", minutes, origin)
            assert (a.topic, a.key, a.value, a.headers) == (b.topic, b.key, b.value, b.headers)
    for origin in CandleOrigin:
        a, b = fast.output("1m", candle, "coinbase", 1, origin), slow.output("1m", candle, "coinbase", 1, origin)
        assert a.value == b.value and CODEC.decode(a.value or b"").origin == origin  # type: ignore[attr-defined]


def test_every_candle_says_how_many_minutes_it_was_built_from() -> None:
    """A 1m candle is built from 1; a bar from the 1m candles of its bucket that came: 4 of 5
    when a minute had no trade, 5 when complete. A replay does not say where a minute came from."""
    frame = synthetic_minutes("BTC-USD", 60, seed=3, drop=(3, 17, 18))
    outputs = [o for b in iter(ReplaySource(frame).next_batch, None) for o in b]
    got = [(o.topic.rsplit(".", 1)[1], CODEC.decode(o.value or b"")) for o in outputs]
    counts = {(i, int(c.timestamp.timestamp() * 1000) // 60_000 % 60): c.minutes for i, c in got if i != "1m"}
    assert counts[("5m", 0)] == 4 and counts[("5m", 5)] == 5 and counts[("5m", 15)] == 3
    assert counts[("15m", 0)] == 14 and counts[("15m", 15)] == 13 and counts[("1h", 0)] == 57
    assert all(c.minutes == 1 and c.origin is None and c.source == "replay" for i, c in got if i == "1m")
    assert all(c.origin is None and c.source == "aggregated" for i, c in got if i != "1m")
    # A higher-timeframe candle from a file does not say what it was built from.
    hours = ReplaySource(eurusd_1h_candles().head(3), interval="1h")
    bars = [CODEC.decode(o.value or b"") for b in iter(hours.next_batch, None) for o in b]
    assert len(bars) == 3 and all(c.minutes is None for c in bars)  # type: ignore[attr-defined]


def test_a_repeated_row_is_a_duplicate_and_a_corrected_one_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    frame = synthetic_minutes("BTC-USD", 5, seed=3)
    repeated = pl.concat([frame, frame.slice(2, 1)])  # minute 2 twice, identical
    source = ReplaySource(repeated)
    outputs = [o for b in iter(source.next_batch, None) for o in b]
    assert [o.topic for o in outputs].count(candles("BTC-USD", "1m")) == 5
    assert source.health.duplicates == 1
    corrected = pl.concat([frame, frame.slice(2, 1).with_columns(pl.col("close") * 1.0001, pl.col("high") * 1.01)])
    source = ReplaySource(corrected)
    outputs = [o for b in iter(source.next_batch, None) for o in b]
    assert [o.topic for o in outputs].count(candles("BTC-USD", "1m")) == 5
    assert source.health.rejected == 1 and "CONFLICTING_DUPLICATE" in caplog.text


def test_restart_rebuilds_a_bar_that_closed_hours_late_after_a_gap(unique: str) -> None:
    bus = Bus.memory()
    symbol = f"BTC{unique}"
    # Hour 0 complete; hour 1 ends at minute 118; nothing again until minute 360, which closes
    # the incomplete 5m/15m/1h bars of hour 1, more than two hours after they opened.
    frame = synthetic_minutes(symbol, 380, seed=8, drop=tuple(range(119, 360)))
    ensure_candle_topics(bus, [symbol])
    first = ReplaySource(frame)
    run_ingest(bus, first, max_batches=119)  # minutes 0-118
    batch = first.next_batch()  # minute 360: its 1m candle is written, the bars it closed are not
    assert batch is not None and {o.topic for o in batch} == {candles(symbol, i) for i in INTERVALS}
    producer = bus.producer()
    for out in batch:
        if out.topic.endswith(".1m"):
            producer.send(out.topic, out.value, key=out.key, headers=out.headers)
    producer.flush()
    run_ingest(bus, ReplaySource(frame, resume=resume_points(bus, [symbol])))
    assert_topics_match(bus, frame, [symbol], f"check-{unique}")


@pytest.mark.parametrize("seed", range(6))
def test_restart_after_any_partial_delivery_across_topics(seed: int, unique: str) -> None:
    """Kafka keeps each partition's order, not the order across topics: a crash with unflushed
    instants can leave each of the four topics with any prefix of its candles. A restart must
    complete every topic exactly."""
    rng = random.Random(seed)
    symbol = f"SOL{unique}"
    frame = synthetic_minutes(symbol, 200, seed=seed, drop=tuple(rng.sample(range(200), 12)))
    per_topic: dict[str, list[Output]] = {}
    for batch in iter(ReplaySource(frame).next_batch, None):
        for out in batch:
            per_topic.setdefault(out.topic, []).append(out)
    bus = Bus.memory()
    ensure_candle_topics(bus, [symbol])
    producer = bus.producer()
    for outs in per_topic.values():
        for out in outs[: rng.randint(0, len(outs))]:
            producer.send(out.topic, out.value, key=out.key, headers=out.headers)
    producer.flush()
    run_ingest(bus, ReplaySource(frame, resume=resume_points(bus, [symbol])))
    assert_topics_match(bus, frame, [symbol], f"check-{unique}")


def test_the_command_line_replays_the_bundled_eurusd_series() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSTRADE_")}
    done = subprocess.run(
        [sys.executable, "-m", "kstrade", "ingest", "replay", "eurusd"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ingest replay: 6225 batch(es); health: " in done.stdout and "candles produced 6,225" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "kstrade", "ingest", "replay", "/nonexistent.txt"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "replay reads .csv or .parquet" in bad.stderr
