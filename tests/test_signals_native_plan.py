"""The native decision (`kstrade.signals.native`) writes exactly what the Python path writes:
`plan_signals` then `wire.encode_plan` give the same three bodies, the same reasons in the same
order, the same signal id and tier, over the seeded grid of `test_signals_fastpath` (every tier,
every FilterReason, boosters, sizes, placeholders, re-weighting, UTF-8 symbols) and over
hypothesis-generated settings, calibrators (Platt and isotonic) and extreme values; and where the
Python path would not write the bodies directly (a value not certainly valid, or no price at
all) the native planner declines, so the stage takes the Python path as before."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kstrade.config import BoosterSettings, SignalSettings, TierBands, VolatilityBoosterSettings
from kstrade.signals import Isotonic, Platt, wire
from kstrade.signals.calibration import Calibrator
from kstrade.signals.decision import CandleContext, ModelVote, epoch_ns, plan_signals
from kstrade.signals.native import planner
from tests.test_signals_fastpath import DOWN, FLAT, SETTINGS, T0, UP, _contexts

FEATURES = sorted({"5m_atr14", "mtf_alignment", "vol_regime_low", "vol_regime_medium", "vol_regime_high"})


def _compare(
    context: CandleContext,
    s: SignalSettings,
    calibrators: dict[str, Calibrator],
    **kwargs: Any,
) -> str:
    """Both paths on one decision; returns what happened ("native", "declined", "unpriced")."""
    native = planner(s, calibrators, FEATURES)
    assert native is not None
    got = native.plan(context, **kwargs)
    try:
        plan = plan_signals(context, s, calibrators, **kwargs)
    except AssertionError:  # no valid placeholder levels: the stage logs the decision as failed
        assert got is None
        return "raises"
    bodies = wire.encode_plan(plan) if plan is not None else None
    if bodies is None:
        assert got is None, "the native planner wrote what the Python path declines"
        return "unpriced" if plan is None else "declined"
    assert got is not None, "the native planner declined what the Python path writes"
    assert (got.raw, got.calibrated, got.last) == bodies
    assert got.reasons == plan.reasons
    assert got.signal_id == str(plan.calibrated["signal_id"])
    assert got.tier == plan.calibrated["tier"].value
    return "native"


def test_the_native_planner_writes_the_bytes_of_the_python_path_over_the_seeded_grid() -> None:
    rng = random.Random(7)
    calibrators: dict[str, Calibrator] = {
        "lstm-v2": Platt(0.8, 0.1),
        "transformer-v3": Platt(1.3, -0.2),
        "lstm-v3": Isotonic((0.0, 0.3, 0.5, 0.9), (0.1, 0.2, 0.6, 0.95)),
    }
    seen: Counter[str] = Counter()
    for context in itertools.islice(_contexts(rng), 5000):
        s = rng.choice(SETTINGS)
        stale = rng.random() < 0.1
        now_ns = epoch_ns(context.timestamp) + (s.ttl_seconds + 1 if stale else 1) * 10**9
        weights = rng.choice([None, None, {"lstm": rng.random(), "transformer": rng.random()}])
        seen[_compare(context, s, calibrators, now_ns=now_ns, position_open=rng.random() < 0.15, weights=weights)] += 1
    assert seen["native"] > 4000 and seen["unpriced"] > 0, seen


_probability = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 0.5, 1 / 3]), st.floats(0.0, 1.0))
_price = st.one_of(st.sampled_from([1e-300, 1e300, 0.0001234, 65432.1]), st.floats(1e-6, 1e9))
_feature = st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.0, 0.5, 1e-18]), st.floats(-2.0, 2.0))
_calibrator = st.one_of(
    st.builds(Platt, st.floats(-3.0, 3.0), st.floats(-2.0, 2.0)),
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6, unique=True).map(
        lambda xs: Isotonic(tuple(sorted(xs)), tuple(sorted(x * 0.9 for x in xs)))
    ),
)


@st.composite
def _settings(draw: st.DrawFn) -> SignalSettings:
    c, b, a = sorted(draw(st.lists(st.floats(0.05, 0.95), min_size=3, max_size=3, unique=True)))
    return SignalSettings(
        weights=draw(
            st.sampled_from(
                [
                    {"lstm": 0.5, "transformer": 0.5},
                    {"lstm": 0.7, "transformer": 0.3},
                    {"transformer": 1.0, "lstm": 0.25, "ensemble": 0.0},
                ]
            )
        ),
        tiers=TierBands(a=a, b=b, c=c),
        tf_alignment=BoosterSettings(enabled=draw(st.booleans()), max_adjustment=draw(st.floats(0.0, 0.1))),
        volatility_adaptive=VolatilityBoosterSettings(
            enabled=draw(st.booleans()),
            max_adjustment=draw(st.floats(0.0, 0.1)),
            high_volatility_sl_tp_scale=draw(st.floats(1.0, 2.0)),
        ),
        stop_loss_atr=draw(st.floats(0.1, 20.0)),
        take_profit_atr=draw(st.floats(0.1, 40.0)),
        ttl_seconds=draw(st.integers(1, 2**31 - 1)),
        alignment_floor=draw(st.sampled_from([-1.0, 0.0, 0.3])),
        blocked_regimes=draw(st.lists(st.sampled_from(["low", "medium", "high"]), unique=True)),
        one_position_per_symbol=draw(st.booleans()),
        risk_per_trade=draw(st.one_of(st.none(), st.floats(1.0, 1e6))),
    )


@settings(max_examples=400, deadline=None)
@given(
    s=_settings(),
    calibrator=_calibrator,
    votes=st.lists(
        st.tuples(
            st.sampled_from(["lstm", "transformer", "ensemble"]),
            st.sampled_from([UP, DOWN, FLAT]),
            _probability,
            _probability,
        ),
        max_size=3,
    ),
    features=st.one_of(st.none(), st.fixed_dictionaries({name: _feature for name in FEATURES})),
    close=st.one_of(st.none(), _price),
    last_close=st.one_of(st.none(), _price),
    symbol=st.sampled_from(["BTC-USD", "ÉTH-ü€", "X"]),
    micros=st.integers(0, 10**12),
    late_s=st.integers(-10, 10**6),
    position_open=st.booleans(),
)
def test_the_native_planner_agrees_on_generated_settings_and_values(
    s: SignalSettings,
    calibrator: Calibrator,
    votes: list[tuple[str, Any, float, float]],
    features: dict[str, float | None] | None,
    close: float | None,
    last_close: float | None,
    symbol: str,
    micros: int,
    late_s: int,
    position_open: bool,
) -> None:
    by_model = {m: ModelVote(m, f"{m}-v1", d, p, c) for m, d, p, c in votes}
    present = None if features is None else {k: v for k, v in features.items() if v is not None}
    at = T0 + timedelta(microseconds=micros)
    context = CandleContext(symbol, at, by_model, present, close, last_close)
    now_ns = epoch_ns(at) + late_s * 10**9
    _compare(context, s, {"lstm-v1": calibrator}, now_ns=now_ns, position_open=position_open)
