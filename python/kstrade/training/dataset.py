"""The training set, built with the live feature code: candles -> `FeatureEngine` batch path ->
direction labels over a horizon with a dead band -> time-ordered splits -> scaled windows.

Torch-free on purpose: the label definition, the splits and the scaler are also what the
inference stage and the tests rely on, and CI has no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from kstrade.features import FEATURE_NAMES, FEATURE_VERSION, features_from_frame
from kstrade.ingest import synthetic

#: Classes in the order of the Prediction schema's PredictedDirection enum (DOWN, FLAT, UP).
CLASSES = ("DOWN", "FLAT", "UP")


@dataclass(frozen=True)
class LabelDefinition:
    """Direction of close[t + horizon] vs close[t]: UP above +dead_band, DOWN below -dead_band
    (relative change), FLAT in between. Matches the signals stage's outcome re-weighting."""

    horizon_minutes: int = 5
    dead_band: float = 0.0005

    def as_dict(self) -> dict[str, object]:
        return {
            "target": "direction of close[t + horizon] / close[t] - 1, t = the feature vector's 1m candle",
            "horizon_minutes": self.horizon_minutes,
            "dead_band": self.dead_band,
            "classes": list(CLASSES),
        }


@dataclass(frozen=True)
class DataSpec:
    """Which bundled data a run trains on: seeded SYNTHETIC 1m candles (see `ingest.synthetic`)."""

    symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD")
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    days: int = 14
    seed: int = 7


@dataclass
class SymbolSeries:
    """One symbol's ready feature rows (time order), their labels and open times."""

    symbol: str
    open_time_ms: np.ndarray  # int64 (n,)
    features: np.ndarray  # float32 (n, F)
    labels: np.ndarray  # int64 (n,), -1 where the horizon runs past the data
    previous: np.ndarray  # int64 (n,): direction of the last completed horizon, -1 if none


def direction_labels(close: np.ndarray, label: LabelDefinition) -> np.ndarray:
    """Class index per row (0 DOWN, 1 FLAT, 2 UP); -1 for the last `horizon` rows (no future)."""
    h = label.horizon_minutes
    out = np.full(close.shape[0], -1, dtype=np.int64)
    if close.shape[0] <= h:
        return out
    change = close[h:] / close[:-h] - 1.0
    out[:-h] = np.where(change > label.dead_band, 2, np.where(change < -label.dead_band, 0, 1))
    return out


def symbol_series(candles: pl.DataFrame, symbol: str, label: LabelDefinition) -> SymbolSeries:
    """Features from the same engine that serves live candles, labels from the candles' closes.
    Rows still warming up are dropped; labels are aligned by open time, not by position."""
    frame = candles.select(
        pl.col("timestamp").dt.epoch("ms").alias("open_time_ms"), "open", "high", "low", "close", "volume"
    )
    feats = features_from_frame(frame)
    labels = direction_labels(frame["close"].to_numpy(), label)
    # The last completed move: close[t] vs close[t - h], i.e. the label of row t - h.
    previous = np.full_like(labels, -1)
    previous[label.horizon_minutes :] = labels[: -label.horizon_minutes]
    by_time = pl.DataFrame({"open_time_ms": frame["open_time_ms"], "label": labels, "previous": previous})
    joined = feats.join(by_time, on="open_time_ms", how="left").filter(pl.col("ready"))
    values = joined.select(list(FEATURE_NAMES)).to_numpy().astype(np.float32)
    finite = np.isfinite(values).all(axis=1)
    joined, values = joined.filter(pl.Series(finite)), values[finite]
    return SymbolSeries(
        symbol,
        joined["open_time_ms"].to_numpy().astype(np.int64),
        np.ascontiguousarray(values),
        joined["label"].fill_null(-1).to_numpy().astype(np.int64),
        joined["previous"].fill_null(-1).to_numpy().astype(np.int64),
    )


def load_series(data: DataSpec, label: LabelDefinition) -> list[SymbolSeries]:
    return [symbol_series(synthetic.generate(s, data.start, data.days, data.seed), s, label) for s in data.symbols]


@dataclass(frozen=True)
class Split:
    """Time-ordered split points as fractions of each symbol's rows: train, then calibration,
    then test. Never shuffled; the gap of `horizon` rows keeps a label from seeing the next slice."""

    train: float = 0.6
    calibration: float = 0.2

    def bounds(self, n: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        a = int(n * self.train)
        b = int(n * (self.train + self.calibration))
        return (0, a), (a, b), (b, n)


@dataclass(frozen=True)
class Scaler:
    """Per-feature standardisation fitted on the training slice only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        # A constant feature (std 0) would divide by zero: leave it unscaled around its mean.
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray((x - self.mean) / self.std, dtype=np.float32)

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


def window_ends(labels: np.ndarray, lo: int, hi: int, window: int, stride: int = 1) -> np.ndarray:
    """Rows in [lo, hi) that can end a training window: a labelled row with `window - 1`
    rows of history before it."""
    ends = np.arange(max(lo, window - 1), hi, stride)
    return ends[labels[ends] >= 0]


def gather_windows(x: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """(len(ends), window, F): the rows ending at each of `ends`, oldest first (as live)."""
    idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]
    return np.ascontiguousarray(x[idx])


def feature_contract() -> dict[str, object]:
    return {"feature_version": FEATURE_VERSION, "feature_names": list(FEATURE_NAMES)}
