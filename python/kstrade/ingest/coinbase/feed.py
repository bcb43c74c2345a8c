"""The live Coinbase Advanced Trade feed as a `Source`: a WebSocket client on its own asyncio
thread (market_trades + heartbeats, optionally candles), 1m candles from trades, and every
incident (sequence gap, disconnect, stall, start-up) repaired by reconnecting with backoff and
jitter, resubscribing, and backfilling the missing minutes over REST.

The pipeline side stays synchronous: `next_batch()` hands over the candles closed since the last
call, through `MultiTimeframeCandles`, so 5m/15m/1h come from the same native aggregator as in
replay. With the `candles` channel on, each complete 5m bar is checked against the exchange's own
5m candle; a mismatch is counted, and raised as a WARNING on `metrics.alerts` naming the symbol,
the bar and both values. The bar already published is never rewritten: our 5m bars are built
from the same 1m candles consumers already have, and a 5m topic that disagreed with its own 1m
topic would be worse than one that disagrees with the exchange's summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import websockets

from kstrade.bus import Output
from kstrade.bus.topics import METRICS_ALERTS
from kstrade.clock import Clock, WallClock
from kstrade.codes import AlertCode
from kstrade.config import CoinbaseSettings
from kstrade.features import Candle as NativeCandle
from kstrade.features import ClosedBar
from kstrade.ingest.coinbase.messages import (
    CandlesEvent,
    ChannelCandle,
    FeedError,
    FeedMessageError,
    Heartbeat,
    Subscriptions,
    TradesEvent,
    UnknownChannel,
    parse_with_time,
)
from kstrade.ingest.coinbase.minutes import MINUTE_MS, LiveMinutes, Window, minute_of, window_text
from kstrade.ingest.coinbase.rest import CandlesRest
from kstrade.ingest.health import FeedHealth
from kstrade.ingest.resume import ResumePoint
from kstrade.ingest.rollup import MultiTimeframeCandles, close_time_ns
from kstrade.retry import Backoff
from kstrade.schemas import Alert, CandleOrigin
from kstrade.schemas.models import Severity
from kstrade.stage import Source

log = logging.getLogger("kstrade.ingest.coinbase")

#: How often the feed thread checks the clock (minute closes, due backfills).
TICK_S = 0.02
#: Coinbase drops a connection that has not subscribed within 5 s.
SUBSCRIBE_WITHIN_S = 5.0


class _Reconnect(Exception):
    """Leave the current connection and start a new one (after backoff)."""


class CoinbaseFeed:
    """The WebSocket side. Closed 1m candles per product land in `out` in time order."""

    def __init__(
        self,
        products: list[str],
        settings: CoinbaseSettings,
        *,
        resume: Mapping[str, ResumePoint] | None = None,
        clock: Clock | None = None,
        health: FeedHealth | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.products = products
        self.settings = settings
        self.clock = clock or WallClock()  # market time: minute closes and backfill due dates
        self.health = health or FeedHealth()
        self.rng = rng or random.Random()
        self.out: queue.Queue[tuple[str, list[tuple[NativeCandle, CandleOrigin]]]] = queue.Queue()
        #: (product, minute open time) of minutes found LOST (`LiveMinutes`), for the source.
        self.lost: queue.Queue[tuple[str, int]] = queue.Queue()
        resume = resume or {}
        self.minutes = {
            p: LiveMinutes(
                p,
                resume_after_ms=(resume[p].last_1m_ms if p in resume else None),
                grace_ms=settings.grace_ms,
                rest_delay_ms=settings.rest_delay_ms,
                health=self.health,
            )
            for p in products
        }
        self.rest = CandlesRest(settings.rest_url, health=self.health)
        self.backoff = Backoff(
            initial=settings.reconnect_initial_s, max_delay=settings.reconnect_max_s, jitter=0.3, attempts=None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backfilling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: After a failed backfill (retries exhausted), the wall time before asking again.
        self._backfill_not_before: dict[str, float] = {}
        self._backfill_delays = {p: self.backoff.delays(self.rng) for p in products}
        #: Market time of the newest in-sequence message: a minute closes on the timer only once
        #: the feed has proven alive past its end + grace (a silent stall must not close it).
        self._alive_ms: int | None = None
        self.connected = threading.Event()
        #: Wall (monotonic) time the current session became trusted; None: not (yet).
        self._trusted_at: float | None = None
        #: The `candles` channel's newest 5m candle per (product, start); read by the source.
        self.channel_5m: dict[tuple[str, int], ChannelCandle] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        now = self.clock.now_ns() // 1_000_000
        floor = minute_of(now - int(self.settings.warmup_hours * 3_600_000))
        for p, m in self.minutes.items():
            if m.last_ms is not None and m.last_ms + MINUTE_MS < floor:
                log.warning(
                    "coinbase %s: last candle on the topics is older than the warm-up window; "
                    "minutes before %s are not backfilled",
                    p,
                    datetime.fromtimestamp(floor / 1000, tz=UTC).isoformat(),
                )
            m.incident("start-up", start_floor_ms=floor)
        self._thread = threading.Thread(target=self._run_thread, name="coinbase-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.rest.close()

    def _run_thread(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        ticker = asyncio.create_task(self._tick())
        try:
            await self._connect_forever()
        finally:
            ticker.cancel()

    # -- connection --------------------------------------------------------------------------
    async def _connect_forever(self) -> None:
        delays = self.backoff.delays(self.rng)
        first = True
        while not self._stop.is_set():
            if not first:
                delay = next(delays)
                self.health.reconnects += 1
                log.warning("coinbase: reconnecting in %.2fs (reconnect #%d)", delay, self.health.reconnects)
                await self._sleep(delay)
                if self._stop.is_set():
                    return
            first = False
            self._trusted_at = None
            try:
                await self._session()
            except _Reconnect as exc:
                self._incident(str(exc))
            except (OSError, websockets.exceptions.WebSocketException, TimeoutError) as exc:
                self._incident(f"disconnected: {exc!r}")
            except Exception as exc:
                # A bug or an input nobody foresaw must not end the feed: log it, treat it as an
                # incident (REST fills the minutes), reconnect.
                log.exception("coinbase: unexpected error in the feed")
                self._incident(f"unexpected error: {exc!r}")
            # A session ends only in an incident (or the stop): one that streamed trusted data
            # long enough first was healthy, and the next reconnect starts the backoff afresh.
            trusted_at = self._trusted_at
            if trusted_at is not None and time.monotonic() - trusted_at >= self.settings.reconnect_reset_after_s:
                delays = self.backoff.delays(self.rng)

    async def _sleep(self, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while not self._stop.is_set():
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    def _incident(self, reason: str) -> None:
        self.connected.clear()
        self.health.gaps_detected += 1
        log.warning("coinbase: %s; feed untrusted until resubscribed, missing minutes go to REST", reason)
        for m in self.minutes.values():
            m.incident(reason)

    def _subscribe_messages(self) -> list[dict[str, Any]]:
        channels = [("market_trades", self.products), ("heartbeats", [])]
        if self.settings.candles_channel:
            channels.append(("candles", self.products))
        msgs = []
        for channel, products in channels:
            msg: dict[str, Any] = {"type": "subscribe", "product_ids": products, "channel": channel}
            if self.settings.jwt is not None:
                msg["jwt"] = self.settings.jwt.get_secret_value()
            msgs.append(msg)
        return msgs

    async def _session(self) -> None:
        """One connection, until it fails (an exception) or the feed stops."""
        url = self.settings.ws_url
        async with websockets.connect(url, open_timeout=SUBSCRIBE_WITHIN_S, max_size=2**22) as ws:
            for msg in self._subscribe_messages():
                await ws.send(json.dumps(msg))
            last_seq: int | None = None
            trusted = False
            while not self._stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), timeout=self.settings.stall_timeout_s)
                except TimeoutError:
                    stalled = f"stalled: no message (not even a heartbeat) for {self.settings.stall_timeout_s}s"
                    raise _Reconnect(stalled) from None
                self.health.messages += 1
                self.health.last_message_ns = WallClock().now_ns()
                try:
                    event, server_ms = parse_with_time(frame)
                except FeedMessageError as exc:
                    self.health.malformed_messages += 1
                    log.error("coinbase: bad message ignored (%s): %.200r", exc, frame)
                    continue
                if isinstance(event, FeedError):
                    raise _Reconnect(f"server error: {event.message}")
                seq = event.sequence_num
                if seq is not None:
                    if last_seq is not None and seq <= last_seq:
                        log.warning("coinbase: sequence %d after %d: out of order, ignored", seq, last_seq)
                        continue
                    if last_seq is not None and seq > last_seq + 1:
                        raise _Reconnect(f"sequence gap: {last_seq} -> {seq} ({seq - last_seq - 1} message(s) lost)")
                    last_seq = seq
                # The exchange's own stamp: everything it sent before this message is in, so
                # it (not our receive time, which lags under load) says how far the feed is
                # complete. Without one, our clock.
                self._alive_ms = server_ms if server_ms is not None else self.clock.now_ns() // 1_000_000
                if isinstance(event, UnknownChannel):
                    self.health.unknown_channels += 1
                    log.warning("coinbase: message on unknown channel %r ignored", event.channel)
                elif isinstance(event, Subscriptions):
                    if "market_trades" in event.channels and not trusted:
                        trusted = True
                        now = self.clock.now_ns() // 1_000_000
                        for m in self.minutes.values():
                            m.resubscribed(now)
                        self.connected.set()
                        self._trusted_at = time.monotonic()
                        log.info("coinbase: subscribed %s", event.channels)
                elif isinstance(event, TradesEvent):
                    for t in event.trades:
                        live = self.minutes.get(t.product_id)
                        if live is not None:
                            live.on_trade(t)
                    self._publish()
                elif isinstance(event, CandlesEvent):
                    for c in event.candles:
                        # Latest update per bucket; the 5m bar built from 1m is checked against it.
                        self.channel_5m[(c.product_id, c.start_ms)] = c
                elif isinstance(event, Heartbeat):
                    pass  # liveness is any message (recorded above)

    # -- clock-driven work -------------------------------------------------------------------
    async def _tick(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick_once()
            except Exception:
                log.exception("coinbase: unexpected error on the clock tick")
            await asyncio.sleep(TICK_S)

    def _tick_once(self) -> None:
        now = self.clock.now_ns() // 1_000_000
        for p, m in self.minutes.items():
            if self._alive_ms is not None:
                m.on_clock(self._alive_ms)
            window = m.backfill_due(now)
            not_before = self._backfill_not_before.get(p, 0.0)
            if window is not None and p not in self._backfilling and time.monotonic() >= not_before:
                self._backfilling.add(p)
                task = asyncio.get_running_loop().create_task(self._backfill(p, window))
                self._tasks.add(task)  # keep a reference until it is done
                task.add_done_callback(self._tasks.discard)
        self._publish()

    async def _backfill(self, product: str, window: Window) -> None:
        try:
            candles = await asyncio.to_thread(self.rest.candles, product, window.start_ms, window.end_ms)
        except Exception as exc:  # RestError, or anything unforeseen: never fatal
            # The window stays pending (nothing after it is released): ask again after a backoff.
            self._backfill_not_before[product] = time.monotonic() + next(self._backfill_delays[product])
            log.error("coinbase %s: backfill of %s failed, will retry: %s", product, window_text(window), exc)
        else:
            self._backfill_delays[product] = self.backoff.delays(self.rng)
            self.minutes[product].on_backfill(window, candles, self.clock.now_ns() // 1_000_000)
            self._publish()
        finally:
            self._backfilling.discard(product)

    def _publish(self) -> None:
        for p, m in self.minutes.items():
            # LOST minutes before the candles after them: the source takes them first, so the
            # gap they leave counts as lost, not quiet.
            for minute in m.take_lost():
                self.lost.put((p, minute))
            got = m.take_with_origin()
            if got:
                self.out.put((p, got))


class CoinbaseSource(Source):
    """Closed candles of the live feed on all four timeframes, for `run_ingest`."""

    name = "ingest"
    #: The key of its health on metrics.ingest_health.
    source_name = "coinbase"

    def __init__(
        self,
        products: list[str],
        settings: CoinbaseSettings,
        *,
        resume: Mapping[str, ResumePoint] | None = None,
        clock: Clock | None = None,
        health: FeedHealth | None = None,
        poll_s: float = 0.2,
    ) -> None:
        super().__init__()
        self.symbols = list(products)
        self.health = health or FeedHealth()
        self.feed = CoinbaseFeed(products, settings, resume=resume, clock=clock, health=self.health)
        #: Cross-check mismatches to raise on metrics.alerts with the next batch.
        self._alerts: list[Output] = []
        resume = resume or {}
        self.rollups: dict[str, MultiTimeframeCandles] = {}
        pending: list[Output] = []
        for p in products:
            point = resume.get(p)
            r = MultiTimeframeCandles(
                p,
                "coinbase",
                health=self.health,
                resume_after=dict(point.last_open_ms) if point else {},
                on_bar=self._cross_check if settings.candles_channel else None,
            )
            if point is not None:
                for c in point.recent_1m:
                    pending += r.push(c)
            self.rollups[p] = r
        self._pending = pending
        self.poll_s = poll_s
        self._started = False

    def next_batch(self) -> list[Output] | None:
        """What closed since the last call (maybe nothing, after `poll_s`); None once stopped."""
        if not self._started:
            self.feed.start()
            self._started = True
        if self._pending:
            out, self._pending = self._pending, []
            return out
        if self.feed._stop.is_set():
            return None
        outputs: list[Output] = []
        try:
            item = self.feed.out.get(timeout=self.poll_s)
        except queue.Empty:
            return outputs
        while True:
            # The LOST minutes put before these candles (see `CoinbaseFeed._publish`) first.
            self._lost_alerts()
            product, candles = item
            for c, origin in candles:
                outputs += self.rollups[product].push(c, origin)
            try:
                item = self.feed.out.get_nowait()
            except queue.Empty:
                break
        outputs += self._alerts
        self._alerts = []
        return outputs

    def _lost_alerts(self) -> None:
        """INGEST_MINUTE_LOST on metrics.alerts for each minute the feed found LOST, each one
        counted as lost in the health (`MultiTimeframeCandles.lost`)."""
        while True:
            try:
                symbol, minute = self.feed.lost.get_nowait()
            except queue.Empty:
                return
            self.rollups[symbol].lost(minute)
            start = datetime.fromtimestamp(minute / 1000, tz=UTC)
            alert = Alert(
                timestamp=datetime.now(UTC),
                severity=Severity.CRITICAL,
                source=self.name,
                code=AlertCode.INGEST_MINUTE_LOST,
                message=(
                    f"{symbol} minute {start.isoformat()} lost: the feed saw trades in it and REST has no "
                    "candle for it (asked twice); it is missing from the candle topics"
                ),
            )
            origin_ns = close_time_ns(minute, "1m")
            self._alerts.append(
                self.emit(METRICS_ALERTS, alert, key=AlertCode.INGEST_MINUTE_LOST.encode(), origin_ns=origin_ns)
            )

    def close(self) -> None:
        self.feed.stop()

    def _cross_check(self, symbol: str, bar: ClosedBar) -> None:
        """A complete 5m bar built from 1m candles against the exchange's own 5m candle."""
        if bar.interval != "5m" or not bar.complete:
            return
        theirs = self.feed.channel_5m.pop((symbol, bar.candle.open_time_ms), None)
        # The feed thread adds to the dict meanwhile: iterate over a copy of its keys (list() of
        # a dict copies under the GIL; iterating the dict itself can raise "changed size").
        for key in [k for k in list(self.feed.channel_5m) if k[0] == symbol and k[1] < bar.candle.open_time_ms]:
            self.feed.channel_5m.pop(key, None)  # older buckets can no longer be checked
        if theirs is None:
            return
        ours = bar.candle
        same = (ours.open, ours.high, ours.low, ours.close) == (theirs.open, theirs.high, theirs.low, theirs.close)
        if same and math.isclose(ours.volume, theirs.volume, rel_tol=1e-9, abs_tol=1e-12):
            self.health.cross_checked += 1
            return
        self.health.cross_check_mismatches += 1
        start = datetime.fromtimestamp(ours.open_time_ms / 1000, tz=UTC)
        message = (
            f"{symbol} 5m bar at {start.isoformat()}: built from 1m "
            f"O={ours.open} H={ours.high} L={ours.low} C={ours.close} V={ours.volume}, candles channel "
            f"O={theirs.open} H={theirs.high} L={theirs.low} C={theirs.close} V={theirs.volume}; "
            "the published bar is kept"
        )
        log.warning("coinbase: %s", message)
        alert = Alert(
            timestamp=datetime.now(UTC),
            severity=Severity.WARNING,
            source=self.name,
            code=AlertCode.INGEST_CROSS_CHECK_MISMATCH,
            message=message,
        )
        origin_ns = close_time_ns(ours.open_time_ms, "5m")
        self._alerts.append(
            self.emit(METRICS_ALERTS, alert, key=AlertCode.INGEST_CROSS_CHECK_MISMATCH.encode(), origin_ns=origin_ns)
        )
