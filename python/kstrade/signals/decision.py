"""From one candle's joined predictions to its signals: ensemble, calibration, boosters, tier,
stop loss and take profit from the ATR, filters with stable reason codes, and the signal id.

Pure: no bus, no clock; the aggregator hands in the time of the decision.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kstrade.clock import EPOCH
from kstrade.codes import FilterReason as FilterReason  # defined with the other codes; imported from here too
from kstrade.config import SignalSettings, TierBands
from kstrade.schemas.models import PredictedDirection, Signal, SignalDirection, SignalStage, Tier
from kstrade.signals.boosters import (
    TF_ALIGNMENT,
    VOLATILITY_ADAPTIVE,
    VolatilityRegime,
    apply_adjustment,
    signed_alignment,
    tf_alignment_adjustment,
    volatility_adjustment,
)
from kstrade.signals.calibration import Calibrator
from kstrade.signals.ensemble import ClassProbabilities, blend, ensemble_weights

#: Namespace of signal ids: uuid5 over symbol, candle time and model versions.
SIGNAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://kstrade.invalid/signals")

#: Stop distance (fraction of the entry) used only to fill in the levels of a signal that is
#: rejected for lack of an ATR: such a signal is never traded, but the schema needs levels.
PLACEHOLDER_ATR_FRACTION = 0.001


#: Each reason's place in the order they are checked (the order of `FilterReason`).
_REASON_ORDER = {reason: i for i, reason in enumerate(FilterReason)}


@dataclass(frozen=True, slots=True)
class ModelVote:
    """One model's prediction for the candle, as the join keeps it."""

    model_type: str
    model_version: str
    direction: PredictedDirection
    probability: float  # raw model output
    confidence: float  # the inference stage's calibrated value


@dataclass(frozen=True, slots=True)
class CandleContext:
    """What the join gathered for one (symbol, candle time)."""

    symbol: str
    timestamp: datetime
    votes: Mapping[str, ModelVote]
    features: Mapping[str, float] | None
    close: float | None  # the 1m close at this candle time
    last_close: float | None  # the latest close before it, for the record of a NO_PRICE signal


@dataclass(slots=True)
class Decision:
    raw: Signal
    calibrated: Signal
    final: Signal | None
    rejected: Signal | None
    reasons: list[FilterReason] = field(default_factory=list)


def epoch_ns(timestamp: datetime) -> int:
    """Exact nanoseconds since the epoch (float seconds would round at this magnitude)."""
    return (timestamp - EPOCH) // timedelta(microseconds=1) * 1000


def tier_of(confidence: float, bands: TierBands) -> Tier:
    if confidence >= bands.a:
        return Tier.A
    if confidence >= bands.b:
        return Tier.B
    if confidence >= bands.c:
        return Tier.C
    return Tier.D


def signal_id(symbol: str, timestamp: datetime, versions: Mapping[str, str]) -> uuid.UUID:
    """Stable id: the same symbol, candle time and model versions give the same id, so a
    replay or a redelivery yields the same idempotency key for the execution engine."""
    micros = epoch_ns(timestamp) // 1000
    models = ",".join(f"{m}={versions[m]}" for m in sorted(versions))
    return uuid.uuid5(SIGNAL_NAMESPACE, f"{symbol}|{micros}|{models}")


def calibrated_vote(vote: ModelVote, calibrators: Mapping[str, Calibrator]) -> ClassProbabilities:
    """The model's class probabilities after its manifest's calibrator; a version without one
    falls back to the confidence the inference stage calibrated."""
    calibrator = calibrators.get(vote.model_version)
    p = calibrator(vote.probability) if calibrator is not None else vote.confidence
    return ClassProbabilities.from_prediction(vote.direction, p)


def volatility_regime(features: Mapping[str, float] | None, settings: SignalSettings) -> VolatilityRegime:
    """The regime whose one-hot feature is set; UNKNOWN when the features do not say."""
    if features is None:
        return VolatilityRegime.UNKNOWN
    best, best_value = VolatilityRegime.UNKNOWN, 0.5
    for name, feature in sorted(settings.regime_features.items()):
        value = features.get(feature)
        if value is not None and value > best_value:
            best, best_value = VolatilityRegime(name), value
    return best


@dataclass(frozen=True, slots=True)
class Levels:
    entry: float
    stop_loss: float
    take_profit: float
    atr: float


def levels(
    direction: SignalDirection, entry: float, atr_fraction: float, stop_atr: float, take_atr: float
) -> Levels | None:
    """Stop loss and take profit at ATR multiples from the entry; None if they would not be
    positive prices strictly on the right sides of the entry."""
    atr = atr_fraction * entry
    if not atr > 0:
        return None
    sign = 1.0 if direction is SignalDirection.LONG else -1.0
    sl, tp = entry - sign * stop_atr * atr, entry + sign * take_atr * atr
    # Checked on the rounded floats: an ATR too small to move the price leaves sl == entry.
    ordered = sl < entry < tp if sign > 0 else tp < entry < sl
    if sl <= 0 or tp <= 0 or not ordered:
        return None
    return Levels(entry, sl, tp, atr)


def decide(
    context: CandleContext,
    settings: SignalSettings,
    calibrators: Mapping[str, Calibrator],
    *,
    now_ns: int,
    position_open: bool,
    weights: Mapping[str, float] | None = None,
) -> Decision | None:
    """The candle's signals, or None when there is no price at all to state an entry.
    `weights` replaces the configured ensemble weights (re-weighting from outcomes)."""
    plan = plan_signals(context, settings, calibrators, now_ns=now_ns, position_open=position_open, weights=weights)
    return None if plan is None else plan.decision()


def plan_signals(
    context: CandleContext,
    settings: SignalSettings,
    calibrators: Mapping[str, Calibrator],
    *,
    now_ns: int,
    position_open: bool,
    weights: Mapping[str, float] | None = None,
) -> SignalPlan | None:
    """What `decide` decides, as the field values of its signals (no model built yet)."""
    entry = context.close if context.close is not None else context.last_close
    if entry is None or entry <= 0:
        return None
    weights = ensemble_weights(settings.weights if weights is None else weights, set(context.votes))
    versions = {m: v.model_version for m, v in context.votes.items() if weights.get(m, 0.0) > 0}
    sid = signal_id(context.symbol, context.timestamp, versions)

    raw_probs = blend(
        {m: ClassProbabilities.from_prediction(v.direction, v.probability) for m, v in context.votes.items()},
        weights,
    )
    cal_probs = blend({m: calibrated_vote(v, calibrators) for m, v in context.votes.items()}, weights)
    direction = cal_probs.leaning

    features = context.features
    reasons: list[FilterReason] = []
    if context.close is None:
        reasons.append(FilterReason.NO_PRICE)
    alignment = features.get(settings.alignment_feature) if features is not None else None
    atr_fraction = features.get(settings.atr_feature) if features is not None else None
    if alignment is None or atr_fraction is None:
        reasons.append(FilterReason.NO_FEATURES)
    regime = volatility_regime(features, settings)

    # Boosters, each bounded by its max_adjustment and named when it moved confidence.
    confidence = cal_probs.of(direction)
    boosters: list[str] = []
    scale = 1.0
    if settings.tf_alignment.enabled and alignment is not None:
        adj = tf_alignment_adjustment(alignment, direction, settings.tf_alignment.max_adjustment)
        if adj != 0.0:
            confidence = apply_adjustment(confidence, adj)
            boosters.append(TF_ALIGNMENT)
    vol = settings.volatility_adaptive
    if vol.enabled and regime is VolatilityRegime.HIGH:
        confidence = apply_adjustment(confidence, volatility_adjustment(regime, vol.max_adjustment))
        scale = vol.high_volatility_sl_tp_scale  # wider stops where candles are wider
        boosters.append(VOLATILITY_ADAPTIVE)
    boosted = cal_probs.with_side(direction, confidence)
    tier = tier_of(confidence, settings.tiers)

    level = None
    if atr_fraction is not None:
        level = levels(direction, entry, atr_fraction, settings.stop_loss_atr * scale, settings.take_profit_atr * scale)
        if level is None:
            reasons.append(FilterReason.NO_ATR)
    placeholder = level is None
    if level is None:  # the record of a rejected signal still needs levels: placeholders
        level = levels(direction, entry, PLACEHOLDER_ATR_FRACTION, settings.stop_loss_atr, settings.take_profit_atr)
        assert level is not None
    # signals.raw states the uncalibrated ensemble's side, with the unboosted multiples.
    raw_direction = raw_probs.leaning
    raw_level = levels(raw_direction, entry, level.atr / entry, settings.stop_loss_atr, settings.take_profit_atr)
    if raw_level is None:
        raw_level = levels(
            raw_direction, entry, PLACEHOLDER_ATR_FRACTION, settings.stop_loss_atr, settings.take_profit_atr
        )
        assert raw_level is not None

    if now_ns >= epoch_ns(context.timestamp) + settings.ttl_seconds * 1_000_000_000:
        reasons.append(FilterReason.STALE)
    if boosted.is_flat:
        reasons.append(FilterReason.FLAT)
    if tier is Tier.D:
        reasons.append(FilterReason.TIER_D)
    if alignment is not None and settings.alignment_floor > -1.0:
        if signed_alignment(alignment, direction) < settings.alignment_floor:
            reasons.append(FilterReason.TF_MISALIGNED)
    if regime.value in settings.blocked_regimes:
        reasons.append(FilterReason.VOLATILITY_REGIME)
    if settings.one_position_per_symbol and position_open:
        reasons.append(FilterReason.POSITION_OPEN)
    reasons.sort(key=_REASON_ORDER.__getitem__)

    snapshot: dict[str, float] = {
        "p_down": boosted.down,
        "p_flat": boosted.flat,
        "p_up": boosted.up,
        "models_missing": float(sum(1 for w in weights.values() if w == 0.0)),
    }
    if features is not None:
        for name in (settings.atr_feature, settings.alignment_feature, *sorted(settings.regime_features.values())):
            if name in features:
                snapshot[name] = features[name]
    if not placeholder:  # a placeholder ATR is not a market fact: leave it out of the audit
        snapshot["atr"] = level.atr

    size = None
    if settings.risk_per_trade is not None and tier is not Tier.D:
        size = settings.risk_per_trade * settings.tier_size_scale.get(tier.value, 0.0) / abs(entry - level.stop_loss)

    raw = dict(
        timestamp=context.timestamp,
        symbol=context.symbol,
        signal_id=sid,
        stage=SignalStage.RAW,
        direction=raw_direction,
        confidence=raw_probs.of(raw_direction),
        entry_price=entry,
        stop_loss=raw_level.stop_loss,
        take_profit=raw_level.take_profit,
        features_snapshot={"p_down": raw_probs.down, "p_flat": raw_probs.flat, "p_up": raw_probs.up},
        ensemble_weights=weights,
        ttl_seconds=settings.ttl_seconds,
    )
    calibrated = dict(
        timestamp=context.timestamp,
        symbol=context.symbol,
        signal_id=sid,
        stage=SignalStage.CALIBRATED,
        direction=direction,
        confidence=confidence,
        tier=tier,
        entry_price=entry,
        stop_loss=level.stop_loss,
        take_profit=level.take_profit,
        position_size=size,
        features_snapshot=snapshot,
        ensemble_weights=weights,
        boosters_applied=boosters,
        ttl_seconds=settings.ttl_seconds,
    )
    return SignalPlan(raw, calibrated, reasons)


@dataclass(slots=True)
class SignalPlan:
    """One candle's decision as the keyword arguments of its `signals.raw` and
    `signals.calibrated` signals, and the reasons it is filtered (none: it is final)."""

    raw: dict[str, Any]
    calibrated: dict[str, Any]
    reasons: list[FilterReason]

    def decision(self) -> Decision:
        """The validated signals (raises, as `Signal` does, if a value is not valid)."""
        raw = Signal(**self.raw)
        calibrated = Signal(**self.calibrated)
        if self.reasons:
            rejected = calibrated.model_copy(update={"stage": SignalStage.FILTERED, "position_size": None})
            return Decision(raw, calibrated, None, rejected, self.reasons)
        return Decision(raw, calibrated, calibrated.model_copy(update={"stage": SignalStage.FINAL}), None, [])
