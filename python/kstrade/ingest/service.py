"""The ingest service loop: resume from the candle topics, then produce the instants of a source
to the bus, flushing (delivery confirmed) every `flush_every` instants and whenever the source
is idle. A crash loses at most the unflushed instants, which the next start rebuilds from the
topics (see `kstrade.ingest.resume`): live and paced replays flush every instant, a replay at
full speed every 1000 (a Kafka flush costs a delivery round trip)."""

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


def run_ingest(
    bus: Bus,
    source: Source,
    stop: threading.Event | None = None,
    max_batches: int | None = None,
    flush_every: int | None = None,
) -> int:
    """Produce `source` to `bus` until it is exhausted, `stop` is set or `max_batches` were sent.
    `flush_every` defaults to the source's `flush_every` (1 if it has none). Returns batches."""
    every = flush_every or int(getattr(source, "flush_every", 1))
    producer = bus.producer()
    batches = 0
    unflushed = 0
    while (stop is None or not stop.is_set()) and (max_batches is None or batches < max_batches):
        batch = source.next_batch()
        if batch is None:
            break
        for out in batch:
            producer.send(out.topic, out.value, key=out.key, headers=out.headers)
        batches += 1
        unflushed += 1
        if unflushed >= every or not batch:
            producer.flush()
            unflushed = 0
    producer.flush()
    return batches
