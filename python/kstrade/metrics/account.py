"""The account as the bus tells it, for Telegram's /positions and /daily: open positions from
fills on trades.executions less closes on trades.pnl (matched on order_id, the broker's position
ticket in both), and the realized P&L of each Prague trading day with the latest balance.

Pure bookkeeping, replay-safe: a redelivered fill of a position already closed does not reopen it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import date

from kstrade.execution.trading_day import to_ns, trading_day
from kstrade.schemas.models import Execution, OrderStatus, PnlEvent, Side

#: Closed position ids remembered, so a late or redelivered fill of one is not taken as open.
_CLOSED_KEPT = 10_000
#: A close of at least the open quantity, give or take float noise, closes the position.
_QTY_EPSILON = 1e-9


@dataclass(slots=True)
class OpenPosition:
    order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    opened_ns: int


@dataclass(frozen=True, slots=True)
class DayResult:
    realized_pnl: float = 0.0
    trades: int = 0
    wins: int = 0


class AccountView:
    def __init__(self) -> None:
        self.positions: dict[str, OpenPosition] = {}
        self.days: dict[date, DayResult] = {}
        self.balance: float | None = None
        self.currency = ""
        self._closed: set[str] = set()
        self._closed_order: deque[str] = deque()
        #: Moves on every change (the collector refreshes its replies when it moved).
        self.revision = 0

    def execution(self, fill: Execution) -> None:
        if fill.status not in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED) or fill.order_id in self._closed:
            return
        if fill.order_id in self.positions:
            return  # redelivered (at-least-once): the same fill again
        self.positions[fill.order_id] = OpenPosition(
            fill.order_id, fill.symbol, fill.side, fill.quantity, fill.fill_price, to_ns(fill.timestamp)
        )
        self.revision += 1

    def pnl(self, event: PnlEvent) -> None:
        held = self.positions.get(event.order_id)
        if held is not None and held.quantity - event.quantity > _QTY_EPSILON:
            held.quantity -= event.quantity  # a partial close
        else:
            self.positions.pop(event.order_id, None)
            self._remember_closed(event.order_id)
        day = trading_day(to_ns(event.timestamp))  # FTMO: the day runs from Prague midnight
        before = self.days.get(day, DayResult())
        self.days[day] = DayResult(
            before.realized_pnl + event.realized_pnl, before.trades + 1, before.wins + (event.realized_pnl > 0)
        )
        self.balance, self.currency = event.balance, event.currency
        self.revision += 1

    def _remember_closed(self, order_id: str) -> None:
        if order_id in self._closed:
            return
        self._closed.add(order_id)
        self._closed_order.append(order_id)
        if len(self._closed_order) > _CLOSED_KEPT:
            self._closed.discard(self._closed_order.popleft())

    # -- the replies -------------------------------------------------------------------------------
    def positions_reply(self) -> str:
        if not self.positions:
            return "open positions: none"
        rows = sorted(self.positions.values(), key=lambda p: (p.symbol, p.opened_ns))
        lines = [f"open positions: {len(rows)}"]
        lines += [f"{p.symbol} {p.side.value} {p.quantity:g} @ {p.price:g} ({p.order_id})" for p in rows]
        return "\n".join(lines)

    def daily_reply(self, now_ns: int) -> str:
        day = trading_day(now_ns)
        result = self.days.get(day, DayResult())
        balance = f"{self.balance:.2f} {self.currency}".rstrip() if self.balance is not None else "no closed trade yet"
        win_rate = f", win rate {result.wins / result.trades:.1%}" if result.trades else ""
        return (f"today ({day.isoformat()}, Prague): realized P&L {result.realized_pnl:.2f} over {result.trades} "
                f"closed trade(s){win_rate}; balance {balance}")  # fmt: skip
