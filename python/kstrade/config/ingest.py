"""`[ingest]`: market data in, from a file replay or the live Coinbase feed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from kstrade.config.base import _Section


class CoinbaseSettings(_Section):
    """The Coinbase Advanced Trade feed. Base URLs are settable so the client can talk to any
    server that speaks the protocol (KSTRADE_COINBASE_WS_URL, KSTRADE_COINBASE_REST_URL win)."""

    ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    rest_url: str = "https://api.coinbase.com"
    #: Subscribe the 5-minute `candles` channel too, to cross-check the 5m bars built from trades.
    candles_channel: bool = False
    #: A minute closes on the first later trade, or this long after its end with no such trade.
    grace_ms: int = Field(5_000, ge=0, le=60_000)
    #: How long after a backfill window's last minute before REST is asked for it.
    rest_delay_ms: int = Field(5_000, ge=0, le=300_000)
    #: No message at all (heartbeats arrive every second) for this long: the feed is stalled.
    stall_timeout_s: float = Field(10.0, gt=0, le=300)
    #: Start-up backfill: this many hours back, or from the last candle on the topics if newer.
    #: The default is the history a replay warms up with (`kstrade.app.WARMUP`, 2 days: the 1h
    #: indicators need about 34 hours, the models' windows 30 vectors more), so a pipeline
    #: started cold decides from its first live minute.
    warmup_hours: float = Field(48.0, ge=0, le=24 * 30)
    reconnect_initial_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)
    #: A session that streamed trusted data (subscribed, in sequence) for this long before its
    #: incident starts the reconnect backoff again from `reconnect_initial_s`.
    reconnect_reset_after_s: float = Field(60.0, gt=0, le=3600)
    #: A JWT for authenticated subscriptions, only from the environment (public channels need none).
    jwt: SecretStr | None = None


class IngestSettings(_Section):
    """Market data in: a live Coinbase feed or a file replay."""

    source: Literal["coinbase", "replay"] = "replay"
    #: Replay: a CSV or Parquet candle file; `speed` is 'max', 'realtime' or 'xN'.
    replay_path: Path | None = None
    speed: str = "max"
    coinbase: CoinbaseSettings = Field(default_factory=lambda: CoinbaseSettings())
