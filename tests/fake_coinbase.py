"""A local Coinbase Advanced Trade server (WebSocket + REST candles) for the ingest tests: the one
test double, speaking the protocol of ../shared/reference/coinbase.md on loopback only.

It replays a fixed list of trades on a market clock that runs `speed` times faster than the wall
clock, and can misbehave on its first connection as a scenario says: skip a sequence number (the
trades of that message are lost), hang up mid-minute, go silent (no heartbeats), send malformed
JSON and unknown channels, answer REST with HTTP 429. REST candles are computed here, in plain
Python, from the same trades: they are the truth the client's backfill must reproduce.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import websockets
from websockets.asyncio.server import ServerConnection, serve


class ScaledClock:
    """Market time from `start_ns`, running `speed` times faster than the wall clock; a `paused`
    clock stays at `start_ns` until `run()`, so a test can let market time start only once the
    client has started, however long the set-up took on a loaded machine (and `pause()` holds
    it again)."""

    def __init__(self, start_ns: int, speed: float, *, paused: bool = False) -> None:
        self.start_ns = start_ns
        self.speed = speed
        self._wall0: int | None = None if paused else time.monotonic_ns()

    def run(self) -> None:
        if self._wall0 is None:
            self._wall0 = time.monotonic_ns()

    def pause(self) -> None:
        """Hold market time where it is (until `run()`), e.g. while a test restarts the client."""
        if self._wall0 is not None:
            self.start_ns, self._wall0 = self.now_ns(), None

    def now_ns(self) -> int:
        if self._wall0 is None:
            return self.start_ns
        return self.start_ns + int((time.monotonic_ns() - self._wall0) * self.speed)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds / self.speed))


@dataclass(frozen=True)
class FakeTrade:
    time_ms: int
    price: float
    size: float
    trade_id: int


@dataclass
class Scenario:
    variant: Literal["docs", "production"] = "docs"
    #: First connection: the n-th trades message is never sent but its sequence number is used.
    drop_trades_message: int | None = None
    #: First connection: hang up at this market time.
    disconnect_at_ms: int | None = None
    #: Hang up at each of these market times, whichever connection is open then (each once; one
    #: that fell due while the client was away hangs up its next connection).
    disconnects_at_ms: tuple[int, ...] = ()
    #: First connection: from this market time, send nothing at all (no heartbeats).
    stall_at_ms: int | None = None
    #: Send malformed JSON and an unknown channel after the n-th trades message.
    junk_after_trades_message: int | None = None
    #: The first n REST requests get HTTP 429.
    rest_429: int = 0
    #: The first REST request is answered only after this many wall seconds (a slow exchange).
    rest_first_delay_s: float = 0.0
    #: The `candles` channel reports one more unit of volume for the 5m bucket starting here
    #: (the exchange counted a trade the client never saw).
    skewed_5m_at_ms: int | None = None
    #: REST never returns the candles of these minutes (open times): an exchange that lost them.
    rest_withholds_ms: tuple[int, ...] = ()
    #: How REST reads `end`: Coinbase's docs do not say whether the candle starting at `end` is
    #: in the answer, so the client must be right under both readings.
    rest_end: Literal["inclusive", "exclusive"] = "inclusive"


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _stamp(clock: ScaledClock) -> str:
    ns = clock.now_ns()
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 10**9:09d}Z"


@dataclass
class FakeCoinbase:
    product: str
    trades: list[FakeTrade]
    clock: ScaledClock
    scenario: Scenario = field(default_factory=Scenario)
    #: (start, end, granularity, limit, status, candles returned) for each REST request.
    rest_log: list[tuple[int, int, str, int, int, list[dict[str, str]]]] = field(default_factory=list)
    connections: int = 0
    #: The `disconnects_at_ms` already done.
    disconnected_at: set[int] = field(default_factory=set)
    subscribes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws_port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeCoinbase:
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        assert self._ready.wait(10), "fake Coinbase WebSocket server did not start"
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._rest_handler())
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._ws_port}"

    @property
    def rest_url(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    # -- REST --------------------------------------------------------------------------------
    def rest_candles(self, start_s: int, end_s: int) -> list[dict[str, str]]:
        """ONE_MINUTE candles with start in [start_s, end_s] (or [start_s, end_s) when the
        scenario reads `end` as exclusive), newest first, closed minutes only."""
        now_ms = self.clock.now_ns() // 1_000_000
        last_s = end_s if self.scenario.rest_end == "inclusive" else end_s - 60
        buckets: dict[int, list[FakeTrade]] = {}
        for t in self.trades:
            minute = t.time_ms // 60_000 * 60
            withheld = minute * 1000 in self.scenario.rest_withholds_ms
            if start_s <= minute <= last_s and (minute + 60) * 1000 <= now_ms and not withheld:
                buckets.setdefault(minute, []).append(t)
        out = []
        for minute in sorted(buckets, reverse=True):
            ts = sorted(buckets[minute], key=lambda t: (t.time_ms, t.trade_id))
            volume = 0.0
            for t in ts:
                volume += t.size
            out.append(
                {
                    "start": str(minute),
                    "low": repr(min(t.price for t in ts)),
                    "high": repr(max(t.price for t in ts)),
                    "open": repr(ts[0].price),
                    "close": repr(ts[-1].price),
                    "volume": repr(volume),
                }
            )
        return out

    def _rest_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.split("/")
                prefix = ["", "api", "v3", "brokerage", "market", "products"]
                if parts[:6] != prefix or len(parts) != 8 or parts[7] != "candles" or parts[6] != server.product:
                    self._send(404, {"error": "NOT_FOUND", "code": 5, "message": "not found", "details": [{}]})
                    return
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    start, end, gran = int(q["start"]), int(q["end"]), q["granularity"]
                    limit = int(q.get("limit", "350"))
                except (KeyError, ValueError):
                    self._send(400, {"error": "INVALID_ARGUMENT", "code": 3, "message": "bad query", "details": [{}]})
                    return
                if gran != "ONE_MINUTE" or (end - start) // 60 + 1 > 350 or limit > 350 or end < start:
                    server.rest_log.append((start, end, gran, limit, 400, []))
                    msg = "number of candles requested should be less than 350"
                    self._send(400, {"error": "INVALID_ARGUMENT", "code": 3, "message": msg, "details": [{}]})
                    return
                if len([r for r in server.rest_log if r[4] == 429]) < server.scenario.rest_429:
                    server.rest_log.append((start, end, gran, limit, 429, []))
                    self._send(
                        429,
                        {"error": "RATE_LIMIT_EXCEEDED", "code": 8, "message": "Too many requests", "details": [{}]},
                        {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.05"},
                    )
                    return
                if not server.rest_log and server.scenario.rest_first_delay_s:
                    time.sleep(server.scenario.rest_first_delay_s)
                candles = server.rest_candles(start, end)[:limit]
                server.rest_log.append((start, end, gran, limit, 200, candles))
                self._send(200, {"candles": candles}, {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "9"})

        return Handler

    # -- WebSocket ---------------------------------------------------------------------------
    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._connection, "127.0.0.1", 0) as ws_server:
            self._ws_port = next(iter(ws_server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _envelope(self, channel: str, seq: int, events: list[dict[str, Any]], at_ms: int | None = None) -> str:
        """A message stamped now, or at `at_ms`: the time up to which trades were sent."""
        msg: dict[str, Any] = {"channel": channel}
        if self.scenario.variant == "docs":
            msg["client_id"] = ""
        stamp = _stamp(self.clock) if at_ms is None else _rfc3339(at_ms)
        msg.update({"timestamp": stamp, "sequence_num": seq, "events": events})
        return json.dumps(msg)

    def _five_minute(self, start_ms: int, now_ms: int) -> dict[str, str] | None:
        """The `candles` channel's 5m candle of the bucket at `start_ms`, as of `now_ms`."""
        ts = [t for t in self.trades if start_ms <= t.time_ms < start_ms + 300_000 and t.time_ms <= now_ms]
        if not ts:
            return None
        volume = 0.0
        for t in ts:
            volume += t.size
        if start_ms == self.scenario.skewed_5m_at_ms:
            volume += 1.0
        return {
            "start": str(start_ms // 1000),
            "high": repr(max(t.price for t in ts)),
            "low": repr(min(t.price for t in ts)),
            "open": repr(ts[0].price),
            "close": repr(ts[-1].price),
            "volume": repr(volume),
            "product_id": self.product,
        }

    def _trade_json(self, t: FakeTrade) -> dict[str, str]:
        return {
            "trade_id": str(t.trade_id),
            "product_id": self.product,
            "price": repr(t.price),
            "size": repr(t.size),
            "side": "BUY" if t.trade_id % 2 else "SELL",
            "time": _rfc3339(t.time_ms),
        }

    async def _connection(self, ws: ServerConnection) -> None:
        self.connections += 1
        first = self.connections == 1
        sc = self.scenario
        seq = 0
        subscribed: set[str] = set()
        try:
            # Coinbase: subscribe within 5 s or be disconnected.
            deadline = time.monotonic() + 5
            while "market_trades" not in subscribed or "heartbeats" not in subscribed:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.01, deadline - time.monotonic()))
                msg = json.loads(raw)
                self.subscribes.append(msg)
                if msg.get("type") != "subscribe" or not isinstance(msg.get("product_ids"), list):
                    await ws.send(json.dumps({"type": "error", "message": "invalid subscribe"}))
                    return
                subscribed.add(str(msg.get("channel")))
                subs = {c: ([] if c == "heartbeats" else [self.product]) for c in sorted(subscribed)}
                await ws.send(self._envelope("subscriptions", seq, [{"subscriptions": subs}]))
                seq += 1
            cursor = self.clock.now_ns() // 1_000_000
            snapshot = [t for t in self.trades if t.time_ms <= cursor][-3:]
            await ws.send(
                self._envelope(
                    "market_trades", seq, [{"type": "snapshot", "trades": [self._trade_json(t) for t in snapshot]}]
                )
            )
            seq += 1
            counter = 1000
            trades_messages = 0
            while True:
                await asyncio.sleep(0.02)
                # Later subscribes (e.g. the candles channel) are confirmed as they come.
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.001)
                except TimeoutError:
                    pass
                else:
                    msg = json.loads(raw)
                    self.subscribes.append(msg)
                    subscribed.add(str(msg.get("channel")))
                    subs = {c: ([] if c == "heartbeats" else [self.product]) for c in sorted(subscribed)}
                    await ws.send(self._envelope("subscriptions", seq, [{"subscriptions": subs}]))
                    seq += 1
                now = self.clock.now_ns() // 1_000_000
                if first and sc.disconnect_at_ms is not None and now >= sc.disconnect_at_ms:
                    await ws.close()
                    return
                due = [at for at in sc.disconnects_at_ms if at <= now and at not in self.disconnected_at]
                if due:  # one hang-up per connection: two that fell due together are two in a row
                    self.disconnected_at.add(min(due))
                    await ws.close()
                    return
                if first and sc.stall_at_ms is not None and now >= sc.stall_at_ms:
                    await ws.wait_closed()  # silent: no trades, no heartbeats, until the client hangs up
                    return
                batch = [t for t in self.trades if cursor < t.time_ms <= now]
                cursor = now
                if batch:
                    trades_messages += 1
                    if first and trades_messages == sc.drop_trades_message:
                        seq += 1  # lost in transit: the client sees the jump
                    else:
                        events = [{"type": "update", "trades": [self._trade_json(t) for t in batch]}]
                        await ws.send(self._envelope("market_trades", seq, events, at_ms=now))
                        seq += 1
                    if trades_messages == sc.junk_after_trades_message:
                        await ws.send('{"channel": "market_trades", "events": [')
                        await ws.send(self._envelope("level2", seq, [{"type": "update", "updates": []}]))
                        seq += 1
                if "candles" in subscribed:
                    bucket = now // 300_000 * 300_000
                    bars = [b for b in (self._five_minute(bucket - 300_000, now), self._five_minute(bucket, now)) if b]
                    if bars:
                        await ws.send(self._envelope("candles", seq, [{"type": "update", "candles": bars}]))
                        seq += 1
                counter += 1
                hb = str(counter) if sc.variant == "docs" else counter
                current = datetime.fromtimestamp(now / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f000 +0000 UTC")
                events = [{"current_time": current + " m=+1.0", "heartbeat_counter": hb}]
                await ws.send(self._envelope("heartbeats", seq, events, at_ms=now))
                seq += 1
        except (websockets.exceptions.ConnectionClosed, TimeoutError):
            return


def make_trades(start_ms: int, minutes: int, seed: int) -> Iterator[FakeTrade]:
    """Deterministic trades: 0-5 per minute (some minutes empty), a random walk in price."""
    import random

    rng = random.Random(seed)
    price = 60_000.0
    tid = 0
    for m in range(minutes):
        n = rng.choice([0, 1, 2, 3, 4, 5])
        for ms in sorted(rng.sample(range(60_000), n)):
            price = round(price * (1 + rng.gauss(0, 0.0005)), 2)
            tid += 1
            yield FakeTrade(start_ms + m * 60_000 + ms, price, round(rng.uniform(0.001, 2.0), 6), tid)
