"""Closed 1m candles of one symbol in, closed 1m/5m/15m/1h candle messages out.

The aggregation itself is the native `CandleAggregator` (duplicate, correction, late and gap
policies are decided there); this module only turns its results into `market.candles.*` outputs,
counts what it saw, and never re-emits a candle at or before the resume point of its topic.
Every candle it emits states how many 1m candles it was built from (`minutes`: 1 for a 1m
candle, fewer than 5/15/60 for an incomplete bar), and a 1m candle where it came from
(`origin`, when the source says: trades or a REST backfill).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kstrade._native import MarketError
from kstrade.bus import Output
from kstrade.bus.topics import INTERVALS, candles
from kstrade.codes import MarketCode
from kstrade.features import Candle as NativeCandle
from kstrade.features import CandleAggregator, ClosedBar
from kstrade.ingest.health import FeedHealth
from kstrade.schemas import Candle, CandleOrigin, Codec
from kstrade.schemas.codec import HEADER_ORIGIN_NS

log = logging.getLogger("kstrade.ingest")

MINUTE_MS = 60_000
INTERVAL_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS, "1h": 60 * MINUTE_MS}
STAGE = "ingest"


def candle_message(
    symbol: str,
    interval: str,
    c: NativeCandle,
    source: str,
    minutes: int | None = None,
    origin: CandleOrigin | None = None,
) -> Candle:
    return Candle(
        timestamp=datetime.fromtimestamp(c.open_time_ms / 1000, tz=UTC),
        symbol=symbol,
        interval=interval,  # checked by the Literal on the model
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
        source=source,
        minutes=minutes,
        origin=origin,
    )


def close_time_ns(open_time_ms: int, interval: str) -> int:
    """The standard `origin_ns` of a candle: the instant it closed."""
    return (open_time_ms + INTERVAL_MS[interval]) * 1_000_000


@dataclass
class MultiTimeframeCandles:
    """One symbol's closed candles on all four timeframes.

    `resume_after[interval]` is the open time of the newest candle already on that topic (from
    `kstrade.ingest.resume`): anything at or before it is recomputed but not emitted again, so
    replaying the tail of the 1m topic after a restart rebuilds the open 5m/15m/1h bars and
    emits only the bars a crash left unwritten.
    """

    symbol: str
    source: str
    health: FeedHealth = field(default_factory=FeedHealth)
    resume_after: dict[str, int] = field(default_factory=dict)
    codec: Codec = field(default_factory=lambda: Codec(Candle))
    #: Told of every higher bar emitted (the live feed cross-checks 5m bars with it).
    on_bar: Callable[[str, ClosedBar], None] | None = None

    def __post_init__(self) -> None:
        self._aggregator = CandleAggregator()
        self._key = self.symbol.encode()
        self._topics = {i: candles(self.symbol, i) for i in INTERVALS}
        self._headers = self.codec.headers(0, STAGE)
        self._origin_at = [name for name, _ in self._headers].index(HEADER_ORIGIN_NS)
        # The native Candle already checked OHLC and finiteness, and symbol and interval are
        # fixed: encode the Avro value directly instead of validating a pydantic model per
        # candle (3x the replay throughput). `candle_message` builds the same message.
        self._direct = self.codec.format == "avro"
        #: Open times of LOST minutes (`lost`) whose gap has not closed yet.
        self._lost: set[int] = set()

    def lost(self, open_time_ms: int) -> None:
        """A minute the live feed found LOST (trades seen, no candle from REST): counted as lost
        now, and left out of the quiet minutes when the candle after the gap arrives. Must be
        told before that candle is pushed."""
        self.health.lost_minutes += 1
        self._lost.add(open_time_ms)

    def output(
        self,
        interval: str,
        c: NativeCandle,
        source: str,
        minutes: int | None = None,
        origin: CandleOrigin | None = None,
    ) -> Output:
        """One candle message: `minutes` 1m candles it was built from and, for a 1m candle, its
        `origin` (None: not stated)."""
        if self._direct:
            value = self.codec.encode_value(
                {
                    "timestamp": c.open_time_ms * 1000,
                    "symbol": self.symbol,
                    "interval": interval,
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                    "source": source,
                    "minutes": minutes,
                    "origin": origin,
                }
            )
        else:
            value = self.codec.encode(candle_message(self.symbol, interval, c, source, minutes, origin))
        headers = list(self._headers)
        headers[self._origin_at] = (HEADER_ORIGIN_NS, str(close_time_ns(c.open_time_ms, interval)).encode())
        return Output(self._topics[interval], value, key=self._key, headers=headers)

    def _fresh(self, interval: str, open_time_ms: int) -> bool:
        last = self.resume_after.get(interval)
        return last is None or open_time_ms > last

    def push(self, candle: NativeCandle, origin: CandleOrigin | None = None) -> list[Output]:
        """A closed 1m candle (from `origin`, if the source knows): itself and every higher bar
        it closes, as outputs (maybe none)."""
        try:
            result = self._aggregator.push(candle)
        except MarketError as exc:
            # A correction after the fact or a late minute: never rewritten, never fatal.
            self.health.rejected += 1
            code = getattr(exc, "code", MarketCode.MARKET_ERROR)
            log.warning("ingest %s: 1m candle at %d rejected (%s): %s", self.symbol, candle.open_time_ms, code, exc)
            return []
        if result is None:
            self.health.duplicates += 1
            return []
        missing, closed = result
        outputs: list[Output] = []
        if missing and self._fresh("1m", candle.open_time_ms):
            gap_from = candle.open_time_ms - missing * MINUTE_MS
            lost = sum(1 for t in self._lost if gap_from <= t < candle.open_time_ms)
            self.health.missing_minutes += missing - lost  # quiet: lost ones were counted by `lost`
            log.warning(
                "ingest %s: %d minute(s) without a candle before %s (%d quiet, %d lost)",
                self.symbol, missing, _iso(candle.open_time_ms), missing - lost, lost,
            )  # fmt: skip
        if self._lost:
            # A later gap starts after this candle: older LOST minutes are settled.
            self._lost = {t for t in self._lost if t > candle.open_time_ms}
        if self._fresh("1m", candle.open_time_ms):
            outputs.append(self.output("1m", candle, self.source, 1, origin))
        for bar in closed:
            if self._fresh(bar.interval, bar.candle.open_time_ms):
                if not bar.complete:
                    self.health.incomplete_bars += 1
                    log.info(
                        "ingest %s: %s bar at %s closed with %d of %d minutes",
                        self.symbol,
                        bar.interval,
                        _iso(bar.candle.open_time_ms),
                        bar.minutes,
                        bar.expected,
                    )
                outputs.append(self.output(bar.interval, bar.candle, "aggregated", bar.minutes))
                if self.on_bar is not None:
                    self.on_bar(self.symbol, bar)
        self.health.candles_produced += len(outputs)
        return outputs


def _iso(open_time_ms: int) -> str:
    return datetime.fromtimestamp(open_time_ms / 1000, tz=UTC).isoformat()
