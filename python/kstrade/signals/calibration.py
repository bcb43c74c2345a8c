"""Calibrators that turn a model's raw probability into a calibrated one, built from the plain
data a model manifest stores, and the expected calibration error (ECE) that judges them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kstrade.config import CalibratorSpec

#: Probabilities are kept this far inside (0, 1) before a logit, so Platt never sees +-inf.
_EDGE = 1e-9

#: Bins of the expected calibration error, as the reference asks (15 equal-width bins).
ECE_BINS = 15


class Calibrator(Protocol):
    """Maps a raw probability in [0, 1] to a calibrated one in [0, 1], monotonically."""

    def __call__(self, probability: float) -> float: ...


@dataclass(frozen=True, slots=True)
class Platt:
    """Platt scaling on the logit of the raw probability: sigmoid(a * logit(p) + b).
    a = 1, b = 0 is the identity; a < 1 shrinks over-confident models toward 0.5."""

    a: float
    b: float

    def __call__(self, probability: float) -> float:
        p = min(max(probability, _EDGE), 1.0 - _EDGE)
        z = self.a * math.log(p / (1.0 - p)) + self.b
        # Split by sign so exp never overflows for large |z|.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Isotonic:
    """Isotonic regression as its breakpoints: linear between (x[i], y[i]), flat outside."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, probability: float) -> float:
        x, y = self.x, self.y
        if probability <= x[0]:
            return y[0]
        if probability >= x[-1]:
            return y[-1]
        i = bisect.bisect_right(x, probability)
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        return y0 + (y1 - y0) * (probability - x0) / (x1 - x0)


def calibrator_from_spec(spec: CalibratorSpec) -> Calibrator:
    if spec.method == "platt":
        assert spec.a is not None and spec.b is not None  # checked by CalibratorSpec
        return Platt(spec.a, spec.b)
    assert spec.x is not None and spec.y is not None
    return Isotonic(tuple(spec.x), tuple(spec.y))


def calibrator_from_manifest(manifest: Mapping[str, Any]) -> tuple[str, Calibrator]:
    """(model_version, calibrator) from a model manifest: the fields read are
    `model_version` and `calibration` = {"method": "platt", "a", "b"} or
    {"method": "isotonic", "x": [...], "y": [...]}. Raises ValueError naming what is wrong."""
    version = manifest.get("model_version")
    if not isinstance(version, str) or not version:
        raise ValueError("manifest: model_version must be a non-empty string")
    calibration = manifest.get("calibration")
    if not isinstance(calibration, Mapping):
        raise ValueError(f"manifest {version}: calibration must be an object")
    return version, calibrator_from_spec(CalibratorSpec.model_validate(dict(calibration)))


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """ECE: the bin-weighted mean gap between stated confidence and realised hit rate, over
    `bins` equal-width confidence bins on [0, 1] (a confidence of exactly 1 falls in the last)."""
    if len(confidence) != len(correct):
        raise ValueError(f"{len(confidence)} confidences for {len(correct)} outcomes")
    if not confidence:
        raise ValueError("no samples")
    total = [0.0] * bins
    hits = [0] * bins
    counts = [0] * bins
    for c, ok in zip(confidence, correct, strict=True):
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c} outside [0, 1]")
        b = min(int(c * bins), bins - 1)
        total[b] += c
        hits[b] += 1 if ok else 0
        counts[b] += 1
    n = len(confidence)
    return sum(abs(total[b] - hits[b]) / n for b in range(bins) if counts[b])
