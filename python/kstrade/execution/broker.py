"""The one interface every broker sits behind (paper, MT5, MT5 over the mt5linux bridge), and
what a send can come back with: filled, rejected for good, worth retrying, or unknown (timeout or
lost connection: the order may have been placed, so reconcile before sending again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from kstrade.execution.account import AccountSnapshot
from kstrade.schemas.models import Side

#: What a broken link to the broker raises (sockets, the RPyC bridge, MT5 IPC).
LINK_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError, EOFError, TimeoutError)


class Outcome(StrEnum):
    FILLED = "FILLED"
    #: Never retried: INVALID_STOPS, NO_MONEY, MARKET_CLOSED, TRADE_DISABLED, ...
    REJECTED = "REJECTED"
    #: Retried with a fresh price: REQUOTE, PRICE_CHANGED, PRICE_OFF, TOO_MANY_REQUESTS.
    RETRYABLE = "RETRYABLE"
    #: TIMEOUT, CONNECTION, no answer: look for the deal before sending again.
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    #: Our id for the order, derived from the signal_id; carried to the broker (MT5 comment) so
    #: reconciliation can find the deal after a timeout or a restart.
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    #: The price the order was sized at (the signal's entry): slippage is measured against it.
    reference_price: float
    stop_loss: float
    take_profit: float
    value_per_unit: float = 1.0
    commission_per_lot: float = 0.0


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: str
    execution_id: str
    fill_price: float
    quantity: float
    commission: float
    time_ns: int


@dataclass(frozen=True, slots=True)
class BrokerReply:
    outcome: Outcome
    #: Stable code: DONE, REQUOTE, NO_MONEY, INVALID_STOPS, TIMEOUT, ...
    code: str
    message: str = ""
    fill: Fill | None = None


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A position closed (by its stop, its target or by us): one realized P&L event."""

    ticket: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    entry_price: float
    exit_price: float
    #: Net of the opening and closing commissions and swaps, in account currency.
    realized_pnl: float
    commission: float
    balance: float
    time_ns: int
    reason: str


class Broker(Protocol):
    name: str

    def send(self, request: OrderRequest, now_ns: int) -> BrokerReply:
        """Open a position with its stop loss and take profit held by the broker."""
        ...

    def price(self, symbol: str, side: Side, now_ns: int) -> float | None:
        """The price a market order on `side` would trade at now (ask to buy, bid to sell)."""
        ...

    def find(self, client_order_id: str, now_ns: int) -> Fill | None:
        """Reconcile: the fill of an order we sent, if the broker has one (open or closed)."""
        ...

    def account(self, now_ns: int) -> AccountSnapshot: ...

    def close_position(self, ticket: str, now_ns: int, reason: str) -> BrokerReply: ...

    def closed_trades(self, now_ns: int) -> list[ClosedTrade]:
        """Positions closed since the last call."""
        ...
