"""Live trading performance over a sliding window: win rate, profit factor, Sharpe annualized for
the bar frequency, max drawdown, and each signal tier's realized hit rate against its confidence."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from uuid import UUID

NS_PER_S = 1_000_000_000


def periods_per_year(bar_seconds: int, trading_days_per_year: float, trading_hours_per_day: float) -> float:
    """Bars in a year: crypto trades 365 x 24 h; spot forex about 260 x 24 h (closed weekends)."""
    if bar_seconds <= 0:
        raise ValueError("bar_seconds must be positive")
    return trading_days_per_year * trading_hours_per_day * 3600.0 / bar_seconds


def annualized_sharpe(returns: list[float], periods: float) -> float:
    """Mean over sample standard deviation of per-bar returns, times sqrt(bars per year).

    The returns must include the bars with no trade (zeros): dropping them would inflate the
    ratio by measuring only the bars where something happened. 0 when undefined (< 2 bars or
    no variation), so a quiet account never shows a spurious infinite Sharpe.
    """
    n = len(returns)
    if n < 2:
        return 0.0
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    if var <= 0.0:
        return 0.0
    return mean / math.sqrt(var) * math.sqrt(periods)


def max_drawdown(balances: list[float]) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0.05 = 5 %)."""
    peak = -math.inf
    worst = 0.0
    for b in balances:
        peak = max(peak, b)
        if peak > 0:
            worst = max(worst, (peak - b) / peak)
    return worst


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    closed_ns: int
    net_pnl: float  # PnlEvent.realized_pnl is already net of commission
    balance_after: float


@dataclass(frozen=True, slots=True)
class PerformanceSnapshot:
    window_seconds: int
    trades: int
    win_rate: float
    profit_factor: float  # gross profit / gross loss; inf shown as 0 trades lost -> float("inf")
    sharpe: float
    max_drawdown: float
    realized_pnl: float
    balance: float | None


class PerformanceWindow:
    """The closed trades of the last `window_seconds`, and the per-bar equity returns for Sharpe."""

    def __init__(
        self,
        *,
        window_seconds: int,
        bar_seconds: int,
        trading_days_per_year: float = 365.0,
        trading_hours_per_day: float = 24.0,
    ) -> None:
        self.window_seconds = window_seconds
        self.bar_seconds = bar_seconds
        self.periods = periods_per_year(bar_seconds, trading_days_per_year, trading_hours_per_day)
        self.trades: deque[ClosedTrade] = deque()
        self.balance: float | None = None
        self._start_balance: float | None = None  # balance before the oldest trade in the window

    def record(self, trade: ClosedTrade) -> None:
        if self.balance is None:
            self._start_balance = trade.balance_after - trade.net_pnl
        self.trades.append(trade)
        self.balance = trade.balance_after

    def _expire(self, now_ns: int) -> None:
        horizon = now_ns - self.window_seconds * NS_PER_S
        while self.trades and self.trades[0].closed_ns < horizon:
            old = self.trades.popleft()
            self._start_balance = old.balance_after

    def bar_returns(self, now_ns: int) -> list[float]:
        """One return per bar of the window, zero for bars without a closed trade."""
        self._expire(now_ns)
        bar_ns = self.bar_seconds * NS_PER_S
        bars = max(1, self.window_seconds // self.bar_seconds)
        first_bar = now_ns // bar_ns - bars + 1
        pnl_by_bar = [0.0] * bars
        for t in self.trades:
            i = t.closed_ns // bar_ns - first_bar
            if 0 <= i < bars:
                pnl_by_bar[i] += t.net_pnl
        balance = self._start_balance if self._start_balance is not None else 0.0
        returns = []
        for pnl in pnl_by_bar:
            returns.append(pnl / balance if balance > 0 else 0.0)
            balance += pnl
        return returns

    def snapshot(self, now_ns: int) -> PerformanceSnapshot:
        returns = self.bar_returns(now_ns)
        pnls = [t.net_pnl for t in self.trades]
        wins = [p for p in pnls if p > 0]
        losses = [-p for p in pnls if p < 0]
        gross_loss = sum(losses)
        profit_factor = (sum(wins) / gross_loss) if gross_loss > 0 else (math.inf if wins else 0.0)
        start = self._start_balance
        curve = ([start] if start is not None else []) + [t.balance_after for t in self.trades]
        return PerformanceSnapshot(
            window_seconds=self.window_seconds,
            trades=len(pnls),
            win_rate=len(wins) / len(pnls) if pnls else 0.0,
            profit_factor=profit_factor,
            sharpe=annualized_sharpe(returns, self.periods),
            max_drawdown=max_drawdown(curve),
            realized_pnl=sum(pnls),
            balance=self.balance,
        )


@dataclass(frozen=True, slots=True)
class TierRecord:
    trades: int
    hit_rate: float
    mean_confidence: float

    @property
    def gap(self) -> float:
        """Realized minus promised: negative means the tier is over-confident."""
        return self.hit_rate - self.mean_confidence


class TierCalibration:
    """Joins final signals (tier, confidence) to their realized P&L by signal_id, and keeps each
    tier's last `window_trades` outcomes. Both maps are bounded."""

    def __init__(self, *, window_trades: int = 200, max_open_signals: int = 50_000) -> None:
        self.window_trades = window_trades
        self.max_open_signals = max_open_signals
        self._signals: OrderedDict[UUID, tuple[str, float]] = OrderedDict()
        self.outcomes: dict[str, deque[tuple[bool, float]]] = {}

    def signal(self, signal_id: UUID, tier: str, confidence: float) -> None:
        self._signals[signal_id] = (tier, confidence)
        self._signals.move_to_end(signal_id)
        if len(self._signals) > self.max_open_signals:
            self._signals.popitem(last=False)

    def outcome(self, signal_id: UUID, net_pnl: float) -> None:
        known = self._signals.get(signal_id)
        if known is None:
            return  # a trade whose signal we never saw (or forgot): nothing to calibrate against
        tier, confidence = known
        window = self.outcomes.setdefault(tier, deque(maxlen=self.window_trades))
        window.append((net_pnl > 0, confidence))

    def tiers(self) -> dict[str, TierRecord]:
        out = {}
        for tier, window in sorted(self.outcomes.items()):
            if window:
                n = len(window)
                out[tier] = TierRecord(
                    trades=n,
                    hit_rate=sum(1 for hit, _ in window if hit) / n,
                    mean_confidence=sum(c for _, c in window) / n,
                )
        return out
