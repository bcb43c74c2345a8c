"""`FeatureEngine`: the native per-symbol engine plus a polars batch path for training data.

The batch path hands whole columns to the same Rust `update` loop that serves live candles
(with the GIL released), so training features and live features cannot differ.
"""

from __future__ import annotations

import numpy as np
import polars as pl

import kstrade._native as _native
from kstrade._native import FEATURE_VERSION, MarketError

FEATURE_NAMES: tuple[str, ...] = tuple(_native.FeatureEngine.feature_names())
#: Milliseconds per candle of each base interval the engine runs on (`kstrade.config.BASE_INTERVALS`).
BASE_INTERVAL_MS = {"1m": 60_000, "1h": 3_600_000}


def feature_names_for(base_interval: str) -> tuple[str, ...]:
    """The names of an engine's values on `base_interval` candles: `FEATURE_NAMES` on 1m; on 1h
    the same features named for its timeframes (`1h_`, `4h_`, `8h_`, `1d_`, `gap_hours`)."""
    return tuple(_native.FeatureEngine.feature_names(base_interval))


_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


def _open_time_ms(frame: pl.DataFrame) -> np.ndarray:
    if "open_time_ms" in frame.columns:
        return frame["open_time_ms"].cast(pl.Int64).to_numpy()
    if "open_time" in frame.columns and frame.schema["open_time"].is_temporal():
        return frame["open_time"].dt.epoch("ms").cast(pl.Int64).to_numpy()
    raise KeyError("candles need an 'open_time_ms' (int, UTC epoch ms) or 'open_time' (datetime) column")


class FeatureEngine(_native.FeatureEngine):
    """Per-symbol multi-timeframe feature engine (see `kstrade.features`)."""

    # No instance `__dict__`: `engine.update` then resolves without a dict probe, which is a
    # measurable share of a sub-microsecond update.
    __slots__ = ("names", "rejected")

    version: str = FEATURE_VERSION

    def __init__(self, base_interval: str = "1m") -> None:
        self.rejected: list[tuple[int, str, str]] = []
        self.names: tuple[str, ...] = FEATURE_NAMES if base_interval == "1m" else feature_names_for(base_interval)

    def update_frame(self, candles: pl.DataFrame, *, strict: bool = True) -> pl.DataFrame:
        """Feature rows for a frame of base-interval candles (`open_time_ms` or `open_time`, open, high,
        low, close, volume), one row per accepted candle: `open_time_ms`, `ready`, then the
        features in `FEATURE_NAMES` order. Duplicates produce no row. Rejected candles raise
        `MarketError` when `strict`, else they are listed in `self.rejected` as
        `(row index, code, message)` and skipped (the engine has consumed the rows before
        them either way).
        """
        times = np.ascontiguousarray(_open_time_ms(candles), dtype=np.int64)
        prices = [np.ascontiguousarray(candles[c].cast(pl.Float64).to_numpy()) for c in _PRICE_COLUMNS]
        raw, open_times, ready, rejected = self.update_batch(times, *prices)
        self.rejected = list(rejected)
        if strict and rejected:
            index, code, message = rejected[0]
            error = MarketError(f"{len(rejected)} candle(s) rejected; first at row {index}: {message}")
            error.code = code
            raise error
        # Feature-major from the engine: each feature's column is one contiguous slice.
        values = np.frombuffer(raw, dtype=np.float64).reshape(len(self.names), len(open_times))
        columns: dict[str, object] = {
            "open_time_ms": pl.Series("open_time_ms", open_times, dtype=pl.Int64),
            "ready": pl.Series("ready", ready, dtype=pl.Boolean),
        }
        columns.update(zip(self.names, values, strict=True))
        return pl.DataFrame(columns)


def features_from_frame(candles: pl.DataFrame, *, strict: bool = True, base_interval: str = "1m") -> pl.DataFrame:
    """Feature rows for a whole history of one symbol's candles of `base_interval`, from a fresh engine."""
    return FeatureEngine(base_interval).update_frame(candles, strict=strict)
