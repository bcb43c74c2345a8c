"""The ingest service loop: resume from the candle topics, then produce each instant of a source
to the bus and flush it before taking the next, so a crash loses at most the instant in flight,
which the next start rebuilds from the topics (see `kstrade.ingest.resume`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from kstrade.bus import Bus
from kstrade.bus.topics import INTERVALS, TopicSpec, candles, create_all
from kstrade.stage import Source

log = logging.getLogger("kstrade.ingest")


def ensure_candle_topics(bus: Bus, symbols: Iterable[str], replication_factor: int = 1) -> None:
    """Create the four candle topics of each symbol if they do not exist yet."""
    specs = [TopicSpec(candles(s, i), replication_factor=replication_factor) for s in symbols for i in INTERVALS]
    create_all(bus.admin(), specs)


def run_ingest(bus: Bus, source: Source, stop: threading.Event | None = None, max_batches: int | None = None) -> int:
    """Produce `source` to `bus` until it is exhausted, `stop` is set or `max_batches` were sent.
    Every batch is flushed (delivery confirmed) before the next is asked for. Returns batches."""
    producer = bus.producer()
    batches = 0
    while (stop is None or not stop.is_set()) and (max_batches is None or batches < max_batches):
        batch = source.next_batch()
        if batch is None:
            break
        for out in batch:
            producer.send(out.topic, out.value, key=out.key, headers=out.headers)
        producer.flush()
        batches += 1
    producer.flush()
    return batches
