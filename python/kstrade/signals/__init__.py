"""The signals stage: predictions in, calibrated and tiered trading signals out.

`SignalAggregator` is the stage; its state (market book, per-candle join with a deadline, held
offsets, open positions) is one native object, `kstrade._native.SignalCore`, and `join` states
its rules and bounds. The pure logic sits beside it: `ensemble` (class probabilities and
weights), `calibration` (manifest calibrators and ECE), `boosters`, `reweighting` (weights from
realized outcomes) and `decision` (tiers, levels, filters, signal ids); `wire` writes the signal
bodies, and `native` does the decision and the writing in one call to the Rust core (the same
bytes; the Python path stays for what it declines).

Per (symbol, candle time) the stage waits for every model type weighted > 0, the candle's 1m
close (the entry) and its feature vector (ATR, alignment, volatility regime), up to
`join_deadline_ms` after the first prediction; a symbol's candles are decided in time order.
Each decision writes `signals.raw` and `signals.calibrated`, then either `signals.final` or
`signals.filtered` with a `reject_reason` header (a `FilterReason` code). The same symbol,
candle time and model versions always give the same `signal_id`.
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
