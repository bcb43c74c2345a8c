"""Seeded SYNTHETIC 1-minute candles for BTC-USD, ETH-USD and SOL-USD.

No package ships minute-level crypto candles and machines here cannot download any, so tests,
demos and backtests use this generator. Every file it writes says "synthetic" in its name and in
its Parquet metadata (`kstrade.synthetic = "true"`); nothing here is market data.

The model, per symbol:
- 1-minute log returns r_t = mu_k + sigma_t * s(minute of day) * g_k * z_t, where z_t is a
  Student-t shock (nu = 5) scaled to unit variance: heavy tails as in real crypto returns;
- sigma_t^2 follows GARCH(1,1) (alpha = 0.06, beta = 0.92) around the per-minute variance of the
  target daily volatility: volatility clusters;
- k is a 3-state Markov regime (calm, trend, crash) scaling volatility (g_k) and drift (mu_k);
- s(.) is an intraday volatility pattern normalised to mean square 1 (quiet Asian night, busier
  European morning, peak at the US open ~13:30-16:00 UTC);
- open = previous close; high/low add an intrabar excursion; volume follows |r| and s(.).

The target daily volatilities are typical realised daily volatilities of these coins (an
assumption stated here and in each file's metadata, not a fit to a specific period).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

GENERATOR = "kstrade.synthetic.garch_t_regimes/1"
MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class SymbolModel:
    symbol: str
    start_price: float
    daily_vol: float  # target realised daily volatility of log returns
    base_volume: float  # mean volume per minute, in units of the base asset


#: Typical realised daily volatility (assumed, see the module doc) and price levels.
MODELS: dict[str, SymbolModel] = {
    "BTC-USD": SymbolModel("BTC-USD", 60_000.0, 0.029, 12.0),
    "ETH-USD": SymbolModel("ETH-USD", 3_000.0, 0.036, 150.0),
    "SOL-USD": SymbolModel("SOL-USD", 150.0, 0.050, 2_500.0),
}

NU = 5.0
GARCH_ALPHA = 0.06
GARCH_BETA = 0.92
# Regimes: calm, trend, crash. Volatility scale, drift per minute (in units of the per-minute
# volatility) and a per-minute transition matrix (rows sum to 1; crashes are rare and short).
REGIME_VOL = np.array([0.8, 1.1, 2.6])
REGIME_DRIFT = np.array([0.0, 0.02, -0.08])
REGIME_TRANSITIONS = np.array(
    [
        [0.9990, 0.0009, 0.0001],
        [0.0015, 0.9984, 0.0001],
        [0.0100, 0.0050, 0.9850],
    ]
)


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


def _regime_scale_norm() -> float:
    """E[g_k^2] under the regime chain's stationary law, so regimes keep the target volatility."""
    vals, vecs = np.linalg.eig(REGIME_TRANSITIONS.T)
    stationary = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    stationary = stationary / stationary.sum()
    return float(math.sqrt(float(stationary @ REGIME_VOL**2)))


def generate(symbol: str, start: datetime, days: int, seed: int) -> pl.DataFrame:
    """`days` of SYNTHETIC 1-minute candles for `symbol`, starting at `start` (UTC, whole minute)."""
    if symbol not in MODELS:
        raise ValueError(f"no synthetic model for {symbol!r}: choose from {', '.join(MODELS)}")
    if days < 1:
        raise ValueError("days must be >= 1")
    start = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
    if start.second or start.microsecond:
        raise ValueError("start must be on a whole minute")
    model = MODELS[symbol]
    n = days * MINUTES_PER_DAY
    # One stream per symbol, derived from the seed: adding a symbol never changes the others.
    rng = np.random.default_rng([seed, sum(map(ord, symbol))])

    var_minute = model.daily_vol**2 / MINUTES_PER_DAY
    omega = var_minute * (1 - GARCH_ALPHA - GARCH_BETA)
    shocks = rng.standard_t(NU, size=n) * math.sqrt((NU - 2) / NU)
    uniforms = rng.random(n)
    start_minute = start.hour * 60 + start.minute
    season = intraday_pattern()[(start_minute + np.arange(n)) % MINUTES_PER_DAY]
    g_norm = _regime_scale_norm()
    cumulative = np.cumsum(REGIME_TRANSITIONS, axis=1)

    returns = np.empty(n)
    regimes = np.empty(n, dtype=np.int8)
    variance = var_minute
    regime = 0
    innovation = 0.0
    for t in range(n):
        regime = int(np.searchsorted(cumulative[regime], uniforms[t], side="right"))
        regime = min(regime, 2)
        variance = omega + GARCH_ALPHA * innovation**2 + GARCH_BETA * variance
        sigma = math.sqrt(variance)
        scale = sigma * season[t] * REGIME_VOL[regime] / g_norm
        innovation = sigma * shocks[t]
        returns[t] = REGIME_DRIFT[regime] * scale + scale * shocks[t]
        regimes[t] = regime

    close = model.start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([model.start_price], close[:-1]))
    minute_vol = np.sqrt(var_minute) * season
    wick_up = np.abs(rng.normal(0, 0.5, n)) * minute_vol
    wick_down = np.abs(rng.normal(0, 0.5, n)) * minute_vol
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_down)
    activity = 0.6 + 0.4 * np.abs(returns) / np.sqrt(var_minute)
    volume = model.base_volume * season * activity * rng.lognormal(0.0, 0.5, n)

    timestamps = [start + timedelta(minutes=i) for i in range(n)]
    return pl.DataFrame(
        {
            "timestamp": pl.Series(timestamps, dtype=pl.Datetime("us", "UTC")),
            "symbol": [symbol] * n,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "regime": regimes,
        }
    )


def file_name(symbols: list[str], start: datetime, days: int, seed: int) -> str:
    joined = "_".join(symbols)
    return f"synthetic_{joined}_1m_{start:%Y%m%d}_{days}d_seed{seed}.parquet"


def write(symbols: list[str], start: datetime, days: int, seed: int, out_dir: Path) -> Path:
    """Generate every symbol and write one Parquet file labelled synthetic in name and metadata."""
    frames = [generate(s, start, days, seed) for s in symbols]
    table = pl.concat(frames).sort(["timestamp", "symbol"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name(symbols, start, days, seed)
    metadata = {
        "kstrade.synthetic": "true",
        "kstrade.generator": GENERATOR,
        "kstrade.seed": str(seed),
        "kstrade.start": start.isoformat(),
        "kstrade.days": str(days),
        "kstrade.models": json.dumps([asdict(MODELS[s]) for s in symbols]),
        "kstrade.note": "SYNTHETIC data from a seeded GARCH(1,1)-t model with regimes; not market data.",
    }
    table.write_parquet(path, metadata=metadata)
    return path
