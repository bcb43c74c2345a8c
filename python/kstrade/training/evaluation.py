"""Honest scoring of a direction model: accuracy and log-loss next to the naive baselines
(always-flat, last-direction), calibration fitted on a later slice (Platt, or isotonic where it
beats Platt), ECE and a reliability diagram. Torch-free: numpy, with scikit-learn (isotonic) and
matplotlib (the diagram) from the `train` extra, each optional."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kstrade.signals.calibration import ECE_BINS, Calibrator, Isotonic, Platt, expected_calibration_error

log = logging.getLogger("kstrade.training")

_EPS = 1e-7


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probabilities[np.arange(labels.shape[0]), labels], _EPS, 1.0)
    return float(-np.mean(np.log(p)))


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def class_frequencies(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=3).astype(np.float64)
    return np.asarray(counts / counts.sum())


def always_flat(labels: np.ndarray, train_frequencies: np.ndarray) -> np.ndarray:
    """Baseline 1: predict FLAT; its probabilities are the training slice's class frequencies
    (the best constant forecast), so its log-loss is a fair floor to beat."""
    return np.tile(train_frequencies, (labels.shape[0], 1))


def last_direction(
    previous: np.ndarray, train_frequencies: np.ndarray, train_previous: np.ndarray, train_labels: np.ndarray
) -> np.ndarray:
    """Baseline 2: momentum. The class is the direction of the last completed horizon; its
    probabilities are the training slice's P(label | last direction)."""
    table = np.zeros((3, 3))
    for k in range(3):
        seen = train_labels[train_previous == k]
        table[k] = (np.bincount(seen, minlength=3) + 1.0) / (seen.shape[0] + 3.0) if seen.size else train_frequencies
    return np.asarray(table[previous])


def fit_platt(winner_probability: np.ndarray, correct: np.ndarray, iterations: int = 50) -> Platt:
    """Platt scaling of the winning class's probability by Newton's method on the log-loss
    of (a * logit(p) + b) against whether the winner was right."""
    p = np.clip(winner_probability.astype(np.float64), 1e-9, 1 - 1e-9)
    z = np.log(p / (1 - p))
    y = correct.astype(np.float64)
    a, b = 1.0, 0.0
    for _ in range(iterations):
        q = 1.0 / (1.0 + np.exp(-(a * z + b)))
        g = np.array([np.sum((q - y) * z), np.sum(q - y)])
        w = q * (1 - q)
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return Platt(a, b)


def calibrate(calibrator: Calibrator, winner_probability: np.ndarray) -> np.ndarray:
    return np.array([calibrator(float(v)) for v in winner_probability])


def isotonic_bounds(rows: int) -> tuple[float, float]:
    """The lowest and highest probability an isotonic fit on `rows` outcomes may state:
    1 / (n + 2) and (n + 1) / (n + 2)."""
    return 1.0 / (rows + 2), (rows + 1.0) / (rows + 2)


def fit_isotonic(winner_probability: np.ndarray, correct: np.ndarray) -> Isotonic:
    """Isotonic regression (scikit-learn, the `train` extra) of whether the winner was right on
    its probability, as the breakpoints the signals stage's `Isotonic` interpolates: linear
    between them and flat outside, as scikit-learn's own `predict` with out_of_bounds="clip"."""
    from sklearn.isotonic import IsotonicRegression

    # Never certain: outputs stay within the rule of succession's bounds for n outcomes (a step of
    # all hits on a few rows would otherwise say 1.0, and the signals stage would trade it so).
    low, high = isotonic_bounds(len(correct))
    model = IsotonicRegression(y_min=low, y_max=high, increasing=True, out_of_bounds="clip")
    model.fit(winner_probability.astype(np.float64), correct.astype(np.float64))
    x = tuple(float(v) for v in model.X_thresholds_)
    y = tuple(float(v) for v in model.y_thresholds_)
    if len(x) < 2:
        raise ValueError("isotonic calibration needs at least two distinct probabilities")
    return Isotonic(x, y)


def ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    return expected_calibration_error([float(c) for c in confidence], [bool(c) for c in correct], ECE_BINS)


#: Block length (rows: minutes of one symbol) and resamples of the bootstrap intervals. Labels
#: five minutes ahead overlap and volatility clusters, so rows are not independent: resampling
#: hour-long blocks keeps that dependence inside each block.
BOOTSTRAP_BLOCK = 360
BOOTSTRAP_RESAMPLES = 1000


def per_row_log_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.asarray(-np.log(np.clip(probabilities[np.arange(labels.shape[0]), labels], _EPS, 1.0)))


def interval(per_row: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A `level` interval of the mean of `per_row` by a circular block bootstrap
    (`BOOTSTRAP_BLOCK` rows per block, `BOOTSTRAP_RESAMPLES` resamples, seeded)."""
    n = per_row.shape[0]
    block = min(BOOTSTRAP_BLOCK, n)
    blocks = -(-n // block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(BOOTSTRAP_RESAMPLES, -1)[:, :n] % n
    means = per_row[idx].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def binary_log_loss(calibrated: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Per row: the log-loss of the calibrated probability that the winning class is right."""
    p = np.clip(calibrated.astype(np.float64), _EPS, 1 - _EPS)
    return np.asarray(-np.where(correct, np.log(p), np.log(1 - p)))


#: The calibration slice's rows, per symbol and by time: the earlier part fits both calibrators
#: for the choice, the later part (`SELECTION_HELD_OUT` of the slice) scores them; the rows whose
#: labels reach into the later part are purged from the choice (as the slices are).
FIT, HELD_OUT, PURGED = 0, 1, 2
SELECTION_HELD_OUT = 1 / 3
#: Fewer fit or held-out rows than this and isotonic is not tried: its steps need data to be
#: judged, and the interval needs several bootstrap blocks (one block would be the sample itself).
SELECTION_MIN_ROWS = 5 * BOOTSTRAP_BLOCK


def calibration_parts(ends: np.ndarray, start: int, end: int, horizon: int) -> np.ndarray:
    """FIT, HELD_OUT or PURGED for each calibration window ending on row `ends[i]` of the slice
    [start, end) of one symbol, whose labels look `horizon` rows ahead."""
    cut = start + round((end - start) * (1 - SELECTION_HELD_OUT))
    return np.where(ends >= cut, HELD_OUT, np.where(ends < cut - horizon, FIT, PURGED)).astype(np.int8)


@dataclass(frozen=True)
class CalibrationChoice:
    """The calibrator a manifest gets, as the signals stage reads it (`spec`), and the record of
    how it was chosen (`selection`, for the manifest's `calibration_fit`)."""

    calibrator: Platt | Isotonic
    spec: dict[str, Any]
    platt: Platt
    selection: dict[str, Any]


def _spec(calibrator: Platt | Isotonic) -> dict[str, Any]:
    if isinstance(calibrator, Platt):
        return {"method": "platt", "a": calibrator.a, "b": calibrator.b}
    return {"method": "isotonic", "x": list(calibrator.x), "y": list(calibrator.y)}


def choose_calibration(winner_probability: np.ndarray, correct: np.ndarray, parts: np.ndarray) -> CalibrationChoice:
    """Platt, unless isotonic regression beats it on held-out rows of the calibration slice.

    Both are fitted on the FIT rows and scored on the HELD_OUT rows by log-loss of whether the
    winner was right. Isotonic is chosen only where its loss is lower beyond noise: the 95%
    interval (`interval`, the block bootstrap of the test figures) of Platt's loss minus
    isotonic's, per held-out row, lies above zero. Log-loss rather than ECE: it is a proper score,
    so it judges sharpness as well as calibration and punishes a step that says 1.0 and is wrong
    (the risk of isotonic's steps on few rows), where ECE's bins can call a constant forecast of
    the base rate perfect. Platt (two parameters, smooth) is kept when the two cannot be told
    apart. The chosen method is then refitted on the whole slice."""
    platt = fit_platt(winner_probability, correct)
    fit, held = parts == FIT, parts == HELD_OUT
    selection: dict[str, Any] = {
        "criterion": "log-loss of whether the winner was right, on the held-out last third of each symbol's "
        "calibration rows, both fitted on the rows before it; isotonic only where the 95% block-bootstrap "
        "interval of (platt - isotonic) per row is above zero",
        "fit_rows": int(fit.sum()),
        "held_out_rows": int(held.sum()),
    }
    chosen: Platt | Isotonic = platt
    if held.sum() < SELECTION_MIN_ROWS or fit.sum() < SELECTION_MIN_ROWS:
        selection["isotonic"] = f"not tried: fewer than {SELECTION_MIN_ROWS} rows to fit it on or judge it by"
    else:
        try:
            isotonic = fit_isotonic(winner_probability[fit], correct[fit])
        except ImportError:
            log.warning("isotonic calibration not tried: scikit-learn is not installed (pip install 'kstrade[train]')")
            selection["isotonic"] = "not tried: scikit-learn is not installed"
        else:
            platt_part = fit_platt(winner_probability[fit], correct[fit])
            p_loss = binary_log_loss(calibrate(platt_part, winner_probability[held]), correct[held])
            i_loss = binary_log_loss(calibrate(isotonic, winner_probability[held]), correct[held])
            low, high = interval(p_loss - i_loss)
            better = low > 0
            selection |= {
                "held_out_log_loss": {
                    "platt": round(float(p_loss.mean()), 5),
                    "isotonic": round(float(i_loss.mean()), 5),
                },
                "platt_minus_isotonic_95": [round(low, 5), round(high, 5)],
                "isotonic": "chosen: lower log-loss beyond noise" if better else "not chosen: not better beyond noise",
            }
            if better:
                chosen = fit_isotonic(winner_probability, correct)
    selection["method"] = "isotonic" if isinstance(chosen, Isotonic) else "platt"
    return CalibrationChoice(chosen, _spec(chosen), platt, selection)


def brier(probabilities: np.ndarray, target: np.ndarray) -> float:
    """Multi-class Brier score: the mean over rows of sum_k (p_k - t_k)^2, where the target is
    either the labels (one-hot: against outcomes) or the true class probabilities."""
    if target.ndim == 1:
        target = np.eye(3)[target]
    return float(np.mean(np.sum((probabilities - target) ** 2, axis=1)))


def ece_against_truth(confidence: np.ndarray, true_probability: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE against the truth instead of outcomes: the bin-weighted mean gap between stated
    confidence and the true probability of the class it was stated for (no sampling noise from
    outcomes: where the truth is known, this is calibration itself)."""
    b = np.minimum((confidence * bins).astype(int), bins - 1)
    n = confidence.shape[0]
    return float(sum(abs(confidence[b == k].sum() - true_probability[b == k].sum()) / n for k in range(bins)))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per confidence bin: mean confidence, hit rate, count (empty bins have count 0)."""

    confidence: list[float]
    hit_rate: list[float]
    count: list[int]


def reliability_curve(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> ReliabilityCurve:
    b = np.minimum((confidence * bins).astype(int), bins - 1)
    conf, hit, cnt = [], [], []
    for k in range(bins):
        m = b == k
        n = int(m.sum())
        cnt.append(n)
        conf.append(float(confidence[m].mean()) if n else (k + 0.5) / bins)
        hit.append(float(correct[m].mean()) if n else math.nan)
    return ReliabilityCurve(conf, hit, cnt)


# -- the reliability diagram -----------------------------------------------------------------------
#: One colour per series, in the order given (matplotlib's default cycle: blue, orange, green, red).
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def reliability_png(
    curves: dict[str, ReliabilityCurve], path: Path, title: str = "Reliability on the test slice"
) -> bool:
    """Confidence (x) vs hit rate (y), both 0..1, drawn with matplotlib (Agg): the diagonal is
    perfect calibration, one coloured series per curve (its ECE in the legend) with marker area
    growing with the bin's share of samples. Without matplotlib (the `train` extra) nothing is
    drawn, a warning says why, and it returns False."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("%s not drawn: matplotlib is not installed (pip install 'kstrade[train]')", path)
        return False
    figure = Figure(figsize=(6.4, 6.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # no pyplot: no global state, no display needed
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for (name, curve), colour in zip(curves.items(), _COLOURS, strict=False):
        points = [
            (c, h, n)
            for c, h, n in zip(curve.confidence, curve.hit_rate, curve.count, strict=True)
            if n and not math.isnan(h)
        ]
        total = max(sum(curve.count), 1)
        # The bins' mean confidence and hit rate give the ECE itself (same bins, same weights).
        ece_value = sum(n * abs(c - h) for c, h, n in points) / total
        xs, ys = [c for c, _, _ in points], [h for _, h, _ in points]
        ax.plot(xs, ys, color=colour, linewidth=1.5, label=f"{name} (ECE {ece_value:.3f})")
        sizes = [12 + 400 * n / total for _, _, n in points]
        ax.scatter(xs, ys, s=sizes, color=colour, alpha=0.6, edgecolors="white", linewidths=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("stated confidence (the winning class's probability)")
    ax.set_ylabel("hit rate (share of those predictions that were right)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    legend_title = f"{ECE_BINS} bins; marker area ~ share of samples"
    ax.legend(loc="upper left", fontsize="small", title=legend_title, title_fontsize="small")
    figure.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same plot, same bytes
    return True
