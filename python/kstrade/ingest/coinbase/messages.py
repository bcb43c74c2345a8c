"""Coinbase Advanced Trade WebSocket messages, parsed into small typed events.

Both variants seen in the wild are accepted: with or without `client_id`, and `heartbeat_counter`
as a string or an integer. Numbers arrive as strings. Anything else raises `FeedMessageError`
with a stable code, which the feed logs and counts without dropping the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kstrade.codes import FeedCode


class FeedMessageError(ValueError):
    """A message the client cannot use; `code` is stable (MALFORMED_JSON, BAD_FIELD, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Trade:
    product_id: str
    trade_id: str
    price: float
    size: float
    time_ms: int


@dataclass(frozen=True, slots=True)
class TradesEvent:
    sequence_num: int
    snapshot: bool
    trades: list[Trade]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sequence_num: int
    counter: int


@dataclass(frozen=True, slots=True)
class Subscriptions:
    sequence_num: int
    channels: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class ChannelCandle:
    """A 5m candle from the `candles` channel (used only to cross-check the 5m bars)."""

    product_id: str
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class CandlesEvent:
    sequence_num: int
    candles: list[ChannelCandle]


@dataclass(frozen=True, slots=True)
class FeedError:
    message: str


@dataclass(frozen=True, slots=True)
class UnknownChannel:
    sequence_num: int | None
    channel: str


FeedEvent = TradesEvent | Heartbeat | Subscriptions | CandlesEvent | FeedError | UnknownChannel


def parse_time_ms(text: str) -> int:
    """RFC 3339 with up to nanoseconds ('2023-02-09T20:19:35.39625135Z') to epoch ms."""
    if not isinstance(text, str) or not text.endswith("Z") or "T" not in text:
        raise FeedMessageError(FeedCode.BAD_FIELD, f"time {text!r} is not RFC 3339 UTC")
    body = text[:-1]
    frac = ""
    if "." in body:
        body, frac = body.split(".", 1)
        if not frac.isdigit():
            raise FeedMessageError(FeedCode.BAD_FIELD, f"time {text!r} has a bad fraction")
    try:
        whole = datetime.fromisoformat(body + "+00:00")
    except ValueError:
        raise FeedMessageError(FeedCode.BAD_FIELD, f"time {text!r} is not RFC 3339 UTC") from None
    millis = int((frac + "000")[:3]) if frac else 0
    return int(whole.timestamp()) * 1000 + millis


def _num(value: Any, field: str) -> float:
    # Coinbase sends numbers as strings; accept plain numbers too.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FeedMessageError(FeedCode.BAD_FIELD, f"{field} is {value!r}, not a number")
    try:
        out = float(value)
    except ValueError:
        raise FeedMessageError(FeedCode.BAD_FIELD, f"{field} is {value!r}, not a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise FeedMessageError(FeedCode.BAD_FIELD, f"{field} is not finite")
    return out


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise FeedMessageError(FeedCode.BAD_FIELD, f"{field} is {value!r}, not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise FeedMessageError(FeedCode.BAD_FIELD, f"{field} is {value!r}, not an integer")


def _trade(raw: Any) -> Trade:
    if not isinstance(raw, dict):
        raise FeedMessageError(FeedCode.BAD_FIELD, "a trade is not an object")
    try:
        price = _num(raw["price"], "price")
        size = _num(raw["size"], "size")
        product = raw["product_id"]
        trade_id = raw["trade_id"]
        time_ms = parse_time_ms(raw["time"])
    except KeyError as exc:
        raise FeedMessageError(FeedCode.BAD_FIELD, f"a trade has no {exc.args[0]}") from None
    if not isinstance(product, str) or not product:
        raise FeedMessageError(FeedCode.BAD_FIELD, "trade product_id missing")
    if price <= 0 or size < 0:
        raise FeedMessageError(FeedCode.BAD_FIELD, f"trade {trade_id}: price {price}, size {size}")
    return Trade(product, str(trade_id), price, size, time_ms)


def parse(text: str | bytes) -> FeedEvent:
    """One WebSocket frame as an event. Raises `FeedMessageError`."""
    return parse_with_time(text)[0]


def parse_with_time(text: str | bytes) -> tuple[FeedEvent, int | None]:
    """The event and the exchange's `timestamp` of the message in epoch ms (None if absent or
    unreadable: it is only evidence of liveness, never a reason to refuse a message)."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeedMessageError(FeedCode.MALFORMED_JSON, str(exc)) from None
    if not isinstance(msg, dict):
        raise FeedMessageError(FeedCode.MALFORMED, "a message must be a JSON object")
    server_ms: int | None = None
    stamp = msg.get("timestamp")
    if isinstance(stamp, str):
        try:
            server_ms = parse_time_ms(stamp)
        except FeedMessageError:
            server_ms = None
    return _event(msg), server_ms


def _event(msg: dict[str, Any]) -> FeedEvent:
    if msg.get("type") == "error":
        return FeedError(str(msg.get("message", "")))
    channel = msg.get("channel")
    if not isinstance(channel, str):
        raise FeedMessageError(FeedCode.MALFORMED, "no channel")
    seq = _int(msg.get("sequence_num"), "sequence_num") if "sequence_num" in msg else None
    events = msg.get("events", [])
    if not isinstance(events, list):
        raise FeedMessageError(FeedCode.MALFORMED, "events is not a list")
    if channel not in ("market_trades", "heartbeats", "subscriptions", "candles"):
        return UnknownChannel(seq, channel)
    if seq is None:
        raise FeedMessageError(FeedCode.MALFORMED, f"{channel} message without sequence_num")
    if channel == "market_trades":
        trades: list[Trade] = []
        snapshot = False
        for ev in events:
            if not isinstance(ev, dict):
                raise FeedMessageError(FeedCode.MALFORMED, "an event is not an object")
            snapshot = snapshot or ev.get("type") == "snapshot"
            trades += [_trade(t) for t in ev.get("trades", [])]
        return TradesEvent(seq, snapshot, trades)
    if channel == "heartbeats":
        if not events or not isinstance(events[0], dict) or "heartbeat_counter" not in events[0]:
            raise FeedMessageError(FeedCode.MALFORMED, "heartbeat without heartbeat_counter")
        return Heartbeat(seq, _int(events[0]["heartbeat_counter"], "heartbeat_counter"))
    if channel == "subscriptions":
        channels: dict[str, list[str]] = {}
        for ev in events:
            if isinstance(ev, dict) and isinstance(ev.get("subscriptions"), dict):
                for name, products in ev["subscriptions"].items():
                    channels[str(name)] = [str(p) for p in products] if isinstance(products, list) else []
        return Subscriptions(seq, channels)
    out: list[ChannelCandle] = []
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("candles", []), list):
            raise FeedMessageError(FeedCode.MALFORMED, "a candles event is not an object with a list")
        for c in ev.get("candles", []):
            if not isinstance(c, dict):
                raise FeedMessageError(FeedCode.MALFORMED, "a candle is not an object")
            try:
                out.append(
                    ChannelCandle(
                        str(c["product_id"]),
                        _int(c["start"], "start") * 1000,
                        _num(c["open"], "open"),
                        _num(c["high"], "high"),
                        _num(c["low"], "low"),
                        _num(c["close"], "close"),
                        _num(c["volume"], "volume"),
                    )
                )
            except KeyError as exc:
                raise FeedMessageError(FeedCode.BAD_FIELD, f"a candle has no {exc.args[0]}") from None
    return CandlesEvent(seq, out)
