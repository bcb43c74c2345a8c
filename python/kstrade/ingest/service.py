"""The ingest service loop: resume from the candle topics, then produce the instants of a source
to the bus, flushing (delivery confirmed) every `flush_every` instants and whenever the source
is idle. A crash loses at most the unflushed instants, which the next start rebuilds from the
topics (see `kstrade.ingest.resume`): live and paced replays flush every instant, a replay at
full speed every 1000 (a Kafka flush costs a delivery round trip). A cluster that is away is
waited out at each flush (`kstrade.bus.runner.deliver`): the source waits with it, and ingest
goes on where it was once the cluster acknowledges what it holds.

A source with `health` also gets its health published on `metrics.ingest_health` every
`health_every_s` of wall time and once at shutdown, through a producer of its own: a health
message that cannot be delivered is logged, and never holds up or fails the candles."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from kstrade.bus import Bus, BusError, Producer
from kstrade.bus.runner import deliver
from kstrade.bus.topics import INTERVALS, METRICS_ALERTS, METRICS_INGEST_HEALTH, TopicSpec, candles, create_all
from kstrade.ingest.health import HEALTH_EVERY_S, HealthReport, IngestHealth
from kstrade.stage import Source

log = logging.getLogger("kstrade.ingest")


def ensure_candle_topics(bus: Bus, symbols: Iterable[str], replication_factor: int = 1) -> None:
    """Create the four candle topics of each symbol, and the metrics topics ingest reports to
    (its health, and alerts such as a 5m cross-check mismatch), if they do not exist yet."""
    names = [candles(s, i) for s in symbols for i in INTERVALS] + [METRICS_INGEST_HEALTH, METRICS_ALERTS]
    create_all(bus.admin(), [TopicSpec(name, replication_factor=replication_factor) for name in names])


def health_report(source: Source, every_s: float = HEALTH_EVERY_S) -> HealthReport | None:
    """The health report of a source that keeps `health` (the Coinbase feed and the replay)."""
    health = getattr(source, "health", None)
    if not isinstance(health, IngestHealth):
        return None
    return HealthReport(
        health, str(getattr(source, "source_name", source.name)), list(getattr(source, "symbols", [])), every_s=every_s
    )


def _publish_health(producer: Producer, report: HealthReport) -> None:
    out = report.output()
    try:
        producer.send(out.topic, out.value, key=out.key, headers=out.headers)
        producer.flush(10.0)
    except BusError as exc:
        log.warning("ingest: health report on %s not delivered: %s", out.topic, exc)


def run_ingest(
    bus: Bus,
    source: Source,
    stop: threading.Event | None = None,
    max_batches: int | None = None,
    flush_every: int | None = None,
    health_every_s: float = HEALTH_EVERY_S,
) -> int:
    """Produce `source` to `bus` until it is exhausted, `stop` is set or `max_batches` were sent.
    `flush_every` defaults to the source's `flush_every` (1 if it has none). Returns batches."""
    every = flush_every or int(getattr(source, "flush_every", 1))
    producer = bus.producer()
    report = health_report(source, health_every_s)
    health_producer = bus.producer() if report is not None else None
    batches = 0
    unflushed = 0
    try:
        while (stop is None or not stop.is_set()) and (max_batches is None or batches < max_batches):
            batch = source.next_batch()
            if batch is None:
                break
            for out in batch:
                producer.send(out.topic, out.value, key=out.key, headers=out.headers)
            batches += 1
            unflushed += 1
            if unflushed >= every or not batch:
                deliver(producer, meanwhile="the source waits")  # a cluster away is waited out
                unflushed = 0
            if report is not None and health_producer is not None and report.due():
                _publish_health(health_producer, report)
        deliver(producer)
    finally:
        # The last word, also after a failure: what the counters were when ingest stopped.
        if report is not None and health_producer is not None:
            _publish_health(health_producer, report)
    return batches
