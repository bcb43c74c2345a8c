"""Expected calibration error, and the booster rule: a booster stays off by default unless it
keeps ECE on held-out outcomes. Outcomes are drawn here from known true probabilities."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from kstrade.config import SignalSettings
from kstrade.schemas.models import SignalDirection
from kstrade.signals.boosters import (
    VolatilityRegime,
    apply_adjustment,
    booster_keeps_calibration,
    signed_alignment,
    tf_alignment_adjustment,
    volatility_adjustment,
)
from kstrade.signals.calibration import Platt, expected_calibration_error

N = 60_000
#: Calibrated confidences a model might state, away from the 15 bins' edges.
LEVELS = (0.55, 0.62, 0.71)
#: The support of the features stage's `mtf_alignment`: the mean of four signs.
ALIGNMENTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
MAX_ADJUSTMENT = 0.05  # the configured default


def test_ece_by_hand() -> None:
    # bin 0 holds 0.05 (miss): gap 0.05; bin 14 holds 0.95, 0.95 (hit, miss): gap 0.45 on 2 of 3.
    assert expected_calibration_error([0.05, 0.95, 0.95], [False, True, False]) == pytest.approx(0.95 / 3)
    assert expected_calibration_error([1.0, 0.0], [True, False]) == 0.0  # 1.0 falls in the last bin
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error([1.5], [True])
    with pytest.raises(ValueError, match="outcomes"):
        expected_calibration_error([0.5], [True, False])


def test_ece_sees_an_overconfident_model_and_platt_fixes_it() -> None:
    rng = random.Random(7)
    truth = [rng.uniform(0.35, 0.65) for _ in range(N)]
    hits = [rng.random() < p for p in truth]
    # The model's logit is twice the true one: over-confident. Platt a = 0.5 undoes it exactly.
    overconfident = [Platt(2.0, 0.0)(p) for p in truth]
    assert expected_calibration_error(overconfident, hits) > 0.05
    assert expected_calibration_error([Platt(0.5, 0.0)(q) for q in overconfident], hits) < 0.01


def _world(seed: int) -> tuple[list[float], list[float], list[SignalDirection], list[bool]]:
    rng = random.Random(seed)
    base = [rng.choice(LEVELS) for _ in range(N)]
    alignment = [rng.choice(ALIGNMENTS) for _ in range(N)]
    side = [rng.choice((SignalDirection.LONG, SignalDirection.SHORT)) for _ in range(N)]
    high = [rng.random() < 0.3 for _ in range(N)]
    return base, alignment, side, high


def _outcomes(seed: int, truth: list[float]) -> list[bool]:
    rng = random.Random(seed + 1000)
    return [rng.random() < p for p in truth]


def _tf(base: list[float], alignment: list[float], side: list[SignalDirection]) -> list[float]:
    return [
        apply_adjustment(p, tf_alignment_adjustment(a, s, MAX_ADJUSTMENT))
        for p, a, s in zip(base, alignment, side, strict=True)
    ]


def _vol(base: list[float], high: list[bool]) -> list[float]:
    def regime(h: bool) -> VolatilityRegime:
        return VolatilityRegime.HIGH if h else VolatilityRegime.MEDIUM

    return [
        apply_adjustment(p, volatility_adjustment(regime(h), MAX_ADJUSTMENT)) for p, h in zip(base, high, strict=True)
    ]


Booster = Callable[[list[float], list[float], list[SignalDirection], list[bool]], list[float]]
BOOSTERS: dict[str, Booster] = {
    "tf_alignment": lambda b, a, s, h: _tf(b, a, s),
    "volatility_adaptive": lambda b, a, s, h: _vol(b, h),
}


@pytest.mark.parametrize("name", sorted(BOOSTERS))
@pytest.mark.parametrize("seed", [1, 2])
def test_on_a_calibrated_model_each_booster_worsens_ece_so_it_is_off_by_default(name: str, seed: int) -> None:
    # The world the calibrators of issue 5 aim for: the model's confidence IS the true
    # probability, and the booster's input carries nothing beyond it.
    base, alignment, side, high = _world(seed)
    hits = _outcomes(seed, base)
    evidence = booster_keeps_calibration(base, BOOSTERS[name](base, alignment, side, high), hits)
    assert evidence.ece_before < 0.008
    assert evidence.ece_after > evidence.ece_before + 0.007
    assert not evidence.keeps_calibration
    defaults = SignalSettings()
    assert getattr(defaults, name).enabled is False


@pytest.mark.parametrize("seed", [1, 2])
def test_when_the_input_does_carry_information_the_measurement_lets_a_booster_pass(seed: int) -> None:
    base, alignment, side, high = _world(seed)
    # Alignment moves the true probability by exactly the booster's amount: boosted = truth.
    truth = [p + MAX_ADJUSTMENT * signed_alignment(a, s) for p, a, s in zip(base, alignment, side, strict=True)]
    assert expected_calibration_error(_tf(base, alignment, side), _outcomes(seed, truth)) < 0.008
    # High volatility takes the true probability down by the booster's amount.
    truth = [p - MAX_ADJUSTMENT if h else p for p, h in zip(base, high, strict=True)]
    evidence = booster_keeps_calibration(base, _vol(base, high), _outcomes(seed, truth))
    assert evidence.keeps_calibration and evidence.ece_after < 0.008 < evidence.ece_before
