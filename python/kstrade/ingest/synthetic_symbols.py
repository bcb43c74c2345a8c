"""What both SYNTHETIC markets share (`kstrade.ingest.synthetic` and `kstrade.ingest.planted`):
the symbols' price levels and assumed daily volatilities, and the intraday volatility pattern.
Nothing here is market data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class SymbolModel:
    symbol: str
    start_price: float
    daily_vol: float  # target realised daily volatility of log returns
    base_volume: float  # mean volume per minute, in units of the base asset


#: Typical realised daily volatility (an assumption, stated in every generated file's metadata, not a
#: fit to a specific period) and price levels.
MODELS: dict[str, SymbolModel] = {
    "BTC-USD": SymbolModel("BTC-USD", 60_000.0, 0.029, 12.0),
    "ETH-USD": SymbolModel("ETH-USD", 3_000.0, 0.036, 150.0),
    "SOL-USD": SymbolModel("SOL-USD", 150.0, 0.050, 2_500.0),
}


def intraday_pattern() -> np.ndarray:
    """Volatility multiplier per minute of the UTC day, with mean square 1 (so the daily
    variance stays on target)."""
    minute = np.arange(MINUTES_PER_DAY)
    hour = minute / 60.0
    pattern = (
        0.75
        + 0.25 * np.exp(-(((hour - 8.0) / 1.5) ** 2))  # Europe opens
        + 0.55 * np.exp(-(((hour - 14.5) / 1.6) ** 2))  # US open: the busiest hours
        + 0.15 * np.exp(-(((hour - 0.5) / 1.0) ** 2))  # Asia opens
    )
    return np.asarray(pattern / np.sqrt(np.mean(pattern**2)))


def checked(symbol: str, start: datetime, days: int) -> tuple[SymbolModel, datetime]:
    """The symbol's model and `start` in UTC, for a generator asked for `days` from `start`;
    ValueError naming what is wrong (an unknown symbol, no day, a start off the minute)."""
    if symbol not in MODELS:
        raise ValueError(f"no synthetic model for {symbol!r}: choose from {', '.join(MODELS)}")
    if days < 1:
        raise ValueError("days must be >= 1")
    start = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
    if start.second or start.microsecond:
        raise ValueError("start must be on a whole minute")
    return MODELS[symbol], start


def candles(
    model: SymbolModel, start: datetime, returns: np.ndarray, sigma: float, season: np.ndarray, rng: np.random.Generator
) -> pl.DataFrame:
    """The candles of a path of 1-minute log returns: open = previous close, high / low add an
    intrabar excursion of the minute's typical size (`sigma` times the intraday pattern), volume
    follows |r| and the pattern. Draws from `rng` in a fixed order (the files stay reproducible)."""
    n = returns.shape[0]
    close = model.start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([model.start_price], close[:-1]))
    minute_vol = sigma * season
    wick_up = np.abs(rng.normal(0, 0.5, n)) * minute_vol
    wick_down = np.abs(rng.normal(0, 0.5, n)) * minute_vol
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_down)
    activity = 0.6 + 0.4 * np.abs(returns) / sigma
    volume = model.base_volume * season * activity * rng.lognormal(0.0, 0.5, n)
    timestamps = [start + timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "timestamp": pl.Series(timestamps, dtype=pl.Datetime("us", "UTC")),
            "symbol": [model.symbol] * n,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
