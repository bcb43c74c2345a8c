"""Ingest health counters, exposed for the metrics collector: how fresh the feed is, how often it
reconnected, which gaps it found and filled, and how many candles it produced.

`HealthReport` turns a source's `FeedHealth` into `IngestHealth` messages on `metrics.ingest_health` (keyed by
source), which the ingest service publishes every few seconds of wall time and at shutdown.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

from kstrade.bus import Output
from kstrade.bus.topics import METRICS_INGEST_HEALTH
from kstrade.schemas import Codec
from kstrade.schemas import models as messages

#: Wall seconds between two health messages of a running ingest service.
HEALTH_EVERY_S = 10.0
STAGE = "ingest"


@dataclass
class FeedHealth:
    """One ingest source's counters since start (the process side; the message it becomes on
    metrics.ingest_health is `schemas.models.IngestHealth`)."""

    #: Wall time (ns) of the last message from the exchange (any channel, heartbeats included).
    last_message_ns: int = 0
    messages: int = 0
    reconnects: int = 0
    #: Incidents: a sequence jump, a disconnect, a stall, a missing window at start-up.
    gaps_detected: int = 0
    #: Incidents whose window was filled over REST.
    gaps_backfilled: int = 0
    backfilled_candles: int = 0
    candles_produced: int = 0
    #: Quiet minutes: no candle, and no trade seen in them (the exchange's truth).
    missing_minutes: int = 0
    #: Lost minutes: the live feed saw trades in them and REST never returned a candle; each
    #: one raised INGEST_MINUTE_LOST. Never counted as quiet.
    lost_minutes: int = 0
    incomplete_bars: int = 0
    duplicates: int = 0
    #: Candles the aggregator refused (late or conflicting): logged, never emitted.
    rejected: int = 0
    malformed_messages: int = 0
    unknown_channels: int = 0
    rate_limited: int = 0
    #: 5m bars built from 1m that matched / differed from the exchange's `candles` channel.
    cross_checked: int = 0
    cross_check_mismatches: int = 0

    def last_message_age_s(self, now_ns: int | None = None) -> float | None:
        if self.last_message_ns == 0:
            return None
        now = time.time_ns() if now_ns is None else now_ns
        return max(0.0, (now - self.last_message_ns) / 1e9)

    def snapshot(self, now_ns: int | None = None) -> dict[str, float | int | None]:
        data: dict[str, float | int | None] = dict(asdict(self))
        data["last_message_age_s"] = self.last_message_age_s(now_ns)
        return data


#: The counters a message carries: every field but the raw timestamp (sent as an age instead).
COUNTERS = tuple(f.name for f in fields(FeedHealth) if f.name != "last_message_ns")


class HealthReport:
    """One ingest process's health as messages for `metrics.ingest_health`, due every `every_s`
    seconds of wall time. `started` travels with every message, so the collector can tell a
    restarted process (counters from zero again) from counters going backwards."""

    def __init__(self, health: FeedHealth, source: str, symbols: list[str], *, every_s: float = HEALTH_EVERY_S) -> None:
        self.health = health
        self.source = source
        self.symbols = list(symbols)
        self.every_s = every_s
        self.started_ns = time.time_ns()
        self._codec = Codec(messages.IngestHealth)
        self._next = time.monotonic() + every_s

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def skip(self) -> None:
        """The report due now is not sent: the next one is due `every_s` from now."""
        self._next = time.monotonic() + self.every_s

    def message(self, now_ns: int) -> messages.IngestHealth:
        counters = {name: getattr(self.health, name) for name in COUNTERS}
        return messages.IngestHealth(
            timestamp=datetime.fromtimestamp(now_ns / 1e9, tz=UTC),
            source=self.source,
            symbols=self.symbols,
            started=datetime.fromtimestamp(self.started_ns / 1e9, tz=UTC),
            last_message_age_s=self.health.last_message_age_s(now_ns),
            **counters,
        )

    def output(self) -> Output:
        """The health as of now, and the next one due `every_s` from now."""
        now_ns = time.time_ns()
        self._next = time.monotonic() + self.every_s
        return Output(
            METRICS_INGEST_HEALTH,
            self._codec.encode(self.message(now_ns)),
            key=self.source.encode(),
            headers=self._codec.headers(now_ns, STAGE),
        )
