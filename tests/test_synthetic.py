"""The synthetic 1m generator: labelled synthetic, deterministic, valid candles, and the stylised
facts it promises (target daily volatility, heavy tails, volatility clustering, intraday shape)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kstrade.ingest.synthetic import MODELS, generate

START = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def btc() -> pl.DataFrame:
    return generate("BTC-USD", START, 60, seed=11)


def test_candles_are_valid_and_on_every_utc_minute(btc: pl.DataFrame) -> None:
    assert btc.height == 60 * 1440
    ts = btc["timestamp"].dt.epoch("s").to_numpy()
    assert ts[0] == int(START.timestamp()) and np.all(np.diff(ts) == 60)
    o, h, low, c, v = (btc[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert np.all(h >= np.maximum(o, c)) and np.all(low <= np.minimum(o, c))
    assert np.all(v > 0) and np.all(np.isfinite(c)) and np.all(low > 0)
    assert np.array_equal(o[1:], c[:-1])  # continuous market: open = previous close


@pytest.mark.parametrize("symbol", list(MODELS))
def test_realised_daily_volatility_is_calibrated(symbol: str) -> None:
    df = generate(symbol, START, 60, seed=3)
    r = np.diff(np.log(df["close"].to_numpy()))
    per_day = r[: 59 * 1440].reshape(59, 1440)
    realised = np.sqrt(np.mean((per_day**2).sum(axis=1)))
    assert realised == pytest.approx(MODELS[symbol].daily_vol, rel=0.15)


def test_returns_are_heavy_tailed_and_volatility_clusters(btc: pl.DataFrame) -> None:
    r = np.diff(np.log(btc["close"].to_numpy()))
    z = (r - r.mean()) / r.std()
    assert np.mean(z**4) > 5  # a normal distribution has kurtosis 3
    a = np.abs(z)
    lag1 = np.corrcoef(a[:-1], a[1:])[0, 1]
    assert lag1 > 0.1  # |returns| are autocorrelated: quiet and busy spells


def test_the_us_open_is_busier_than_the_asian_night(btc: pl.DataFrame) -> None:
    r = np.abs(np.diff(np.log(btc["close"].to_numpy())))
    hour = btc["timestamp"].dt.hour().to_numpy()[1:]
    assert r[(hour >= 14) & (hour < 16)].mean() > 1.3 * r[(hour >= 3) & (hour < 5)].mean()


def test_same_seed_same_bytes_and_labelled_synthetic(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "kstrade", "data", "synth", "--symbols", "ETH-USD,SOL-USD", "--days", "2"]
    cmd += ["--market", "control"]
    paths = []
    for out in ("a", "b"):
        done = subprocess.run([*cmd, "--out", str(tmp_path / out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "SYNTHETIC" in done.stdout
        [path] = (tmp_path / out).glob("*.parquet")
        paths.append(path)
    assert paths[0].name.startswith("synthetic_") and paths[0].name == paths[1].name
    assert paths[0].read_bytes() == paths[1].read_bytes()
    meta = pl.read_parquet_metadata(paths[0])
    assert meta["kstrade.synthetic"] == "true" and "SYNTHETIC" in meta["kstrade.note"]
    df = pl.read_parquet(paths[0])
    assert sorted(df["symbol"].unique().to_list()) == ["ETH-USD", "SOL-USD"]
    other = generate("ETH-USD", START, 2, seed=8)
    assert not np.array_equal(other["close"].to_numpy(), df.filter(pl.col("symbol") == "ETH-USD")["close"].to_numpy())


def test_unknown_symbols_and_bad_starts_are_refused() -> None:
    with pytest.raises(ValueError, match="DOGE-USD"):
        generate("DOGE-USD", START, 1, 1)
    with pytest.raises(ValueError, match="whole minute"):
        generate("BTC-USD", datetime(2026, 1, 5, 0, 0, 30, tzinfo=UTC), 1, 1)
