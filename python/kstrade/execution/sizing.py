"""Position sizing: fractional Kelly on the calibrated win probability and the reward/risk of
the signal, capped by a per-trade risk fraction and by the remaining loss headroom, rounded down
to the symbol's volume step and clamped to its limits. Zero means no trade, with a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from kstrade.codes import SIZED, Drop
from kstrade.config import SymbolSettings


@dataclass(frozen=True, slots=True)
class SizeDecision:
    quantity: float
    #: Why the size is what it is: a stable code (e.g. KELLY_NON_POSITIVE) when quantity is 0.
    reason: str
    kelly: float = 0.0
    risk_amount: float = 0.0


def round_down_to_step(quantity: float, step: float) -> float:
    """Whole steps only, never rounding up (a bigger size than sized is more risk than allowed).
    Decimal arithmetic so 0.3 / 0.1 is 3 steps, and a quotient within 1e-9 of a whole step
    counts as that step: 730 / (1.1 - 1.095) / 100000 is 1.46 lots, not 1.4599999999999997."""
    if quantity <= 0:
        return 0.0
    q, s = Decimal(repr(quantity)), Decimal(repr(step))
    steps = q / s
    whole = steps.to_integral_value()
    if abs(steps - whole) > Decimal("1e-9") * max(whole, Decimal(1)):
        whole = steps.to_integral_value(rounding=ROUND_FLOOR)
    return float(whole * s)


def kelly_fraction(p: float, reward_risk: float) -> float:
    """f* = p - (1 - p) / b: the fraction of equity to risk to the stop."""
    if reward_risk <= 0:
        return -math.inf
    return p - (1.0 - p) / reward_risk


@dataclass(frozen=True, slots=True)
class KellySizer:
    #: Share of full Kelly used (0.25 = quarter Kelly; full Kelly overbets a noisy edge).
    fraction: float = 0.25
    #: Hard cap on the equity risked per trade, in percent.
    max_risk_pct: float = 1.0

    def size(
        self,
        *,
        probability: float,
        entry: float,
        stop_loss: float,
        take_profit: float,
        equity: float,
        headroom: float,
        spec: SymbolSettings,
        extra_loss_per_unit: float = 0.0,
        limit: float | None = None,
    ) -> SizeDecision:
        """`headroom`: what may still be lost before a floor is touched (after open positions'
        worst case). `extra_loss_per_unit`: slippage and commissions per lot if the stop is hit.
        `limit`: an upstream size cap (the signal's position_size), if any."""
        risk_distance = abs(entry - stop_loss)
        if risk_distance <= 0:
            return SizeDecision(0.0, Drop.ZERO_STOP_DISTANCE)
        b = abs(take_profit - entry) / risk_distance
        f = kelly_fraction(probability, b)
        if f <= 0:
            return SizeDecision(0.0, Drop.KELLY_NON_POSITIVE, kelly=f)
        risk_fraction = min(self.fraction * f, self.max_risk_pct / 100.0)
        risk_amount = min(risk_fraction * equity, headroom)
        if risk_amount <= 0:
            return SizeDecision(0.0, Drop.NO_HEADROOM, kelly=f)
        loss_per_unit = risk_distance * spec.value_per_unit + extra_loss_per_unit
        quantity = min(risk_amount / loss_per_unit, spec.volume_max)
        if limit is not None:
            quantity = min(quantity, limit)
        quantity = round_down_to_step(quantity, spec.volume_step)
        if quantity < spec.volume_min:
            return SizeDecision(0.0, Drop.BELOW_MIN_VOLUME, kelly=f, risk_amount=risk_amount)
        return SizeDecision(quantity, SIZED, kelly=f, risk_amount=quantity * loss_per_unit)
