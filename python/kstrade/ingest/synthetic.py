"""Seeded SYNTHETIC 1-minute candles for BTC-USD, ETH-USD and SOL-USD, from one of two markets:
`edge` (`kstrade.ingest.planted`: a planted, documented edge, with the true label probabilities;
what `run`, `backtest` and `train` use by default) and `control` (the model below: close to
unpredictable by construction; a pipeline must find no edge there).

No package ships minute-level crypto candles and machines here cannot download any, so tests,
demos and backtests use this generator. Every file it writes says "synthetic" in its name and in
its Parquet metadata (`kstrade.synthetic = "true"`); nothing here is market data.

The control model, per symbol:
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
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from kstrade.ingest import planted
from kstrade.ingest.synthetic_symbols import MINUTES_PER_DAY, MODELS, SymbolModel, candles, checked, intraday_pattern

GENERATOR = "kstrade.synthetic.garch_t_regimes/1"
__all__ = ["MARKETS", "MINUTES_PER_DAY", "MODELS", "SymbolModel", "generate", "generator", "intraday_pattern", "write"]
#: The markets, by name; `edge` is the default of the commands.
MARKETS = ("edge", "control")
DEFAULT_MARKET = "edge"


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


def _regime_scale_norm() -> float:
    """E[g_k^2] under the regime chain's stationary law, so regimes keep the target volatility."""
    vals, vecs = np.linalg.eig(REGIME_TRANSITIONS.T)
    stationary = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    stationary = stationary / stationary.sum()
    return float(math.sqrt(float(stationary @ REGIME_VOL**2)))


def generator(market: str) -> str:
    """The generator's name and version for a market (what files and manifests record)."""
    return {"edge": planted.GENERATOR, "control": GENERATOR}[_market(market)]


def _market(market: str) -> str:
    if market not in MARKETS:
        raise ValueError(f"unknown synthetic market {market!r}: choose from {', '.join(MARKETS)}")
    return market


def generate(symbol: str, start: datetime, days: int, seed: int, market: str = "control") -> pl.DataFrame:
    """`days` of SYNTHETIC 1-minute candles for `symbol`, starting at `start` (UTC, whole minute),
    from `market` (the planted-edge one also has columns p_down, p_flat and p_up: the true
    probabilities of the label classes)."""
    if _market(market) == "edge":
        return planted.generate(symbol, start, days, seed)
    model, start = checked(symbol, start, days)
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

    frame = candles(model, start, returns, math.sqrt(var_minute), season, rng)
    return frame.with_columns(pl.Series("regime", regimes))


def file_name(symbols: list[str], start: datetime, days: int, seed: int, market: str = "control") -> str:
    joined = "_".join(symbols)
    kind = "synthetic" if market == "control" else f"synthetic-{market}"
    return f"{kind}_{joined}_1m_{start:%Y%m%d}_{days}d_seed{seed}.parquet"


def write(
    symbols: list[str],
    start: datetime,
    days: int,
    seed: int,
    out_dir: Path,
    market: str = "control",
    on_generated: Callable[[str], None] | None = None,
) -> Path:
    """Generate every symbol and write one Parquet file labelled synthetic in name and metadata.
    `on_generated(symbol)` is called as each symbol's candles are ready (a progress bar)."""
    frames = []
    for s in symbols:
        frames.append(generate(s, start, days, seed, market))
        if on_generated is not None:
            on_generated(s)
    table = pl.concat(frames).sort(["timestamp", "symbol"])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name(symbols, start, days, seed, market)
    note = "SYNTHETIC data from a seeded GARCH(1,1)-t model with regimes; not market data."
    extra: dict[str, str] = {}
    if market == "edge":
        note = ("SYNTHETIC data with a planted, documented edge (kstrade.ingest.planted); not market data, "
                "and real markets are much harder. p_down/p_flat/p_up are the true label probabilities.")  # fmt: skip
        extra["kstrade.parameters"] = json.dumps(planted.parameters())
    metadata = {
        "kstrade.synthetic": "true",
        "kstrade.market": market,
        "kstrade.generator": generator(market),
        "kstrade.seed": str(seed),
        "kstrade.start": start.isoformat(),
        "kstrade.days": str(days),
        "kstrade.models": json.dumps([asdict(MODELS[s]) for s in symbols]),
        "kstrade.note": note,
        **extra,
    }
    table.write_parquet(path, metadata=metadata)
    return path
