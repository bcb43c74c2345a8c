"""One product's closed 1m candles from live trades, with every untrusted window filled over REST.

Rules (the live half of "no minute lost, no duplicate candle"):
- A minute is built from trades only when the feed was connected and in sequence for the whole
  minute. It closes on the first trade of a later minute, or once an in-sequence message
  (heartbeats come every second) stamped by the exchange `grace_ms` after its end arrives:
  trades are batched every 250 ms and may arrive a little late, and a feed that went silent
  must not close a minute it may be missing.
  A trade for a minute already closed is counted and logged, never merged: a candle, once out,
  is never rewritten.
- An incident (sequence gap, disconnect, stall, start-up) drops the partial minute and marks the
  feed untrusted. On resubscription, minutes from the next whole minute on are trusted again;
  everything between the last candle handed out and that minute is a backfill window, fetched
  over REST once its last minute has closed (plus `rest_delay_ms` for the exchange to settle).
  An incident while a window is still pending or in flight replaces it with one from the same
  start (nothing was handed out meanwhile), and never reaches back before the warm-up floor.
- Live candles closed while a window is pending are held back and released after it, so
  candles always leave in time order (the aggregator refuses late minutes).
- A minute of a window in which the feed saw trades (the partial minute an incident dropped,
  trades that came while the feed was untrusted) must come back from REST. If it does not, the
  window is asked for again `rest_delay_ms` later; still missing, the minute is LOST: logged,
  handed to `take_lost` (the source raises INGEST_MINUTE_LOST on metrics.alerts), never
  silently dropped. The rest of the window is handed out either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from kstrade.features import Candle as NativeCandle
from kstrade.ingest.coinbase.messages import Trade
from kstrade.ingest.health import FeedHealth
from kstrade.schemas import CandleOrigin

log = logging.getLogger("kstrade.ingest.coinbase")

MINUTE_MS = 60_000


def minute_of(time_ms: int) -> int:
    return time_ms // MINUTE_MS * MINUTE_MS


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat()


def window_text(window: Window) -> str:
    """`[start, end)` of a window in ISO UTC, for logs."""
    return f"[{_iso(window.start_ms)}, {_iso(window.end_ms)})"


@dataclass
class _Building:
    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def add(self, price: float, size: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += size

    def candle(self) -> NativeCandle:
        return NativeCandle(self.open_ms, self.open, self.high, self.low, self.close, self.volume)


@dataclass(frozen=True)
class Window:
    """Minutes [start_ms, end_ms) to fetch over REST."""

    start_ms: int
    end_ms: int


class LiveMinutes:
    """Closed 1m candles of one product, in order, from trades and REST backfills."""

    def __init__(
        self,
        product: str,
        *,
        resume_after_ms: int | None,
        grace_ms: int = 5_000,
        rest_delay_ms: int = 5_000,
        health: FeedHealth | None = None,
    ) -> None:
        self.product = product
        self.grace_ms = grace_ms
        self.rest_delay_ms = rest_delay_ms
        self.health = health or FeedHealth()
        #: Open time of the newest candle handed out (or already on the topics).
        self.last_ms = resume_after_ms
        #: Newest minute built from trades (handed out or held), for spotting late trades.
        self._last_built_ms = resume_after_ms
        self._building: _Building | None = None
        #: Start of the warm-up (set by the start-up incident): no window reaches back before it.
        self._floor_ms: int | None = None
        self._trusted_from: int | None = None
        self._backfill_start: int | None = None
        self._window: Window | None = None
        self._held: list[NativeCandle] = []
        self._ready: list[NativeCandle] = []
        #: Open times of the candles in `_ready` that came from REST (the others: from trades).
        self._ready_rest: set[int] = set()
        #: Minutes after `last_ms` in which trades were seen that REST is to give (see rules).
        self._seen: set[int] = set()
        #: The window asked for again because REST lacked a seen minute, and when it is due.
        self._retried: Window | None = None
        self._retry_due_ms = 0
        self._lost: list[int] = []

    # -- incidents ---------------------------------------------------------------------------
    def incident(self, reason: str, *, start_floor_ms: int | None = None) -> None:
        """The feed can no longer be trusted (gap, disconnect, stall, start-up)."""
        if start_floor_ms is not None:
            self._floor_ms = start_floor_ms
        if self._building is not None:
            log.info(
                "coinbase %s: partial minute %s dropped (%s); REST will fill it",
                self.product,
                _iso(self._building.open_ms),
                reason,
            )
            self._seen.add(self._building.open_ms)
            self._building = None
        # Held live candles are inside the new window now: REST gives them again.
        self._held.clear()
        self._last_built_ms = self.last_ms
        # Nothing handed out yet (the start-up window still pending or in flight): from the
        # floor again, or the warm-up minutes would be dropped with the superseded window.
        start = self.last_ms + MINUTE_MS if self.last_ms is not None else self._floor_ms
        if self._floor_ms is not None and start is not None:
            start = max(start, self._floor_ms)
        if start is not None:
            self._backfill_start = start if self._backfill_start is None else min(self._backfill_start, start)
        self._trusted_from = None
        self._window = None

    def resubscribed(self, now_ms: int) -> None:
        """Subscribed again at `now_ms`: trades from the next whole minute on are complete."""
        trusted = minute_of(now_ms) + MINUTE_MS
        self._trusted_from = trusted
        if self._backfill_start is not None and self._backfill_start < trusted:
            self._window = Window(self._backfill_start, trusted)
        self._backfill_start = None

    # -- trades and time ---------------------------------------------------------------------
    def on_trade(self, trade: Trade) -> None:
        minute = minute_of(trade.time_ms)
        if self._trusted_from is None or minute < self._trusted_from:
            # Inside a backfill window (or before the first one): REST is the source, and must
            # have this minute.
            if self.last_ms is None or minute > self.last_ms:
                self._seen.add(minute)
            return
        if self._last_built_ms is not None and minute <= self._last_built_ms:
            self.health.rejected += 1
            log.warning(
                "coinbase %s: trade %s for closed minute %s ignored (late)", self.product, trade.trade_id, _iso(minute)
            )
            return
        b = self._building
        if b is not None and minute < b.open_ms:
            self.health.rejected += 1
            log.warning("coinbase %s: trade %s out of order, ignored", self.product, trade.trade_id)
            return
        if b is not None and minute > b.open_ms:
            self._close()
            b = None
        if b is None:
            self._building = _Building(minute, trade.price, trade.price, trade.price, trade.price, trade.size)
        else:
            b.add(trade.price, trade.size)

    def on_clock(self, alive_ms: int) -> None:
        """`alive_ms`: when the feed last proved it was connected and in sequence (any message,
        heartbeats included). Closes the open minute once that is past its end + grace."""
        b = self._building
        if b is not None and alive_ms >= b.open_ms + MINUTE_MS + self.grace_ms:
            self._close()

    def _close(self) -> None:
        assert self._building is not None
        candle = self._building.candle()
        self._building = None
        self._last_built_ms = candle.open_time_ms
        if self._window is not None:
            self._held.append(candle)
        else:
            self._ready.append(candle)
            self.last_ms = candle.open_time_ms

    # -- backfill ----------------------------------------------------------------------------
    def backfill_due(self, now_ms: int) -> Window | None:
        w = self._window
        if w is None:
            return None
        due = self._retry_due_ms if w == self._retried else w.end_ms + self.rest_delay_ms
        return w if now_ms >= due else None

    def on_backfill(self, window: Window, rest_candles: list[NativeCandle], now_ms: int = 0) -> None:
        """The REST candles of `window`: handed out in order, then the held live candles. A
        minute the feed saw trades in and REST lacks: the window is asked for again once, then
        the minute is LOST (see the module doc)."""
        if self._window != window:
            return  # superseded by a newer incident; its window covers this one
        by_minute = {c.open_time_ms: c for c in rest_candles if window.start_ms <= c.open_time_ms < window.end_ms}
        last = self.last_ms
        lacking = sorted(
            t for t in self._seen
            if window.start_ms <= t < window.end_ms and t not in by_minute and (last is None or t > last)
        )  # fmt: skip
        if lacking and self._retried != window:
            self._retried, self._retry_due_ms = window, now_ms + self.rest_delay_ms
            log.warning(
                "coinbase %s: REST has no candle for %d minute(s) with trades (%s): asking again",
                self.product, len(lacking), ", ".join(_iso(t) for t in lacking),
            )  # fmt: skip
            return
        for t in lacking:
            log.error(
                "coinbase %s: minute %s LOST: trades were seen in it, REST has no candle for it (asked twice)",
                self.product, _iso(t),
            )  # fmt: skip
        self._lost += lacking
        self._seen = {t for t in self._seen if t >= window.end_ms}
        self._retried = None
        fill = [by_minute[t] for t in sorted(by_minute) if self.last_ms is None or t > self.last_ms]
        self._ready += fill
        self._ready_rest.update(c.open_time_ms for c in fill)
        self._ready += self._held
        self._held = []
        if self._ready:
            self.last_ms = self._ready[-1].open_time_ms
        self._window = None
        self.health.gaps_backfilled += 1
        self.health.backfilled_candles += len(fill)
        log.info("coinbase %s: backfilled %d candle(s) for %s", self.product, len(fill), window_text(window))

    def take(self) -> list[NativeCandle]:
        return [c for c, _ in self.take_with_origin()]

    def take_with_origin(self) -> list[tuple[NativeCandle, CandleOrigin]]:
        """The candles ready to hand out, in order, each with where it came from."""
        out, self._ready = self._ready, []
        rest, self._ready_rest = self._ready_rest, set()
        return [(c, CandleOrigin.REST if c.open_time_ms in rest else CandleOrigin.TRADES) for c in out]

    def take_lost(self) -> list[int]:
        """Open times of minutes found LOST since the last call."""
        out, self._lost = self._lost, []
        return out

    @property
    def pending_window(self) -> Window | None:
        return self._window
