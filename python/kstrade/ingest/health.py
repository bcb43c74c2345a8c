"""Ingest health counters, exposed for the metrics collector: how fresh the feed is, how often it
reconnected, which gaps it found and filled, and how many candles it produced."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass
class IngestHealth:
    """Counters since start. `snapshot()` is what the metrics collector reads."""

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
    #: Minutes with no candle (no trades, or not on the exchange either).
    missing_minutes: int = 0
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
