"""Ingest health through the bus into the collector: the reports the ingest service publishes on
metrics.ingest_health become Prometheus series on the /metrics endpoint, a stale live feed raises
INGEST_FEED_STALE on metrics.alerts (and its end a _RESOLVED), and a restarted ingest's counters
start again from its own report."""

from __future__ import annotations

import io
import re
import time
import uuid

import fastavro
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kstrade.bus import Bus, Output, Record
from kstrade.bus.topics import METRICS_ALERTS, METRICS_INGEST_HEALTH
from kstrade.config import MetricsSettings
from kstrade.ingest.health import FeedHealth, HealthReport
from kstrade.metrics import MetricsCollector
from kstrade.schemas import Alert, Codec, MessageHeaders
from kstrade.schemas import models as messages
from kstrade.schemas.codec import schema_json
from kstrade.schemas.models import Severity

from .conftest import drain, make_topic

NS = 1_000_000_000


def _send(bus: Bus, outputs: list[Output]) -> None:
    producer = bus.producer()
    for out in outputs:
        producer.send(out.topic, out.value, key=out.key, headers=out.headers)
    producer.flush()


def _scrape(collector: MetricsCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    server = collector.exporter.serve(0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).text
    finally:
        server.shutdown()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _alerts(outputs: list[Output]) -> list[Alert]:
    codec = Codec(Alert)
    alerts = [codec.decode(o.value or b"") for o in outputs if o.topic == METRICS_ALERTS]
    return [a for a in alerts if isinstance(a, Alert)]


def test_health_reports_become_prometheus_series_and_a_stale_feed_alerts(bus: Bus) -> None:
    make_topic(bus, METRICS_INGEST_HEALTH)
    # Source names of this test only: the Kafka broker is shared with other tests.
    live, replay = f"coinbase-{uuid.uuid4().hex[:8]}", f"replay-{uuid.uuid4().hex[:8]}"
    feed = FeedHealth(reconnects=2, gaps_detected=3, gaps_backfilled=3, backfilled_candles=61,
                        candles_produced=80, messages=1200, rate_limited=1, cross_check_mismatches=1,
                        missing_minutes=7, lost_minutes=2)  # fmt: skip
    feed_report = HealthReport(feed, live, ["BTC-USD", "ETH-USD"])
    replayed = HealthReport(FeedHealth(candles_produced=500, missing_minutes=4), replay, ["EURUSD"])
    reported_ns = time.time_ns()
    feed.last_message_ns = reported_ns - 2 * NS  # silent for 2 s when it reports
    _send(bus, [feed_report.output(), replayed.output()])

    collector = MetricsCollector(MetricsSettings(ingest_feed_stale_s=30, prometheus_port=0, database_url=""))
    consumer = bus.consumer(f"metrics-test-{uuid.uuid4().hex}")
    consumer.subscribe([METRICS_INGEST_HEALTH])

    def take(n: int) -> None:
        """The next `n` reports of this test's sources, handed to the collector."""
        mine: list[Record] = []
        deadline = time.monotonic() + 30
        while len(mine) < n and time.monotonic() < deadline:
            mine += [r for r in consumer.poll(100, 0.2) if r.key in (live.encode(), replay.encode())]
        assert len(mine) == n, f"{len(mine)} of {n} health reports arrived"
        for r in mine:
            assert list(collector.handle(r)) == []

    take(2)
    assert collector.unreadable == 0
    now = time.time_ns() + 5 * NS  # at least five seconds after the report: the silence has grown
    since_report = (now - reported_ns) / NS
    assert [a for a in _alerts(list(collector.on_time(now))) if live in a.message] == []
    values = _scrape(collector)
    age = values[("kstrade_ingest_last_message_age_seconds", (("source", live),))]
    assert age == pytest.approx(2 + since_report, abs=0.5)
    assert values[("kstrade_ingest_report_age_seconds", (("source", live),))] == pytest.approx(since_report, abs=0.5)
    print(f"{bus.transport}: report to collector evaluation {since_report - 5:.2f} s (+5 s added)")
    assert ("kstrade_ingest_last_message_age_seconds", (("source", replay),)) not in values  # no feed to age
    for name, value in [("reconnects", 2), ("gaps_detected", 3), ("gaps_backfilled", 3), ("backfilled_candles", 61),
                        ("candles_produced", 80), ("messages", 1200), ("rate_limited", 1),
                        ("cross_check_mismatches", 1), ("missing_minutes", 7), ("lost_minutes", 2)]:  # fmt: skip
        assert values[(f"kstrade_ingest_{name}_total", (("source", live),))] == value, name
    assert values[("kstrade_ingest_candles_produced_total", (("source", replay),))] == 500
    # Quiet and lost minutes are two series: a replay has quiet ones only.
    assert values[("kstrade_ingest_missing_minutes_total", (("source", replay),))] == 4
    assert values[("kstrade_ingest_lost_minutes_total", (("source", replay),))] == 0

    # The feed goes silent for 40 s (threshold 30): one CRITICAL alert, not one per evaluation.
    feed.last_message_ns = time.time_ns() - 40 * NS
    feed.reconnects = 5
    _send(bus, [feed_report.output()])
    take(1)
    now = time.time_ns()
    stale = [a for a in _alerts(list(collector.on_time(now))) if live in a.message]
    assert [(a.code, a.severity, a.source) for a in stale] == [("INGEST_FEED_STALE", Severity.CRITICAL, "metrics")]
    silent = re.search(r"no message from the exchange for (\d+) s", stale[0].message)
    assert silent is not None and 40 <= int(silent[1]) < 70 and "5 reconnect(s)" in stale[0].message, stale[0].message
    assert [a for a in _alerts(list(collector.on_time(now + NS))) if live in a.message] == []
    values = _scrape(collector)
    assert values[("kstrade_ingest_reconnects_total", (("source", live),))] == 5
    assert values[("kstrade_alerts_total", (("code", "INGEST_FEED_STALE"), ("severity", "CRITICAL")))] >= 1

    # A restarted ingest (new `started`) reports from zero; the feed is fresh again: resolved.
    restarted = FeedHealth(reconnects=0, candles_produced=3)
    restarted.last_message_ns = time.time_ns()
    _send(bus, [HealthReport(restarted, live, ["BTC-USD", "ETH-USD"]).output()])
    take(1)
    resolved = [a for a in _alerts(list(collector.on_time(time.time_ns()))) if live in a.message]
    assert [(a.code, a.severity) for a in resolved] == [("INGEST_FEED_STALE_RESOLVED", Severity.INFO)]
    values = _scrape(collector)
    assert values[("kstrade_ingest_reconnects_total", (("source", live),))] == 0
    assert values[("kstrade_ingest_candles_produced_total", (("source", live),))] == 3
    consumer.close()
    collector.close()


def test_a_feed_whose_reports_stop_goes_stale() -> None:
    # The ingest process died after its last report: no one says the feed is silent, so the
    # collector ages the last report by its own clock.
    bus = Bus.memory()
    make_topic(bus, METRICS_INGEST_HEALTH)
    health = FeedHealth(last_message_ns=time.time_ns())
    _send(bus, [HealthReport(health, "coinbase", ["BTC-USD"]).output()])
    collector = MetricsCollector(MetricsSettings(ingest_feed_stale_s=60, prometheus_port=0, database_url=""))
    consumer = bus.consumer("m")
    consumer.subscribe([METRICS_INGEST_HEALTH])
    for r in drain(consumer, 1):
        collector.handle(r)
    now = time.time_ns()
    assert _alerts(list(collector.on_time(now + 30 * NS))) == []
    late = _alerts(list(collector.on_time(now + 61 * NS)))
    assert [(a.code, a.severity) for a in late] == [("INGEST_FEED_STALE", Severity.CRITICAL)]
    collector.close()


def test_a_report_from_an_ingest_still_writing_v1_is_read_with_no_lost_minutes() -> None:
    """An ingest not yet upgraded writes IngestHealth v1 (no `lost_minutes`, its missing minutes
    count lost ones too): the collector reads it through schema resolution and exports the lost
    series at 0 beside them."""
    bus = Bus.memory()
    make_topic(bus, METRICS_INGEST_HEALTH)
    report = HealthReport(FeedHealth(candles_produced=9, missing_minutes=3), "coinbase", ["BTC-USD"])
    now = time.time_ns()
    v1 = report.message(now).model_dump(exclude={"lost_minutes"})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema_json("ingest_health", 1)), v1)
    headers = MessageHeaders(Codec(messages.IngestHealth).schema_name, 1, now, "ingest").to_kafka()
    _send(bus, [Output(METRICS_INGEST_HEALTH, body.getvalue(), key=b"coinbase", headers=headers)])
    collector = MetricsCollector(MetricsSettings(prometheus_port=0, database_url=""))
    consumer = bus.consumer("m")
    consumer.subscribe([METRICS_INGEST_HEALTH])
    for r in drain(consumer, 1):
        assert list(collector.handle(r)) == []
    assert collector.unreadable == 0
    values = _scrape(collector)
    assert values[("kstrade_ingest_candles_produced_total", (("source", "coinbase"),))] == v1["candles_produced"]
    assert values[("kstrade_ingest_missing_minutes_total", (("source", "coinbase"),))] == v1["missing_minutes"]
    assert values[("kstrade_ingest_lost_minutes_total", (("source", "coinbase"),))] == 0
    collector.close()
