"""Honest scoring of a direction model: accuracy and log-loss next to the naive baselines
(always-flat, last-direction), Platt calibration fitted on a later slice, ECE and a
reliability diagram PNG. Torch-free and numpy-only (no plotting library is needed)."""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kstrade.signals.calibration import ECE_BINS, Platt, expected_calibration_error

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


def calibrate(platt: Platt, winner_probability: np.ndarray) -> np.ndarray:
    return np.array([platt(float(v)) for v in winner_probability])


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


# -- a reliability diagram as a PNG, drawn on a numpy canvas ---------------------------------------
_SIZE = 320
_MARGIN = 20


def _png(pixels: np.ndarray) -> bytes:
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _to_px(v: float) -> int:
    return _MARGIN + round(v * (_SIZE - 2 * _MARGIN))


def reliability_png(curves: dict[str, ReliabilityCurve], path: Path) -> None:
    """Confidence (x) vs hit rate (y), both 0..1: grey diagonal = perfect calibration, one
    coloured series of bin markers per curve (blue, orange, green, red in the given order),
    marker area growing with the bin's share of samples."""
    img = np.full((_SIZE, _SIZE, 3), 255, dtype=np.uint8)
    lo, hi = _to_px(0.0), _to_px(1.0)
    img[_SIZE - 1 - hi : _SIZE - lo, lo] = 0
    img[_SIZE - 1 - lo, lo : hi + 1] = 0
    for k in range(0, 11):
        t = _to_px(k / 10)
        img[_SIZE - 1 - lo : _SIZE - lo + 3, t] = 0
        img[_SIZE - 1 - t, lo - 3 : lo] = 0
    for i in range(lo, hi + 1):
        img[_SIZE - 1 - i, i] = (170, 170, 170)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for (_, curve), colour in zip(curves.items(), colours, strict=False):
        total = max(sum(curve.count), 1)
        points = [
            (_to_px(c), _to_px(h), n)
            for c, h, n in zip(curve.confidence, curve.hit_rate, curve.count, strict=True)
            if n and not math.isnan(h)
        ]
        for (x0, y0, _), (x1, y1, _) in itertools.pairwise(points):
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for s in range(steps + 1):
                x = x0 + (x1 - x0) * s // steps
                y = y0 + (y1 - y0) * s // steps
                img[_SIZE - 1 - y, x] = colour
        for x, y, n in points:
            r = 2 + round(6 * math.sqrt(n / total))
            y_img = _SIZE - 1 - y
            img[max(y_img - r, 0) : y_img + r + 1, max(x - r, 0) : x + r + 1] = colour
    path.write_bytes(_png(img))
