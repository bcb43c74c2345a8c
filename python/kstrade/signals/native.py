"""The signals stage's decision in one native call (`kstrade._native.SignalPlanner`): what
`decision.plan_signals` then `wire.encode_plan` give, the same bytes, in a few microseconds
instead of ~50. `plan` answers None where the Python path must decide (no price at all, or a
value `encode_plan` would not write directly), and the stage then takes it, so what is
raised, converted or logged stays exactly as before. tests/test_signals_native_plan.py holds
the two paths equal over thousands of generated decisions and settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kstrade._native as _native
from kstrade.codes import FilterReason
from kstrade.config import SignalSettings
from kstrade.schemas.models import PredictedDirection
from kstrade.signals import wire
from kstrade.signals.calibration import Calibrator, Isotonic, Platt
from kstrade.signals.decision import CandleContext, epoch_ns

_DIRECTION = {d: i for i, d in enumerate(PredictedDirection)}
#: FilterReason by bit, in the order they are checked (`decision._REASON_ORDER`).
_REASONS = list(FilterReason)
_REGIME_INDEX = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True, slots=True)
class NativePlan:
    """One decision: the three bodies (raw, calibrated, then filtered or final), the reasons
    (none: final), the signal id and the tier."""

    raw: bytes
    calibrated: bytes
    last: bytes
    reasons: list[FilterReason]
    signal_id: str
    tier: str


class NativePlanner:
    """A `SignalPlanner` for one stage's settings, calibrators and the features it reads."""

    def __init__(self, planner: Any, features: Sequence[str]) -> None:
        #: The `_native.SignalPlanner` (the stage's `SignalCore` decides with it too).
        self.native = planner
        self.features = list(features)

    def plan(
        self,
        context: CandleContext,
        *,
        now_ns: int,
        position_open: bool,
        weights: Mapping[str, float] | None = None,
    ) -> NativePlan | None:
        """`plan_signals` + `encode_plan` of `context` natively; None: take the Python path."""
        if context.close is None and context.last_close is None:
            return None  # no price: the Python path says so (and logs it)
        votes = [
            (m, v.model_version, _DIRECTION[v.direction], v.probability, v.confidence) for m, v in context.votes.items()
        ]
        features = context.features
        values = None if features is None else [features.get(n) for n in self.features]
        out = self.native.plan(
            context.symbol,
            epoch_ns(context.timestamp) // 1000,
            votes,
            values,
            context.close,
            context.last_close,
            now_ns,
            position_open,
            None if weights is None else list(weights.items()),
        )
        if out is None:
            return None
        raw, calibrated, last, bits, signal_id, tier = out
        reasons = [r for i, r in enumerate(_REASONS) if bits >> i & 1]
        return NativePlan(raw, calibrated, last, reasons, signal_id, tier)


def planner(
    settings: SignalSettings, calibrators: Mapping[str, Calibrator], features: Sequence[str]
) -> NativePlanner | None:
    """The native planner for these settings, or None where only the Python path can decide:
    the signal schema is not the layout `wire` writes, or a calibrator is neither `Platt` nor
    `Isotonic` (a user's own callable). `features` must hold every feature the decision reads."""
    if not wire.ENABLED:
        return None
    specs: list[tuple[str, str, float, float, list[float], list[float]]] = []
    for version, c in calibrators.items():
        if type(c) is Platt:
            specs.append((version, "platt", float(c.a), float(c.b), [], []))
        elif type(c) is Isotonic:
            specs.append((version, "isotonic", 0.0, 0.0, [float(v) for v in c.x], [float(v) for v in c.y]))
        else:
            return None
    names = list(features)
    index = {n: i for i, n in enumerate(names)}
    s = settings
    snapshot = [index[n] for n in (s.atr_feature, s.alignment_feature, *sorted(s.regime_features.values()))]
    tf, vol = s.tf_alignment, s.volatility_adaptive
    native = _native.SignalPlanner(
        weights=list(s.weights.items()),
        tiers=[s.tiers.a, s.tiers.b, s.tiers.c],
        stop_loss_atr=s.stop_loss_atr,
        take_profit_atr=s.take_profit_atr,
        ttl_seconds=s.ttl_seconds,
        tf_alignment=tf.max_adjustment if tf.enabled else None,
        volatility=(vol.max_adjustment, vol.high_volatility_sl_tp_scale) if vol.enabled else None,
        alignment_floor=s.alignment_floor,
        blocked=[r in s.blocked_regimes for r in ("low", "medium", "high", "unknown")],
        one_position_per_symbol=s.one_position_per_symbol,
        risk_per_trade=s.risk_per_trade,
        tier_size_scale=[s.tier_size_scale.get(t) for t in ("A", "B", "C")],
        features=names,
        atr=index[s.atr_feature],
        alignment=index[s.alignment_feature],
        regimes=[(_REGIME_INDEX[r], index[f]) for r, f in sorted(s.regime_features.items())],
        snapshot=snapshot,
        calibrators=specs,
    )
    return NativePlanner(native, names)
