"""Kelly sizing and volume rounding: worked examples computed by hand, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstrade.config import SymbolSettings
from kstrade.execution.sizing import KellySizer, kelly_fraction, round_down_to_step

# EURUSD standard lot: 1.0 of price move is worth 100 000 USD per lot; 0.01-lot steps.
EURUSD = SymbolSettings(value_per_unit=100_000, volume_step=0.01, volume_min=0.01, volume_max=50)


def size(sizer: KellySizer, p: float, headroom: float = 1e9, spec: SymbolSettings = EURUSD, **kw: float) -> float:
    # entry 1.1000, stop 1.0950 (50 pips = 500 USD per lot), target 1.1100: reward/risk b = 2
    args = {"entry": 1.1000, "stop_loss": 1.0950, "take_profit": 1.1100, **kw}
    return sizer.size(probability=p, equity=100_000, headroom=headroom, spec=spec, **args).quantity


def test_kelly_fraction_worked_examples() -> None:
    assert kelly_fraction(0.6, 2.0) == pytest.approx(0.4)  # 0.6 - 0.4/2
    assert kelly_fraction(0.5, 1.0) == pytest.approx(0.0)  # a coin flip at even odds: no edge
    assert kelly_fraction(0.3, 2.0) == pytest.approx(-0.05)  # 0.3 - 0.7/2


def test_per_trade_risk_cap_binds() -> None:
    # f* = 0.4, quarter Kelly 0.10 > the 1% cap: risk 1 000 USD / 500 USD per lot = 2 lots
    assert size(KellySizer(0.25, 1.0), 0.6) == pytest.approx(2.0)


def test_fractional_kelly_binds_and_rounds_down() -> None:
    # p 0.5, target 1.1075 (b = 1.5): f* = 0.5 - 0.5/1.5 = 1/6; quarter = 1/24 of 100 000 = 4 166.67 USD
    # / 500 per lot = 8.3333 lots, down to the 0.01 step: 8.33
    assert size(KellySizer(0.25, 5.0), 0.5, take_profit=1.1075) == pytest.approx(8.33)


def test_headroom_binds() -> None:
    # 730 USD left before a floor: 730 / 500 = 1.46 lots
    assert size(KellySizer(0.25, 1.0), 0.6, headroom=730) == pytest.approx(1.46)


def test_slippage_and_commission_per_lot_shrink_the_size() -> None:
    # 500 USD to the stop + 25 USD extra per lot: 1 000 / 525 = 1.9047 -> 1.90
    sizer = KellySizer(0.25, 1.0)
    d = sizer.size(probability=0.6, entry=1.1, stop_loss=1.095, take_profit=1.11, equity=100_000, headroom=1e9,
                   spec=EURUSD, extra_loss_per_unit=25.0)  # fmt: skip
    assert d.quantity == pytest.approx(1.90)
    assert d.risk_amount == pytest.approx(1.90 * 525)


def test_zero_size_has_a_reason() -> None:
    sizer = KellySizer(0.25, 1.0)
    no_edge = sizer.size(probability=0.3, entry=1.1, stop_loss=1.095, take_profit=1.11, equity=100_000,
                         headroom=1e9, spec=EURUSD)  # fmt: skip
    assert (no_edge.quantity, no_edge.reason) == (0.0, "KELLY_NON_POSITIVE")
    tiny = sizer.size(probability=0.6, entry=1.1, stop_loss=1.095, take_profit=1.11, equity=100_000,
                      headroom=4.0, spec=EURUSD)  # fmt: skip
    assert (tiny.quantity, tiny.reason) == (0.0, "BELOW_MIN_VOLUME")  # 4 / 500 = 0.008 < 0.01
    none_left = sizer.size(probability=0.6, entry=1.1, stop_loss=1.095, take_profit=1.11, equity=100_000,
                           headroom=-10.0, spec=EURUSD)  # fmt: skip
    assert (none_left.quantity, none_left.reason) == (0.0, "NO_HEADROOM")


def test_clamped_to_volume_max_and_to_the_signal_size() -> None:
    capped = SymbolSettings(value_per_unit=100_000, volume_step=0.01, volume_min=0.01, volume_max=1.5)
    assert size(KellySizer(0.25, 1.0), 0.6, spec=capped) == pytest.approx(1.5)
    d = KellySizer(0.25, 1.0).size(probability=0.6, entry=1.1, stop_loss=1.095, take_profit=1.11,
                                   equity=100_000, headroom=1e9, spec=EURUSD, limit=0.757)  # fmt: skip
    assert d.quantity == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("quantity", "step", "expected"),
    [(0.3, 0.1, 0.3), (0.29999, 0.1, 0.2), (1.239, 0.01, 1.23), (7.0, 0.5, 7.0), (0.0009, 0.001, 0.0),
     (0.12345678, 0.0001, 0.1234), (3.0, 1.0, 3.0)],
)  # fmt: skip
def test_round_down_to_step(quantity: float, step: float, expected: float) -> None:
    assert round_down_to_step(quantity, step) == expected


steps = st.sampled_from([0.0001, 0.001, 0.01, 0.1, 1.0])


@given(
    p=st.floats(0.0, 1.0),
    stop_pct=st.floats(0.001, 0.1),
    rr=st.floats(0.1, 10),
    headroom=st.floats(-1_000, 50_000),
    step=steps,
    fraction=st.floats(0.05, 1.0),
)
def test_size_never_exceeds_any_cap(
    p: float, stop_pct: float, rr: float, headroom: float, step: float, fraction: float
) -> None:
    spec = SymbolSettings(value_per_unit=10.0, volume_step=step, volume_min=step, volume_max=10_000 * step)
    entry = 100.0
    sl, tp = entry * (1 - stop_pct), entry * (1 + stop_pct * rr)
    d = KellySizer(fraction, 1.0).size(probability=p, entry=entry, stop_loss=sl, take_profit=tp, equity=100_000,
                                       headroom=headroom, spec=spec)  # fmt: skip
    if d.quantity == 0:
        assert d.reason != "SIZED"
        return
    loss = d.quantity * (entry - sl) * spec.value_per_unit
    f = p - (1 - p) / ((tp - entry) / (entry - sl))
    assert f > 0
    assert loss <= min(fraction * f * 100_000, 1_000, headroom) * (1 + 1e-9)
    assert spec.volume_min <= d.quantity <= spec.volume_max
    steps_taken = d.quantity / step
    assert abs(steps_taken - round(steps_taken)) < 1e-6
