"""Does the model card hold on data it has never seen? The shipped models (ONNX, no torch) are
run over a fresh SYNTHETIC period and seed, through the same feature code, and each model's
log-loss and accuracy are set beside the card's: a figure holds when the fresh one falls in the
card's 95% interval widened for a replicate (x sqrt 2: two samples' noise, not one).

`python -m kstrade train --evaluate --seed 11` prints the table; tests/test_demo.py runs it in CI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from kstrade.inference.manifest import manifest_paths
from kstrade.inference.runtime import LoadedModel
from kstrade.training import dataset as ds
from kstrade.training import evaluation as ev

#: A fresh period by default: after the shipped models' data (January 2026) ends; the seeds and
#: length of the fresh periods `train` evaluates every model on for the card.
FRESH_START = datetime(2026, 3, 2, tzinfo=UTC)
FRESH_SEEDS = (11, 12, 13, 14, 15)
FRESH_DAYS = 6


@dataclass(frozen=True)
class Check:
    """One figure of one model: the card's value and interval, the fresh value, and whether it
    falls in the card's interval widened for a replicate."""

    model: str
    figure: str
    card: float
    interval: tuple[float, float]
    fresh: float
    samples: int

    @property
    def replicate_interval(self) -> tuple[float, float]:
        lo, hi = self.interval
        half = (hi - lo) / 2 * math.sqrt(2)
        return (self.card - half, self.card + half)

    @property
    def holds(self) -> bool:
        lo, hi = self.replicate_interval
        return lo <= self.fresh <= hi


@dataclass(frozen=True)
class Fresh:
    """One model on fresh data: its log-loss and accuracy, and the log-loss of the best constant
    forecast of that data (its own class frequencies: a baseline that even knows the future mix)."""

    model: str
    samples: int
    log_loss: float
    accuracy: float
    constant_log_loss: float
    card: dict[str, Any]


def fresh_scores(models_dir: Path, data: ds.DataSpec, label: ds.LabelDefinition | None = None) -> list[Fresh]:
    """Every model under `models_dir` on every labelled window of `data`'s series."""
    label = label or ds.LabelDefinition()
    series = {s.symbol: s for s in ds.load_series(data, label)}
    scores = []
    for path in manifest_paths(models_dir):
        model = LoadedModel.load(path.parent)
        m = model.manifest
        probabilities, labels = [], []
        for symbol in m.symbols:
            s = series[symbol]
            mean, inv_std = model.scalers[symbol]
            x = ((s.features - mean) * inv_std).astype(np.float32)
            ends = ds.window_ends(s.labels, 0, len(s.labels), m.window)
            probabilities.append(model.probabilities(ds.gather_windows(x, ends, m.window)))
            labels.append(s.labels[ends])
        p, y = np.concatenate(probabilities), np.concatenate(labels)
        constant = np.tile(ev.class_frequencies(y), (len(y), 1))
        name = f"{m.model_type} {m.symbols[0]}" if m.model_type == "lstm" else "transformer (all symbols)"
        scores.append(Fresh(name, len(y), ev.log_loss(p, y), ev.accuracy(p, y), ev.log_loss(constant, y), m.metrics))
    return scores


def checks(scores: list[Fresh]) -> list[Check]:
    """The card's log-loss and accuracy of every scored model beside the same fresh figures."""
    out = []
    for f in scores:
        intervals = f.card.get("intervals")
        if intervals is None:
            raise ValueError(f"{f.model}: the card has no intervals to check against (retrain with this version)")
        card = f.card["model"]
        out.append(Check(f.model, "log_loss", card["log_loss"], tuple(intervals["log_loss"]), f.log_loss, f.samples))
        out.append(Check(f.model, "accuracy", card["accuracy"], tuple(intervals["accuracy"]), f.accuracy, f.samples))
    return out


def reevaluate(models_dir: Path, data: ds.DataSpec, label: ds.LabelDefinition | None = None) -> list[Check]:
    """`checks` of every model under `models_dir` on `data`."""
    return checks(fresh_scores(models_dir, data, label))


def report(checks: list[Check]) -> str:
    lines = [f"{'model':<28} {'figure':<9} {'card':>7} {'replicate 95%':>18} {'fresh':>7} {'n':>6}  verdict"]
    for c in checks:
        lo, hi = c.replicate_interval
        verdict = "holds" if c.holds else "OUTSIDE"
        span = f"[{lo:>7.4f}, {hi:>7.4f}]"
        lines.append(f"{c.model:<28} {c.figure:<9} {c.card:>7.4f} {span} {c.fresh:>7.4f} {c.samples:>6}  {verdict}")
    return "\n".join(lines)
