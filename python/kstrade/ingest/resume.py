"""Where ingest left off: the newest candle on each `market.candles.{symbol}.{interval}` topic,
and the recent 1m candles needed to rebuild the 5m/15m/1h bars that were still open.

The topics themselves are the record of what was produced (no side file that could disagree
with them), so a restart after any crash, even one between writing a 1m candle and the bars it
closed, neither duplicates nor skips a candle.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from kstrade.bus import Admin, Bus, BusError
from kstrade.bus.topics import INGEST_RESUME_GROUPS, INTERVALS, candles
from kstrade.features import Candle as NativeCandle
from kstrade.ingest.rollup import INTERVAL_MS
from kstrade.retry import Backoff, retry
from kstrade.schemas import Candle, Codec, CodecError

log = logging.getLogger("kstrade.ingest")

#: 1m candles re-read before the newest one at least: the hour still open and the one before.
REBUILD_MS = 2 * INTERVAL_MS["1h"]


@dataclass
class ResumePoint:
    """What one symbol's topics already hold."""

    symbol: str
    #: Open time (ms) of the newest candle per interval; absent: the topic is empty.
    last_open_ms: dict[str, int] = field(default_factory=dict)
    #: The 1m candles needed to rebuild every bar not yet on its topic, oldest first: from two
    #: hours before the newest 1m, or from where the most lagging higher topic's next bar opens.
    recent_1m: list[NativeCandle] = field(default_factory=list)

    @property
    def last_1m_ms(self) -> int | None:
        return self.last_open_ms.get("1m")


#: Topics created a moment ago (the first start of ingest) may have no partition leader yet, and
#: Kafka answers NotLeaderForPartition: asked again for up to about 10 s.
_LEADERS = Backoff(initial=0.1, max_delay=2.0, attempts=8)


def _end_offsets(admin: Admin, topic: str, timeout: float) -> list[int]:
    def on_retry(n: int, exc: BaseException, delay: float) -> None:
        log.info("ingest resume: end offsets of %s not available yet (%s); retry %d in %.2fs", topic, exc, n, delay)

    return retry(lambda: admin.end_offsets(topic, timeout), _LEADERS, retry_on=(BusError,), on_retry=on_retry)


def _read_all(bus: Bus, topics: list[str], timeout: float) -> dict[str, list[Candle]]:
    """Every candle on `topics`, read with a throwaway group (commits nothing)."""
    admin = bus.admin()
    existing = set(admin.list_topics(timeout))
    present = [t for t in topics if t in existing]
    out: dict[str, list[Candle]] = {t: [] for t in topics}
    ends: dict[tuple[str, int], int] = {}
    for t in present:
        for partition, end in enumerate(_end_offsets(admin, t, timeout)):
            if end > 0:
                ends[(t, partition)] = end
    if not ends:
        return out
    codec = Codec(Candle)
    consumer = bus.consumer(f"{INGEST_RESUME_GROUPS}{uuid.uuid4().hex}")
    try:
        consumer.subscribe(sorted({t for t, _ in ends}))
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the candle topics to their end within {timeout}s: {sorted(ends)}")
            for record in consumer.poll(max_records=5000, timeout=0.2):
                tp = (record.topic, record.partition)
                try:
                    message = codec.decode_record(record)
                except CodecError as exc:
                    log.warning(
                        "ingest resume: skipping undecodable record %s@%d: %s", record.topic, record.offset, exc
                    )
                else:
                    assert isinstance(message, Candle)
                    out[record.topic].append(message)
                if tp in ends and record.offset + 1 >= ends[tp]:
                    del ends[tp]
    finally:
        consumer.close()
    return out


def _open_ms(c: Candle) -> int:
    return int(c.timestamp.timestamp() * 1000)


def resume_points(bus: Bus, symbols: Iterable[str], timeout: float = 30.0) -> dict[str, ResumePoint]:
    """Each symbol's resume point, read from the candle topics."""
    symbols = list(symbols)
    topics = [candles(s, i) for s in symbols for i in INTERVALS]
    read = _read_all(bus, topics, timeout)
    points: dict[str, ResumePoint] = {}
    for s in symbols:
        point = ResumePoint(s)
        for i in INTERVALS:
            got = [_open_ms(c) for c in read[candles(s, i)] if c.symbol == s]
            if got:
                point.last_open_ms[i] = max(got)
        last = point.last_1m_ms
        if last is not None:
            # A higher bar missing from its topic (a crash before its flush) opens at or after
            # the next bar of that topic; an empty higher topic: rebuild from the first minute.
            start = last - REBUILD_MS
            for i in INTERVALS[1:]:
                lagging = point.last_open_ms.get(i)
                start = min(start, lagging + INTERVAL_MS[i] if lagging is not None else -(2**62))
            recent = {_open_ms(c): c for c in read[candles(s, "1m")] if c.symbol == s and _open_ms(c) >= start}
            point.recent_1m = [
                NativeCandle(t, c.open, c.high, c.low, c.close, c.volume) for t, c in sorted(recent.items())
            ]
            log.info(
                "ingest %s: resuming after %s",
                s,
                ", ".join(f"{i}@{point.last_open_ms[i]}" for i in INTERVALS if i in point.last_open_ms),
            )
        points[s] = point
    return points
