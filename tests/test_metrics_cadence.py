"""The collector's periodic work (summaries, metrics.* messages, database commits, lag probes)
runs at a bounded cadence: live every `emit_interval_s` wall seconds, on the event clock of a
replay every `replay_emit_interval_s` event seconds, not once per event minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event

from kstrade.bus import Bus, Record
from kstrade.bus.topics import METRICS_LATENCY, candles
from kstrade.clock import EventClock, WallClock
from kstrade.config import MetricsSettings
from kstrade.metrics import MetricsCollector
from kstrade.metrics.storage import MetricsStore
from kstrade.schemas import Candle, Codec

from .conftest import drain

NS = 1_000_000_000
START = datetime(2026, 1, 5, tzinfo=UTC)


def _minutes(bus: Bus, n: int) -> list[Record]:
    """`n` closed 1m candles, one per minute from START, each published 1 ms after its close."""
    topic = candles("BTC-USD", "1m")
    bus.admin().create_topics([(topic, 1, 1, {})])
    codec = Codec(Candle)
    producer = bus.producer()
    for i in range(n):
        at = START + timedelta(minutes=i + 1)
        c = Candle(timestamp=at, symbol="BTC-USD", interval="1m", open=1.0, high=1.0, low=1.0, close=1.0,
                   volume=1.0, source="test")  # fmt: skip
        origin_ns = int(at.timestamp()) * NS
        producer.send(topic, codec.encode(c), key=b"BTC-USD", headers=codec.headers(origin_ns, "ingest"),
                      timestamp_ms=origin_ns // 1_000_000 + 1)  # fmt: skip
    producer.flush()
    reader = bus.consumer("cadence-reader", {"auto.offset.reset": "earliest"})
    reader.subscribe([topic])
    return drain(reader, n)


def _run(collector: MetricsCollector, records: list[Record], store: MetricsStore) -> tuple[int, int, int]:
    """Feeds one record per minute of time, with a database row buffered every minute, the way
    a replay drives the stage; returns (commits, latency messages, lag probes)."""
    commits = [0]
    event.listen(store.engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    probes = [0]
    assert collector.lag_probe is not None
    measure = collector.lag_probe.measure

    def counted(topics: list[str]) -> dict[tuple[str, str, int], int]:
        probes[0] += 1
        return measure(topics)

    collector.lag_probe.measure = counted  # type: ignore[method-assign]
    latency = 0
    for i, r in enumerate(records):
        now_ns = int((START + timedelta(minutes=i + 1)).timestamp()) * NS
        if isinstance(collector.clock, EventClock):
            collector.clock.advance_to(now_ns)
        collector.handle(r)
        store.metric("per_minute", {}, START + timedelta(minutes=i + 1), float(i))
        latency += sum(o.topic == METRICS_LATENCY for o in collector.on_time(now_ns))
    return commits[0], latency, probes[0]


def test_on_the_event_clock_a_day_of_minutes_is_summarised_and_committed_hourly(tmp_path: Path) -> None:
    bus = Bus.memory()
    records = _minutes(bus, 1440)
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    collector = MetricsCollector(MetricsSettings(lag_groups=["kstrade.features"]), bus=bus, store=store)
    collector.clock = EventClock()
    commits, latency, probes = _run(collector, records, store)
    # the first call starts the window; then a tick per event hour: 23 in the day, not 1439
    assert commits <= 24 + 1 and latency <= 24 + 1 and probes <= 24 + 1
    assert latency >= 23 and probes >= 23
    collector.close()  # the last partial hour is written at close
    assert len(store.rows("metric_samples")) >= 1440


def test_on_the_wall_clock_the_live_cadence_holds(tmp_path: Path) -> None:
    bus = Bus.memory()
    records = _minutes(bus, 60)
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    settings = MetricsSettings(emit_interval_s=10, lag_interval_s=10, lag_groups=["kstrade.features"])
    collector = MetricsCollector(settings, bus=bus, store=store)
    assert isinstance(collector.clock, WallClock)
    commits, latency, probes = _run(collector, records, store)
    # 60 s between calls, 10 s intervals: every call after the first is a tick, a commit and a probe
    assert commits == 59 and latency == 59 and probes == 60
    collector.close()
