"""The training set, built with the live feature code: candles -> `FeatureEngine` batch path ->
direction labels over a horizon with a dead band -> time-ordered splits -> scaled windows.

Torch-free on purpose: the label definition, the splits and the scaler are also what the
inference stage and the tests rely on, and CI has no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from kstrade.features import FEATURE_NAMES, FEATURE_VERSION, feature_names_for, features_from_frame
from kstrade.ingest import synthetic

#: Classes in the order of the Prediction schema's PredictedDirection enum (DOWN, FLAT, UP).
CLASSES = ("DOWN", "FLAT", "UP")


@dataclass(frozen=True)
class LabelDefinition:
    """Direction of close[t + horizon] vs close[t]: UP above +dead_band, DOWN below -dead_band
    (relative change), FLAT in between. Matches the signals stage's outcome re-weighting."""

    horizon_minutes: int = 5
    dead_band: float = 0.0005
    #: Minutes per candle of the base interval the labels are made on (60: 1h candles).
    bar_minutes: int = 1

    @property
    def horizon_bars(self) -> int:
        """The horizon in candles (rows) of the base interval."""
        return self.horizon_minutes // self.bar_minutes

    def as_dict(self) -> dict[str, object]:
        base = "1m" if self.bar_minutes == 1 else f"{self.bar_minutes // 60}h"
        out: dict[str, object] = {
            "target": f"direction of close[t + horizon] / close[t] - 1, t = the feature vector's {base} candle",
            "horizon_minutes": self.horizon_minutes,
            "dead_band": self.dead_band,
            "classes": list(CLASSES),
        }
        if self.bar_minutes != 1:
            out["horizon_bars"] = self.horizon_bars
        return out


@dataclass(frozen=True)
class DataSpec:
    """Which bundled data a run trains on: seeded SYNTHETIC 1m candles (see `ingest.synthetic`)
    of one market (`edge`: the planted-edge market the shipped models are trained on)."""

    symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD")
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    days: int = 21
    seed: int = 7
    market: str = synthetic.DEFAULT_MARKET


@dataclass
class SymbolSeries:
    """One symbol's ready feature rows (time order), their labels and open times."""

    symbol: str
    open_time_ms: np.ndarray  # int64 (n,)
    features: np.ndarray  # float32 (n, F)
    labels: np.ndarray  # int64 (n,), -1 where the horizon runs past the data
    previous: np.ndarray  # int64 (n,): direction of the last completed horizon, -1 if none
    #: float64 (n, 3): the true P(DOWN), P(FLAT), P(UP) of each row's label, where the data
    #: knows them (the planted-edge SYNTHETIC market); None elsewhere.
    truth: np.ndarray | None = None


def direction_labels(close: np.ndarray, label: LabelDefinition) -> np.ndarray:
    """Class index per row (0 DOWN, 1 FLAT, 2 UP); -1 for the last `horizon` rows (no future)."""
    h = label.horizon_bars
    out = np.full(close.shape[0], -1, dtype=np.int64)
    if close.shape[0] <= h:
        return out
    change = close[h:] / close[:-h] - 1.0
    out[:-h] = np.where(change > label.dead_band, 2, np.where(change < -label.dead_band, 0, 1))
    return out


def symbol_series(
    candles: pl.DataFrame, symbol: str, label: LabelDefinition, base_interval: str = "1m"
) -> SymbolSeries:
    """Features from the same engine that serves live candles, labels from the candles' closes.
    Rows still warming up are dropped; labels are aligned by open time, not by position."""
    time = pl.col("open_time_ms") if "open_time_ms" in candles.columns else pl.col("timestamp").dt.epoch("ms")
    frame = candles.select(time.alias("open_time_ms"), "open", "high", "low", "close", "volume")
    feats = features_from_frame(frame, base_interval=base_interval)
    labels = direction_labels(frame["close"].to_numpy(), label)
    # The last completed move: close[t] vs close[t - h], i.e. the label of row t - h.
    previous = np.full_like(labels, -1)
    previous[label.horizon_bars :] = labels[: -label.horizon_bars]
    by_time = pl.DataFrame({"open_time_ms": frame["open_time_ms"], "label": labels, "previous": previous})
    truth_columns = ["p_down", "p_flat", "p_up"]
    known = all(c in candles.columns for c in truth_columns)
    if known:
        by_time = by_time.with_columns(candles.select(truth_columns))
    joined = feats.join(by_time, on="open_time_ms", how="left").filter(pl.col("ready"))
    names = FEATURE_NAMES if base_interval == "1m" else feature_names_for(base_interval)
    values = joined.select(list(names)).to_numpy().astype(np.float32)
    finite = np.isfinite(values).all(axis=1)
    joined, values = joined.filter(pl.Series(finite)), values[finite]
    return SymbolSeries(
        symbol,
        joined["open_time_ms"].to_numpy().astype(np.int64),
        np.ascontiguousarray(values),
        joined["label"].fill_null(-1).to_numpy().astype(np.int64),
        joined["previous"].fill_null(-1).to_numpy().astype(np.int64),
        joined.select(truth_columns).to_numpy().astype(np.float64) if known else None,
    )


def load_series(data: DataSpec, label: LabelDefinition) -> list[SymbolSeries]:
    return [
        symbol_series(synthetic.generate(s, data.start, data.days, data.seed, data.market), s, label)
        for s in data.symbols
    ]


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


def feature_contract(base_interval: str = "1m") -> dict[str, object]:
    names = FEATURE_NAMES if base_interval == "1m" else feature_names_for(base_interval)
    return {"feature_version": FEATURE_VERSION, "feature_names": list(names)}


DRIFT_REFERENCE_FILE = "drift_reference.json"


def quantile_reference(values: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """One feature's training distribution for PSI: the inner cut points of `bins` quantile bins
    (ties merged, so edges strictly ascend; outer bins open-ended; a value on an edge counts in
    the bin above) and the training share of each bin."""
    ordered = np.sort(values.astype(np.float64))
    edges: list[float] = []
    for i in range(1, bins):
        edge = float(ordered[min(len(ordered) - 1, i * len(ordered) // bins)])
        if not edges or edge > edges[-1]:
            edges.append(edge)
    counts = np.bincount(np.searchsorted(np.asarray(edges), ordered, side="right"), minlength=len(edges) + 1)
    return {"edges": edges, "proportions": [float(c) / len(ordered) for c in counts]}


def write_drift_references(models_dir: Path, series: list[SymbolSeries], split: Split) -> list[Path]:
    """`drift_reference.json` beside each manifest under `models_dir`: the per-feature training
    distributions of the rows that model was trained on, in the shape the metrics stage's drift
    monitor reads ({"model_type", "model_version", "features": {name: {"edges", "proportions"}}}).
    A separate file, so the ONNX file and its sha256 stay as they are."""
    from kstrade.inference.manifest import Manifest, manifest_paths  # the manifest format lives with the runtime

    by_symbol = {s.symbol: s for s in series}
    written = []
    for path in manifest_paths(models_dir):
        manifest = Manifest.read(path.parent)
        rows = []
        for symbol in manifest.symbols:
            s = by_symbol[symbol]
            (a0, a1), _, _ = split.bounds(len(s.labels))
            rows.append(s.features[a0:a1])
        x = np.concatenate(rows)
        reference = {
            "model_type": manifest.model_type,
            "model_version": manifest.model_version,
            "features": {name: quantile_reference(x[:, i]) for i, name in enumerate(manifest.feature_names)},
        }
        out = path.parent / DRIFT_REFERENCE_FILE
        out.write_text(json.dumps(reference) + "\n")
        written.append(out)
    return written
