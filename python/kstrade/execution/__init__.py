"""Execution: FTMO guardrails, Kelly sizing, the durable order journal, retries and a circuit
breaker in front of the broker (paper by default, MT5 directly or over the mt5linux bridge)."""

from kstrade.execution.account import AccountSnapshot, Position, loss_to_stop
from kstrade.execution.broker import Broker, BrokerReply, ClosedTrade, Fill, OrderRequest, Outcome
from kstrade.execution.circuit import BreakerState, CircuitBreaker
from kstrade.execution.guardrails import (
    AccountGuard,
    DailyLossGuard,
    GuardEvent,
    MaxLossGuard,
    NewsBlackout,
    OrderRateLimit,
    TradingState,
    WeekendClose,
)
from kstrade.execution.journal import JournalEntry, JournalState, OrderJournal
from kstrade.execution.paper import PaperBroker
from kstrade.execution.router import OrderRouter, RouteResult
from kstrade.execution.sizing import KellySizer, SizeDecision, round_down_to_step
from kstrade.execution.stage import ExecutionStage, client_order_id

__all__ = [
    "AccountGuard",
    "AccountSnapshot",
    "BreakerState",
    "Broker",
    "BrokerReply",
    "CircuitBreaker",
    "ClosedTrade",
    "DailyLossGuard",
    "ExecutionStage",
    "Fill",
    "GuardEvent",
    "JournalEntry",
    "JournalState",
    "KellySizer",
    "MaxLossGuard",
    "NewsBlackout",
    "OrderJournal",
    "OrderRateLimit",
    "OrderRequest",
    "OrderRouter",
    "Outcome",
    "PaperBroker",
    "Position",
    "RouteResult",
    "SizeDecision",
    "TradingState",
    "WeekendClose",
    "client_order_id",
    "loss_to_stop",
    "round_down_to_step",
]
