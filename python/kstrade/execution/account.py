"""What the guardrails see of the trading account: balance, equity and open positions with their
stops, and the loss each position (or a new order) would add if its stop were hit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kstrade.schemas.models import Side


@dataclass(frozen=True, slots=True)
class Position:
    ticket: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    entry_price: float
    stop_loss: float
    take_profit: float
    #: The current price the position is valued at (floating P&L).
    mark: float
    value_per_unit: float
    #: Commission a close will cost, in account currency.
    close_commission: float = 0.0
    opened_ns: int = 0

    @property
    def direction(self) -> int:
        return 1 if self.side is Side.BUY else -1

    @property
    def floating_pnl(self) -> float:
        return self.direction * (self.mark - self.entry_price) * self.quantity * self.value_per_unit


def loss_to_stop(
    *, side: Side, quantity: float, price: float, stop_loss: float, value_per_unit: float,
    slippage_bps: float, close_commission: float,
) -> float:  # fmt: skip
    """Equity lost from `price` if the stop is hit with `slippage_bps` of adverse slippage on the
    stop price, plus the closing commission. Never negative: a stop beyond the price in profit
    (a locked-in gain) does not count as room gained. No stop at all (MT5 reports 0): the loss is
    unbounded, so nothing new may be opened beside it."""
    if stop_loss <= 0:
        return math.inf
    direction = 1 if side is Side.BUY else -1
    fill = stop_loss * (1 - direction * slippage_bps / 10_000)
    loss = direction * (price - fill) * quantity * value_per_unit
    return max(0.0, loss) + close_commission


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    balance: float
    #: Balance + floating P&L - open commissions and swaps (what FTMO checks against its floors).
    equity: float
    positions: tuple[Position, ...] = field(default_factory=tuple)

    def open_worst_case(self, slippage_bps: float) -> float:
        """What the open positions would still lose if every stop were hit."""
        return sum(
            loss_to_stop(
                side=p.side, quantity=p.quantity, price=p.mark, stop_loss=p.stop_loss,
                value_per_unit=p.value_per_unit, slippage_bps=slippage_bps, close_commission=p.close_commission,
            )
            for p in self.positions
        )  # fmt: skip

    def open_risk_from_entry(self, slippage_bps: float) -> float:
        """What the open positions would lose from their entry prices if every stop were hit: the
        loss a position carried over Prague midnight can still take from the new day's balance."""
        return sum(
            loss_to_stop(
                side=p.side, quantity=p.quantity, price=p.entry_price, stop_loss=p.stop_loss,
                value_per_unit=p.value_per_unit, slippage_bps=slippage_bps, close_commission=p.close_commission,
            )
            for p in self.positions
        )  # fmt: skip
