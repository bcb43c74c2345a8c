"""The ingest service loop: resume from the candle topics, then produce the instants of a source
to the bus, flushing (delivery confirmed) every `flush_every` instants and whenever the source
is idle. A crash loses at most the unflushed instants, which the next start rebuilds from the
topics (see `kstrade.ingest.resume`): live and paced replays flush every instant, a replay at
full speed every 1000 (a Kafka flush costs a delivery round trip). A cluster that is away is
waited out at each flush (`kstrade.bus.runner.deliver`): the source waits with it, and ingest
goes on where it was once the cluster acknowledges what it holds.

A source with `health` also gets its health published on `metrics.ingest_health` every
`health_every_s` of wall time and once at shutdown (`HealthPublisher`): a health message that
cannot be delivered is logged, and never holds up or fails the candles."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from kstrade.bus import Bus, BusError
from kstrade.bus.runner import deliver
from kstrade.bus.topics import INTERVALS, METRICS_ALERTS, METRICS_INGEST_HEALTH, TopicSpec, candles, create_all
from kstrade.codes import BusCode
from kstrade.ingest.health import HEALTH_EVERY_S, FeedHealth, HealthReport
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
    if not isinstance(health, FeedHealth):
        return None
    return HealthReport(
        health, str(getattr(source, "source_name", source.name)), list(getattr(source, "symbols", [])), every_s=every_s
    )


class HealthPublisher:
    """Sends a `HealthReport` when it is due, through a producer of its own, and never waits for
    it: the report goes to the producer's thread, and the next due one looks at how the last
    fared. While the last is not acknowledged (the cluster away), a new one is not queued behind
    it (each supersedes the last: queueing them would only grow memory), and is counted in
    `skipped`. A report stuck longer than `stale_after_s` (a client that stays stuck on a
    partition after the cluster came back) is dropped with its client: the next goes on a new one
    (`renewed`). Only the last report, at shutdown, is waited for, up to `final_flush_s`."""

    def __init__(
        self,
        bus: Bus,
        report: HealthReport,
        *,
        stale_after_s: float | None = None,
        final_flush_s: float = 10.0,
    ) -> None:
        self.bus = bus
        self.report = report
        self.stale_after_s = max(3 * report.every_s, 30.0) if stale_after_s is None else stale_after_s
        self.final_flush_s = final_flush_s
        self.producer = bus.producer()
        self.sent_at: float | None = None  # monotonic time of the last report sent
        self.skipped = 0
        self.renewed = 0
        self._waiting_logged = False

    def tick(self) -> None:
        """Publish if a report is due (a few microseconds when none is)."""
        if self.report.due():
            self.publish()

    def publish(self, *, final: bool = False) -> bool:
        """Queue the health as of now unless the last report is still on its way (the `final`
        one, at shutdown, is queued behind it); True if queued."""
        self._settle()
        if self.producer.in_flight:
            waited = time.monotonic() - (self.sent_at or 0.0)
            if waited >= self.stale_after_s:
                # Stuck: the old client (and its report, superseded anyway) goes; a new one takes over.
                self.producer = self.bus.producer()
                self.renewed += 1
                log.warning("ingest: health report stuck for %.0f s: dropped, sending on a new client", waited)
            elif not final:
                self.report.skip()
                self.skipped += 1
                if not self._waiting_logged:
                    self._waiting_logged = True
                    log.warning("ingest: health report not acknowledged after %.0f s: skipping later ones", waited)
                return False
        out = self.report.output()
        try:
            self.producer.send(out.topic, out.value, key=out.key, headers=out.headers)
        except BusError as exc:
            log.warning("ingest: health report on %s not sent: %s", out.topic, exc)
            return False
        self.sent_at = time.monotonic()
        return True

    def _settle(self) -> None:
        """Note what the producer's thread did with the last report, without waiting."""
        try:
            self.producer.flush(0.0)
        except BusError as exc:
            if exc.code == BusCode.TIMEOUT:
                return  # still on its way
            log.warning("ingest: health report on %s not delivered: %s", METRICS_INGEST_HEALTH, exc)
            self.producer.take_failed()  # superseded by the next report: not sent again
        if not self.producer.in_flight and self._waiting_logged:
            self._waiting_logged = False
            log.info("ingest: health reports acknowledged again (%d skipped meanwhile)", self.skipped)

    def close(self) -> None:
        """The last word: the health as it is now, waited for up to `final_flush_s`."""
        self.publish(final=True)
        try:
            self.producer.flush(self.final_flush_s)
        except BusError as exc:
            log.warning("ingest: last health report on %s not delivered: %s", METRICS_INGEST_HEALTH, exc)


def run_ingest(
    bus: Bus,
    source: Source,
    stop: threading.Event | None = None,
    max_batches: int | None = None,
    flush_every: int | None = None,
    health_every_s: float = HEALTH_EVERY_S,
    health_bus: Bus | None = None,
) -> int:
    """Produce `source` to `bus` until it is exhausted, `stop` is set or `max_batches` were sent.
    `flush_every` defaults to the source's `flush_every` (1 if it has none). The source's health
    goes to `health_bus` (default: `bus`). Returns batches."""
    every = flush_every or int(getattr(source, "flush_every", 1))
    producer = bus.producer()
    report = health_report(source, health_every_s)
    health = HealthPublisher(health_bus or bus, report) if report is not None else None
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
            if health is not None:
                health.tick()
        deliver(producer)
    finally:
        # The last word, also after a failure: what the counters were when ingest stopped.
        if health is not None:
            health.close()
    return batches
