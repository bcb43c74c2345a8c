"""The signals stage: predictions in, calibrated and tiered trading signals out.

`SignalAggregator` is the stage; the pure logic sits beside it: `ensemble` (class
probabilities and weights), `calibration` (manifest calibrators and ECE), `boosters`, `decision`
(tiers, levels, filters, signal ids) and `join` (per-candle join with a deadline).
"""

from kstrade.signals.aggregator import REJECT_REASON, REJECT_REASONS, SignalAggregator, SignalStats
from kstrade.signals.calibration import (
    Calibrator,
    Isotonic,
    Platt,
    calibrator_from_manifest,
    calibrator_from_spec,
    expected_calibration_error,
)
from kstrade.signals.decision import FilterReason, signal_id, tier_of

__all__ = [
    "REJECT_REASON",
    "REJECT_REASONS",
    "Calibrator",
    "FilterReason",
    "Isotonic",
    "Platt",
    "SignalAggregator",
    "SignalStats",
    "calibrator_from_manifest",
    "calibrator_from_spec",
    "expected_calibration_error",
    "signal_id",
    "tier_of",
]
