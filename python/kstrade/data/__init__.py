"""Small real market data sets shipped with kstrade (see ATTRIBUTION.md)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

DATA_DIR = Path(__file__).parent


def eurusd_1h() -> pl.DataFrame:
    """EURUSD ask, hourly, 2017 (gym-anytrading, MIT): open_time_ms, open, high, low, close, volume."""
    frame = pl.read_csv(DATA_DIR / "eurusd_1h_ask.csv")
    return frame.select(
        pl.col("Time")
        .str.strptime(pl.Datetime("ms", "UTC"), "%d.%m.%Y %H:%M:%S%.3f")
        .dt.epoch("ms")
        .alias("open_time_ms"),
        pl.col("Open").cast(pl.Float64).alias("open"),
        pl.col("High").cast(pl.Float64).alias("high"),
        pl.col("Low").cast(pl.Float64).alias("low"),
        pl.col("Close").cast(pl.Float64).alias("close"),
        pl.col("Volume").cast(pl.Float64).alias("volume"),
    )
