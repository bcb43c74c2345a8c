"""The batch path changes nothing: a replay whose first stages run ahead over many instants and
whose stages handle whole polls gives exactly the records of the record-at-a-time, instant-by-
instant replay (every topic: partition, offset, key, value, headers and timestamp), and the same
run directory. Only measurements of wall time are left out of the comparison: a prediction's
`inference_time_ms` (what the model call cost) and a dead letter's `dlq.time_ns` differ run to
run on any path.

SYNTHETIC candles throughout (kstrade.ingest.synthetic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from kstrade import app
from kstrade.bus import Bus, Output, Record
from kstrade.bus.topics import candles, features_aggregated
from kstrade.config import Settings, SignalSettings, TierBands
from kstrade.features.stage import FeatureStage
from kstrade.inference.stage import LSTMInference, TransformerInference
from kstrade.ingest import synthetic
from kstrade.ingest.replay import ReplaySource
from kstrade.report.recorder import RunRecorder
from kstrade.schemas import Codec
from kstrade.schemas.models import Candle, Prediction
from kstrade.stage import Pipeline, Source

from .helpers import memory_bus

MODELS = Path(__file__).resolve().parents[1] / "models"
START = datetime(2026, 1, 5, tzinfo=UTC)
Rows = dict[str, list[tuple[Any, ...]]]


def _prediction_without_timing(value: bytes) -> bytes:
    codec = Codec(Prediction)
    fields = codec.decode_value(value)
    fields["inference_time_ms"] = 0.0  # wall time of the model call: a measurement, not an output
    return codec.encode_value(fields)


def everything(bus: Bus) -> Rows:
    """Every record on every topic, by topic, in partition and offset order."""
    admin = bus.admin()
    records: list[Record] = []
    for topic in sorted(admin.list_topics(5.0)):
        total = sum(admin.end_offsets(topic, 5.0))
        consumer = bus.consumer(f"check.{topic}")
        consumer.subscribe([topic])
        read: list[Record] = []
        while len(read) < total:
            read += consumer.poll(10_000, 0.1)
        consumer.close()
        records += read
    return rows_of(records, admin.list_topics(5.0))


def rows_of(records: list[Record], topics: Iterable[str] = ()) -> Rows:
    """`records` as comparable rows, by topic (every one of `topics` too), in partition and offset order."""
    by_topic: dict[str, list[Record]] = {topic: [] for topic in topics}
    for r in records:
        by_topic.setdefault(r.topic, []).append(r)
    out: Rows = {}
    for topic, read in sorted(by_topic.items()):
        rows = []
        for r in read:
            value = r.value
            if value is not None and topic.startswith("predictions."):
                value = _prediction_without_timing(value)
            # dlq.time_ns is the wall time a dead letter was written: a measurement too.
            headers = tuple(h for h in r.headers if h[0] != "dlq.time_ns")
            rows.append((r.partition, r.offset, r.key, value, headers, r.timestamp_ms))
        out[topic] = sorted(rows, key=lambda row: (row[0], row[1]))
    return out


def assert_same(a: Rows, b: Rows) -> None:
    assert sorted(a) == sorted(b)
    for topic in a:
        assert len(a[topic]) == len(b[topic]), topic
        for i, (x, y) in enumerate(zip(a[topic], b[topic], strict=True)):
            assert x == y, f"{topic}: record {i} differs"


class EverythingRecorder(RunRecorder):
    """The run's recorder, also reading every topic in a group of its own as the run goes:
    `run` deletes what every reader has read after each chunk, so the bus no longer holds the
    whole run at its end."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.everything_bus = bus
        self.everything = bus.consumer("check.everything", {"auto.offset.reset": "earliest"})
        self.everything.subscribe_pattern("^[^_].*")
        self.seen: list[Record] = []

    def read(self) -> int:
        while records := self.everything.poll(10_000, 0.0):
            self.seen += records
        self.everything.commit()
        return super().read()

    def rows(self) -> Rows:
        return rows_of(self.seen)


def test_a_replay_with_orders_is_the_same_batched_and_ahead_as_record_by_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole `run`: three symbols, two days, tier bands low enough that orders are sent,
    filled and closed, so execution's fills and P&L feed back into signals while features and
    inference run up to 1024 instants ahead; and what every reader has read deleted from the
    bus after each chunk (which must change nothing either)."""
    recorders: dict[str, EverythingRecorder] = {}

    def recorder(bus: Bus) -> EverythingRecorder:
        recorders[str(len(recorders))] = made = EverythingRecorder(bus)
        return made

    monkeypatch.setattr(app, "RunRecorder", recorder)
    config = Settings(signals=SignalSettings(tiers=TierBands(a=0.5, b=0.45, c=0.34)))
    summaries = {}
    for name, batched in (("record", False), ("batched", True)):
        options = app.RunOptions(out=tmp_path / name, days=2, live_view=False, batched=batched, chunk=300)
        summaries[name] = app.run(config, options, log=lambda _: None)
    assert summaries["batched"]["signals_final"] > 0 and summaries["batched"]["trades_closed"] > 0
    record, batched = recorders["0"], recorders["1"]
    assert_same(record.rows(), batched.rows())
    for file in app_outputs():
        assert (tmp_path / "record" / file).read_bytes() == (tmp_path / "batched" / file).read_bytes(), file
    # The bus kept only what some reader had not read: a late reader finds the feature vectors
    # gone (every stage and recorder read them), though their offsets went on.
    bus = batched.everything_bus
    topic = features_aggregated("BTC-USD")
    assert sum(bus.admin().end_offsets(topic, 1.0)) == summaries["batched"]["candles"] // 3
    late = bus.consumer("check.late", {"auto.offset.reset": "earliest"})
    late.subscribe([topic])
    assert late.poll(10_000, 0.0) == []


def app_outputs() -> tuple[str, ...]:
    return (
        "signals.parquet",
        "orders.parquet",
        "executions.parquet",
        "pnl.parquet",
        "trades.parquet",
        "equity.parquet",
    )


class WithBadCandles(Source):
    """A replay that also writes, at a few instants, what a stage must dead-letter: bytes that
    are no candle, and a candle of another symbol on BTC-USD's topic."""

    name = "ingest"

    def __init__(self, frame: pl.DataFrame, at: set[int]) -> None:
        super().__init__()
        self.replay = ReplaySource(frame)
        self.at = at
        self.instant = 0
        self.codec = Codec(Candle)

    def next_batch(self) -> list[Output] | None:
        self.replay.clock = self.clock
        batch = self.replay.next_batch()
        if batch is None:
            return None
        self.instant += 1
        if self.instant in self.at:
            now = self.clock.now_ns()
            topic = candles("BTC-USD", "1m")
            wrong = Candle(timestamp=datetime.fromtimestamp(now / 1e9 - 60, UTC), symbol="ETH-USD", interval="1m",
                           open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0, source="test")  # fmt: skip
            headers = self.codec.headers(now, self.name)
            batch = [
                *batch,
                Output(topic, b"\x00not a candle", key=b"BTC-USD", headers=headers),
                Output(topic, self.codec.encode(wrong), key=b"BTC-USD", headers=headers),
            ]
        return batch


def _front_stages() -> list[Any]:
    symbols = ["BTC-USD", "ETH-USD"]
    return [FeatureStage(symbols), LSTMInference(MODELS, symbols), TransformerInference(MODELS, symbols)]


@pytest.fixture(scope="module")
def minutes() -> pl.DataFrame:
    frames = [synthetic.generate(s, START, 2, 11).drop("regime") for s in ("BTC-USD", "ETH-USD")]
    return pl.concat(frames).sort(["timestamp", "symbol"])  # 34 h of warm-up, then ~14 h of vectors


def _replay(frame: pl.DataFrame, bad_at: set[int], make: Callable[[Bus, list[Any]], Pipeline]) -> Rows:
    bus = memory_bus(Settings(symbols=["BTC-USD", "ETH-USD"]))
    stages = _front_stages()
    make(bus, stages).run(WithBadCandles(frame, bad_at))
    for stage in stages:
        stage.close()
    return everything(bus)


@pytest.fixture(scope="module")
def record_by_record(minutes: pl.DataFrame) -> Rows:
    return _replay(minutes, {3, 2500}, lambda bus, stages: Pipeline(bus, stages, batched=False))


@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # each example is a replay: no shrinking marathon
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(chunk=st.integers(1, 700), max_records=st.integers(1, 900))
@example(chunk=1024, max_records=500)  # what `run` uses
@example(chunk=1, max_records=1)
def test_batches_of_any_size_and_boundary_give_the_record_path(
    minutes: pl.DataFrame, record_by_record: Rows, chunk: int, max_records: int
) -> None:
    """Features and both models, run ahead in chunks of any size and polls of any size, with bad
    records in the stream: the same vectors, predictions and dead letters, in the same order."""
    ahead = ["features", "inference.lstm", "inference.transformer"]
    rows = _replay(
        minutes,
        {3, 2500},
        lambda bus, stages: Pipeline(bus, stages, ahead=ahead, chunk=chunk, max_records=max_records),
    )
    assert len(rows["predictions.transformer"]) > 1000
    assert len(rows["dlq.market.candles.BTC-USD.1m"]) == 4  # two bad records, at two instants
    assert_same(record_by_record, rows)


def test_plain_headers_is_true_only_where_decode_record_accepts_the_headers() -> None:
    """The batch paths' header check never lets through what `decode_record` would refuse."""
    from kstrade.schemas import CodecError

    codec = Codec(Candle)
    value = codec.encode(Candle(timestamp=START, symbol="BTC-USD", interval="1m", open=1.0, high=1.0,
                                low=1.0, close=1.0, volume=1.0, source="test"))  # fmt: skip
    good = codec.headers(123, "ingest")

    class Rec:
        topic, partition, offset = "t", 0, 0

        def __init__(self, headers: list[tuple[str, bytes | None]], value: bytes | None = value) -> None:
            self.headers, self.value = headers, value

        def header(self, name: str) -> bytes | None:
            return next((v for k, v in self.headers if k == name and v is not None), None)

    cases = [
        good,
        [*good, ("extra", b"\xff")],  # not ASCII
        [h for h in good if h[0] != "stage"],
        [("origin_ns", b"-5"), *good],  # the first occurrence wins
        [(k, str(codec.version + 1).encode() if k == "schema_version" else v) for k, v in good],  # unknown
        [(k, b"1" if k == "schema_version" else v) for k, v in good],  # older: decode_record resolves it
        [(k, b"kstrade.Signal" if k == "schema" else v) for k, v in good],
        [(k, b"json" if k == "encoding" else v) for k, v in good],
        [h for h in good if h[0] != "encoding"],  # absent: bare Avro
        [("origin_ns", None), *good],  # a null header is skipped, as from_kafka does
    ]
    for headers in cases:
        record = Rec(headers)
        try:
            codec.decode_record(record)
            accepted = True
        except CodecError:
            accepted = False
        assert not codec.plain_headers(record) or accepted, headers
    assert codec.plain_headers(Rec(good)) and not codec.plain_headers(Rec(good, value=None))
