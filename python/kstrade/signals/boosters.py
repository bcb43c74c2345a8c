"""FREE boosters: bounded confidence adjustments from data already at hand (the timeframes'
alignment and the volatility regime), and the ECE check that decides whether one may be on.

A booster may move confidence by at most its `max_adjustment`, either way, and never out of
[0, 1]. Both are off by default: on a calibrated model an adjustment that was not fitted on
held-out outcomes moves confidence away from the truth (see `booster_keeps_calibration`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from kstrade.schemas.models import SignalDirection
from kstrade.signals.calibration import expected_calibration_error

TF_ALIGNMENT = "tf_alignment"
VOLATILITY_ADAPTIVE = "volatility_adaptive"


class VolatilityRegime(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    UNKNOWN = "unknown"


def signed_alignment(alignment: float, direction: SignalDirection) -> float:
    """How far the timeframes agree with `direction`: +1 all agree, -1 all oppose."""
    a = min(max(alignment, -1.0), 1.0)
    return a if direction is SignalDirection.LONG else -a


def tf_alignment_adjustment(alignment: float, direction: SignalDirection, max_adjustment: float) -> float:
    """Confidence change from multi-timeframe alignment: proportional, within +-max_adjustment."""
    return max_adjustment * signed_alignment(alignment, direction)


def volatility_adjustment(regime: VolatilityRegime, max_adjustment: float) -> float:
    """High volatility makes a directional call less reliable: take confidence down."""
    return -max_adjustment if regime is VolatilityRegime.HIGH else 0.0


def apply_adjustment(confidence: float, adjustment: float) -> float:
    return min(max(confidence + adjustment, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class BoosterEvidence:
    """ECE before and after a booster on held-out outcomes."""

    ece_before: float
    ece_after: float

    @property
    def keeps_calibration(self) -> bool:
        return self.ece_after <= self.ece_before


def booster_keeps_calibration(
    confidence: Sequence[float], boosted: Sequence[float], correct: Sequence[bool]
) -> BoosterEvidence:
    """The booster rule: measure ECE with and without the booster on the same held-out
    outcomes. A booster whose evidence does not keep calibration stays off."""
    before = expected_calibration_error(confidence, correct)
    return BoosterEvidence(before, expected_calibration_error(boosted, correct))
