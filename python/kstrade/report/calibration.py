"""How well the run's stated confidence matched what happened, for the run report: every
decided candle's calibrated signal (`signals.calibrated`: its side and confidence) against the
label the models learn (did the close 5 minutes later move beyond the dead band that way), and,
where the SYNTHETIC generator knows it, against the true probability of that move.

A confidence of 0.7 should come true 7 times in 10 (the reliability diagram's diagonal). On real
data only the outcomes can say so, with their sampling noise; on the planted-edge market the true
probabilities say it exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from kstrade.bus import Record
from kstrade.schemas import Codec, Signal
from kstrade.signals import wire
from kstrade.training.dataset import LabelDefinition

#: Confidence bins of the diagram (equal width on [0, 1]).
BINS = 10


def calibrated_signals(records: list[Record]) -> pl.DataFrame:
    """(symbol, open_time_ms, long, confidence) of each calibrated signal of `records`."""
    codec = Codec(Signal)
    rows = []
    for record in records:
        value = record.value
        try:
            f = wire.read_signal(value) if wire.ENABLED and value is not None else dict(codec.decode_record(record))
        except Exception:
            continue
        rows.append((f["symbol"], int(f["timestamp"].timestamp() * 1000), f["direction"].value == "LONG",
                     float(f["confidence"])))  # fmt: skip
    schema = {"symbol": pl.String, "open_time_ms": pl.Int64, "long": pl.Boolean, "confidence": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _outcomes(candles: pl.DataFrame, label: LabelDefinition) -> pl.DataFrame:
    """(symbol, open_time_ms, up, down): did the close `horizon` minutes later move beyond the
    dead band up or down (null where the data ends first)."""
    later = candles.select(
        "symbol",
        (pl.col("open_time_ms") - label.horizon_minutes * 60_000).alias("open_time_ms"),
        pl.col("close").alias("later"),
    )
    joined = candles.select("symbol", "open_time_ms", "close").join(later, on=["symbol", "open_time_ms"], how="left")
    change = pl.col("later") / pl.col("close") - 1.0
    return joined.select(
        "symbol", "open_time_ms", (change > label.dead_band).alias("up"), (change < -label.dead_band).alias("down")
    )


def _ece(confidence: np.ndarray, target: np.ndarray, bins: np.ndarray) -> float:
    n = confidence.shape[0]
    return float(sum(abs(confidence[bins == b].sum() - target[bins == b].sum()) / n for b in range(BINS)))


def reliability(records: list[Record], candles: pl.DataFrame, truth: pl.DataFrame | None) -> dict[str, Any]:
    """The reliability of the calibrated confidence (`records`: the run's `signals.calibrated`;
    `candles`: symbol, open_time_ms, close): per bin the signals, their mean confidence,
    the share that came true (with a 95% Wilson interval) and, given `truth` (symbol,
    open_time_ms, p_down, p_up), the mean true probability; ECE against outcomes and truth."""
    return reliability_of(calibrated_signals(records), candles, truth)


def reliability_of(stated: pl.DataFrame, candles: pl.DataFrame, truth: pl.DataFrame | None) -> dict[str, Any]:
    """`reliability` of the signals `calibrated_signals` gives (in any order)."""
    stated = stated.sort("symbol", "open_time_ms", maintain_order=True)
    joined = stated.join(_outcomes(candles, LabelDefinition()), on=["symbol", "open_time_ms"], how="inner")
    joined = joined.filter(pl.col("up").is_not_null())
    if truth is not None:
        joined = joined.join(truth, on=["symbol", "open_time_ms"], how="left")
    if joined.is_empty():
        return {"signals": 0, "bins": [], "ece_vs_outcomes": None, "ece_vs_truth": None}
    confidence = joined["confidence"].to_numpy()
    long = joined["long"].to_numpy()
    hit = np.where(long, joined["up"].to_numpy(), joined["down"].to_numpy()).astype(float)
    true_p = None
    if truth is not None and joined["p_up"].null_count() == 0:
        true_p = np.where(long, joined["p_up"].to_numpy(), joined["p_down"].to_numpy())
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    table = []
    for b in range(BINS):
        m = bins == b
        n = int(m.sum())
        if not n:
            continue
        hits = int(hit[m].sum())
        table.append(
            {
                "bin": f"{b / BINS:.1f}-{(b + 1) / BINS:.1f}",
                "signals": n,
                "mean_confidence": float(confidence[m].mean()),
                "hit_rate": hits / n,
                "hit_rate_interval": list(wilson(hits, n)),
                "true_probability": None if true_p is None else float(true_p[m].mean()),
            }
        )
    return {
        "signals": int(confidence.shape[0]),
        "bins": table,
        "ece_vs_outcomes": _ece(confidence, hit, bins),
        "ece_vs_truth": None if true_p is None else _ece(confidence, true_p, bins),
    }


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate of `hits` in `n`."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n hits the bound is exactly 0 or 1 (the float sum misses it by an ulp or so).
    return (0.0 if hits == 0 else max(0.0, centre - half), 1.0 if hits == n else min(1.0, centre + half))
