"""The signals stage's pure logic: ensemble, calibrators, tiers, levels, filters and ids, with
hand-worked examples and hypothesis properties."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstrade.config import (
    BoosterSettings,
    CalibratorSpec,
    ConfigError,
    SignalSettings,
    TierBands,
    VolatilityBoosterSettings,
    load,
)
from kstrade.schemas import Signal
from kstrade.schemas.models import PredictedDirection, SignalDirection, SignalStage, Tier
from kstrade.signals import (
    FilterReason,
    Isotonic,
    Platt,
    SignalAggregator,
    calibrator_from_manifest,
    signal_id,
    tier_of,
)
from kstrade.signals.decision import CandleContext, ModelVote, decide, epoch_ns, levels
from kstrade.signals.ensemble import ClassProbabilities, blend, ensemble_weights

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NOW = epoch_ns(T0) + 61 * 10**9  # one second after the candle closed
UP, DOWN, FLAT = PredictedDirection.UP, PredictedDirection.DOWN, PredictedDirection.FLAT
CALM = {"5m_atr14": 0.01, "mtf_alignment": 0.5, "vol_regime_low": 0.0, "vol_regime_medium": 1.0, "vol_regime_high": 0.0}


def vote(model: str, direction: PredictedDirection, p: float, version: str | None = None) -> ModelVote:
    return ModelVote(model, version or f"{model}-v1", direction, p, p)


def context(
    *votes: ModelVote, features: dict[str, float] | None = CALM, close: float | None = 100.0, last: float | None = None
) -> CandleContext:
    return CandleContext("BTC-USD", T0, {v.model_type: v for v in votes}, features, close, last)


# -- ensemble ---------------------------------------------------------------------------------
def test_a_prediction_shares_the_rest_of_its_mass_equally() -> None:
    def mass(d: PredictedDirection, p: float) -> tuple[float, float, float]:
        c = ClassProbabilities.from_prediction(d, p)
        return (c.down, c.flat, c.up)

    assert mass(UP, 0.7) == pytest.approx((0.15, 0.15, 0.7))
    assert mass(DOWN, 0.6) == pytest.approx((0.6, 0.2, 0.2))
    assert mass(FLAT, 0.5) == pytest.approx((0.25, 0.5, 0.25))


def test_weights_renormalize_over_present_models_and_record_the_missing() -> None:
    w = ensemble_weights({"lstm": 0.35, "transformer": 0.40, "rl": 0.25}, {"lstm", "transformer", "other"})
    assert w == pytest.approx({"lstm": 0.35 / 0.75, "rl": 0.0, "transformer": 0.40 / 0.75})
    assert ensemble_weights({"lstm": 0.5, "transformer": 0.0}, {"transformer"}) == {"lstm": 0.0}


def test_blend_is_the_weighted_average() -> None:
    members = {"lstm": ClassProbabilities(0.15, 0.15, 0.7), "transformer": ClassProbabilities(0.6, 0.2, 0.2)}
    got = blend(members, {"lstm": 0.5, "transformer": 0.5})
    assert (got.down, got.flat, got.up) == pytest.approx((0.375, 0.175, 0.45))
    assert got.leaning is SignalDirection.LONG and not got.is_flat


# -- calibrators ------------------------------------------------------------------------------
def test_platt_and_isotonic_by_hand() -> None:
    assert Platt(1.0, 0.0)(0.37) == pytest.approx(0.37)
    assert Platt(1.0, math.log(3.0))(0.5) == pytest.approx(0.75)  # odds 1 -> 3
    assert Platt(0.5, 0.0)(0.8) == pytest.approx(2 / 3)  # odds 4 -> 2
    assert 0.0 < Platt(1.0, 0.0)(0.0) < 1e-8 and Platt(1.0, 0.0)(1.0) > 1 - 1e-8
    iso = Isotonic((0.5, 0.9), (0.55, 0.75))
    assert (iso(0.3), iso(0.7), iso(0.95)) == pytest.approx((0.55, 0.65, 0.75))


def test_manifest_calibration_is_read_and_bad_data_refused() -> None:
    version, cal = calibrator_from_manifest(
        {"model_version": "a7aff5c4", "calibration": {"method": "isotonic", "x": [0.4, 0.8], "y": [0.5, 0.7]}}
    )
    assert version == "a7aff5c4" and cal(0.6) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="model_version"):
        calibrator_from_manifest({"calibration": {"method": "platt", "a": 1, "b": 0}})
    with pytest.raises(ValueError, match="needs a and b"):
        calibrator_from_manifest({"model_version": "x", "calibration": {"method": "platt", "a": 1}})
    with pytest.raises(ValueError, match="strictly increasing"):
        CalibratorSpec(method="isotonic", x=[0.5, 0.5], y=[0.5, 0.6])


# -- tiers, levels, ids -----------------------------------------------------------------------
def test_tier_bands_are_inclusive_lower_bounds() -> None:
    bands = TierBands()
    assert [tier_of(c, bands) for c in (0.70, 0.6999, 0.60, 0.55, 0.5499, 0.0)] == [
        Tier.A, Tier.B, Tier.B, Tier.C, Tier.D, Tier.D,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="descend"):
        TierBands(a=0.6, b=0.6, c=0.5)


def test_levels_are_atr_multiples_on_the_right_sides() -> None:
    long = levels(SignalDirection.LONG, 100.0, 0.01, 1.5, 2.5)
    short = levels(SignalDirection.SHORT, 100.0, 0.01, 1.5, 2.5)
    assert long is not None and (long.stop_loss, long.take_profit) == pytest.approx((98.5, 102.5))
    assert short is not None and (short.stop_loss, short.take_profit) == pytest.approx((101.5, 97.5))
    assert levels(SignalDirection.LONG, 100.0, 0.0, 1.5, 2.5) is None  # ATR still warming up
    assert levels(SignalDirection.SHORT, 100.0, 0.5, 1.5, 2.5) is None  # take profit below zero
    assert levels(SignalDirection.LONG, 1e6, 1e-20, 1.5, 2.5) is None  # too small to move the price


@given(
    direction=st.sampled_from(list(SignalDirection)),
    entry=st.floats(1e-6, 1e9),
    atr=st.floats(0.0, 10.0),
    stop=st.floats(0.01, 20.0),
    take=st.floats(0.01, 40.0),
)
def test_levels_are_either_valid_for_a_signal_or_refused(
    direction: SignalDirection, entry: float, atr: float, stop: float, take: float
) -> None:
    got = levels(direction, entry, atr, stop, take)
    if got is not None:
        Signal(timestamp=T0, symbol="X", signal_id=uuid.uuid4(), stage=SignalStage.FINAL, direction=direction,
               confidence=0.5, entry_price=entry, stop_loss=got.stop_loss, take_profit=got.take_profit,
               ttl_seconds=60)  # fmt: skip


def test_signal_settings_load_through_the_one_config_loader() -> None:
    loaded = load(signals={"tiers": {"a": 0.8, "b": 0.7, "c": 0.6}, "weights": {"lstm": 1.0}})
    assert loaded.signals.tiers.a == 0.8 and loaded.signals.weights == {"lstm": 1.0}
    assert SignalAggregator.from_settings(loaded).inputs()[0] == "predictions.lstm.BTC-USD"
    with pytest.raises(ConfigError, match=r"signals.tiers") as bad:
        load(signals={"tiers": {"a": 0.5, "b": 0.6, "c": 0.4}, "weights": {"lstm": -1.0}, "typo": 1})
    assert "signals.weights" in str(bad.value) and "signals.typo" in str(bad.value)  # all at once


def test_signal_id_depends_on_symbol_time_and_versions_only() -> None:
    a = signal_id("BTC-USD", T0, {"lstm": "v1", "transformer": "v2"})
    assert a == signal_id("BTC-USD", T0, {"transformer": "v2", "lstm": "v1"})
    assert a.version == 5
    assert a != signal_id("BTC-USD", T0, {"lstm": "v1", "transformer": "v3"})
    assert a != signal_id("ETH-USD", T0, {"lstm": "v1", "transformer": "v2"})
    assert a != signal_id("BTC-USD", T0 + timedelta(minutes=1), {"lstm": "v1", "transformer": "v2"})


# -- decisions --------------------------------------------------------------------------------
def test_agreeing_models_make_a_final_tier_a_long() -> None:
    d = decide(context(vote("lstm", UP, 0.8), vote("transformer", UP, 0.7)), SignalSettings(), {}, now_ns=NOW,
               position_open=False)  # fmt: skip
    assert d is not None and d.final is not None and d.rejected is None
    f = d.final
    assert f.stage is SignalStage.FINAL and f.direction is SignalDirection.LONG and f.tier is Tier.A
    assert f.confidence == pytest.approx(0.75)
    assert (f.entry_price, f.stop_loss, f.take_profit) == pytest.approx((100.0, 98.5, 102.5))
    assert f.ensemble_weights == {"lstm": 0.5, "transformer": 0.5}
    assert f.boosters_applied == [] and f.position_size is None and f.ttl_seconds == 300
    assert d.raw.stage is SignalStage.RAW and d.raw.tier is None
    assert d.raw.signal_id == d.calibrated.signal_id == f.signal_id


def test_a_missing_model_is_recorded_and_the_others_renormalized() -> None:
    bearish = {**CALM, "mtf_alignment": -0.5}
    d = decide(context(vote("lstm", DOWN, 0.8), features=bearish), SignalSettings(), {}, now_ns=NOW,
               position_open=False)  # fmt: skip
    assert d is not None and d.final is not None
    assert d.final.ensemble_weights == {"lstm": 1.0, "transformer": 0.0}
    assert d.final.features_snapshot["models_missing"] == 1.0
    assert d.final.direction is SignalDirection.SHORT and d.final.confidence == pytest.approx(0.8)


def test_the_manifest_calibrator_replaces_the_raw_probability() -> None:
    shrink = {"lstm-v1": Platt(0.5, 0.0)}  # 0.8 -> 2/3
    d = decide(context(vote("lstm", UP, 0.8)), SignalSettings(), shrink, now_ns=NOW, position_open=False)
    assert d is not None
    assert d.raw.confidence == pytest.approx(0.8)
    assert d.calibrated.confidence == pytest.approx(2 / 3) and d.calibrated.tier is Tier.B


@pytest.mark.parametrize(
    ("ctx", "cfg", "now", "open_", "reason"),
    [
        (context(vote("lstm", FLAT, 0.8)), {}, NOW, False, FilterReason.FLAT),
        (context(vote("lstm", UP, 0.5)), {}, NOW, False, FilterReason.TIER_D),
        (context(vote("lstm", UP, 0.8), features={**CALM, "mtf_alignment": -0.5}), {}, NOW, False,
         FilterReason.TF_MISALIGNED),
        (context(vote("lstm", UP, 0.8)), {}, epoch_ns(T0) + 300 * 10**9, False, FilterReason.STALE),
        (context(vote("lstm", UP, 0.8), features={**CALM, "vol_regime_medium": 0.0, "vol_regime_high": 1.0}),
         {"blocked_regimes": ["high"]}, NOW, False, FilterReason.VOLATILITY_REGIME),
        (context(vote("lstm", UP, 0.8)), {}, NOW, True, FilterReason.POSITION_OPEN),
        (context(vote("lstm", UP, 0.8), features=None), {}, NOW, False, FilterReason.NO_FEATURES),
        (context(vote("lstm", UP, 0.8), features={**CALM, "5m_atr14": 0.0}), {}, NOW, False, FilterReason.NO_ATR),
        (context(vote("lstm", UP, 0.8), close=None, last=99.0), {}, NOW, False, FilterReason.NO_PRICE),
    ],
)  # fmt: skip
def test_each_filter_rejects_with_its_code(
    ctx: CandleContext, cfg: dict[str, object], now: int, open_: bool, reason: FilterReason
) -> None:
    d = decide(ctx, SignalSettings.model_validate(cfg), {}, now_ns=now, position_open=open_)
    assert d is not None and d.final is None and d.rejected is not None
    assert d.reasons[0] is reason
    assert d.rejected.stage is SignalStage.FILTERED and d.rejected.position_size is None
    # Levels from a placeholder ATR are never passed off as the market's ATR.
    assert ("atr" in d.rejected.features_snapshot) == (reason not in (FilterReason.NO_FEATURES, FilterReason.NO_ATR))


def test_no_price_at_all_gives_no_decision() -> None:
    assert decide(context(vote("lstm", UP, 0.8), close=None), SignalSettings(), {}, now_ns=NOW,
                  position_open=False) is None  # fmt: skip


def test_boosters_move_confidence_within_bounds_and_say_so() -> None:
    cfg = SignalSettings(
        tf_alignment=BoosterSettings(enabled=True, max_adjustment=0.05),
        volatility_adaptive=VolatilityBoosterSettings(enabled=True, max_adjustment=0.04),
    )
    aligned = {**CALM, "mtf_alignment": 1.0}
    d = decide(context(vote("lstm", UP, 0.7), features=aligned), cfg, {}, now_ns=NOW, position_open=False)
    assert d is not None and d.final is not None
    assert d.final.confidence == pytest.approx(0.75) and d.final.boosters_applied == ["tf_alignment"]
    wild = {**aligned, "vol_regime_medium": 0.0, "vol_regime_high": 1.0}
    d = decide(context(vote("lstm", UP, 0.7), features=wild), cfg, {}, now_ns=NOW, position_open=False)
    assert d is not None and d.final is not None
    assert d.final.confidence == pytest.approx(0.71)
    assert d.final.boosters_applied == ["tf_alignment", "volatility_adaptive"]
    assert d.final.stop_loss == pytest.approx(100 - 1.5 * 1.25)  # stops widened in high volatility
    assert d.raw.stop_loss == pytest.approx(98.5)  # the raw signal keeps the plain multiples


def test_suggested_size_risks_the_configured_amount_scaled_by_tier() -> None:
    cfg = SignalSettings(risk_per_trade=150.0)
    d = decide(context(vote("lstm", UP, 0.8)), cfg, {}, now_ns=NOW, position_open=False)
    assert d is not None and d.final is not None
    assert d.final.position_size == pytest.approx(150.0 / 1.5)  # tier A: full risk over a 1.5 stop


# -- properties -------------------------------------------------------------------------------
directions = st.sampled_from([UP, DOWN, FLAT])
probabilities = st.floats(0.0, 1.0)
votes = st.fixed_dictionaries(
    {}, optional={"lstm": st.tuples(directions, probabilities), "transformer": st.tuples(directions, probabilities)}
).filter(bool)


@settings(max_examples=200, deadline=None)
@given(
    votes=votes,
    alignment=st.floats(-1.0, 1.0),
    regime=st.sampled_from(["vol_regime_low", "vol_regime_medium", "vol_regime_high"]),
    tf_max=st.floats(0.0, 0.1),
    vol_max=st.floats(0.0, 0.1),
    weights=st.tuples(st.floats(0.01, 10.0), st.floats(0.01, 10.0)),
)
def test_decisions_are_well_formed(
    votes: dict[str, tuple[PredictedDirection, float]],
    alignment: float,
    regime: str,
    tf_max: float,
    vol_max: float,
    weights: tuple[float, float],
) -> None:
    cfg = SignalSettings(
        weights={"lstm": weights[0], "transformer": weights[1]},
        tf_alignment=BoosterSettings(enabled=True, max_adjustment=tf_max),
        volatility_adaptive=VolatilityBoosterSettings(enabled=True, max_adjustment=vol_max),
    )
    features = {"5m_atr14": 0.01, "mtf_alignment": alignment, regime: 1.0}
    ctx = context(*(vote(m, d, p) for m, (d, p) in votes.items()), features=features)
    d = decide(ctx, cfg, {}, now_ns=NOW, position_open=False)
    unboosted = decide(ctx, SignalSettings(weights=cfg.weights), {}, now_ns=NOW, position_open=False)
    assert d is not None and unboosted is not None
    for s in (d.raw, d.calibrated):
        assert 0.0 <= s.confidence <= 1.0
    snap = d.calibrated.features_snapshot
    assert snap["p_down"] + snap["p_flat"] + snap["p_up"] == pytest.approx(1.0)
    assert min(snap["p_down"], snap["p_flat"], snap["p_up"]) >= 0.0
    assert sum(d.calibrated.ensemble_weights.values()) == pytest.approx(1.0)
    # Boosters are bounded: together they move confidence by at most the sum of their limits.
    assert abs(d.calibrated.confidence - unboosted.calibrated.confidence) <= tf_max + vol_max + 1e-12
    # The same inputs give the same id, whatever order the predictions arrived in.
    again = decide(context(*reversed([vote(m, dd, p) for m, (dd, p) in votes.items()]), features=features), cfg, {},
                   now_ns=NOW + 1, position_open=False)  # fmt: skip
    assert again is not None and again.calibrated.signal_id == d.calibrated.signal_id
    assert (d.final is None) != (d.rejected is None)


@given(
    bands=st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(0.01, 0.99)).filter(
        lambda t: t[0] > t[1] > t[2]
    ),
    c1=probabilities,
    c2=probabilities,
)
def test_tier_is_monotone_in_confidence(bands: tuple[float, float, float], c1: float, c2: float) -> None:
    tiers = TierBands(a=bands[0], b=bands[1], c=bands[2])
    lo, hi = sorted((c1, c2))
    rank = "ABCD"
    assert rank.index(tier_of(hi, tiers).value) <= rank.index(tier_of(lo, tiers).value)


@given(st.lists(st.tuples(directions, probabilities, st.floats(0.0, 5.0)), min_size=1, max_size=6))
def test_blended_probabilities_sum_to_one(members: list[tuple[PredictedDirection, float, float]]) -> None:
    probs = {str(i): ClassProbabilities.from_prediction(d, p) for i, (d, p, _) in enumerate(members)}
    got = blend(probs, {str(i): w for i, (_, _, w) in enumerate(members)})
    assert got.down + got.flat + got.up == pytest.approx(1.0)
    assert min(got.down, got.flat, got.up) >= 0.0
