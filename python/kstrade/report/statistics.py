"""A run's trades and statistics, computed once from what the run put on its topics, and shared
by `summary.json`, `report.html` and the Python API (`kstrade.backtest`).

- `trades_frame`: one row per position, closed or still open at the end: entry and exit time,
  side, size, prices, stop and target, P&L, why it closed (`exit_reason`, P&L event v2), and the
  tier and confidence of the signal behind it.
- `equity_frame`: the account balance over time: the initial balance at the start of the period,
  then the balance after each closed trade (closed P&L only: open positions are not marked).
- `daily_returns`: the balance at the end of each UTC calendar day of the period, as returns
  (the days without a trade included, as zeros): what quantstats or vectorbt take.
- `statistics`: total return, CAGR, Sharpe and Sortino (daily, annualised with 365 days: crypto
  trades every day; an FX user may prefer 252, see `PERIODS_PER_YEAR`), Calmar, the maximum
  drawdown and how long it lasted, profit factor, expectancy, win rate, exposure (the share of the
  period with a position open), trades per day, and the same per symbol and per tier.

A figure that is undefined (a Sharpe of fewer than two days, a profit factor without a losing
trade) is None, never inf or NaN, so summary.json stays valid JSON.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import polars as pl

#: Calendar days per year: daily returns annualise with sqrt(365), CAGR with 365.25 days.
PERIODS_PER_YEAR = 365
_YEAR_DAYS = 365.25
_DAY = timedelta(days=1)

TRADE_COLUMNS = pl.Schema(
    {
        "signal_id": pl.String(),
        "symbol": pl.String(),
        "side": pl.String(),
        "quantity": pl.Float64(),
        "entry_time": pl.Datetime("us", "UTC"),
        "exit_time": pl.Datetime("us", "UTC"),
        "entry_price": pl.Float64(),
        "exit_price": pl.Float64(),
        "stop_loss": pl.Float64(),
        "take_profit": pl.Float64(),
        "realized_pnl": pl.Float64(),
        "commission": pl.Float64(),
        "exit_reason": pl.String(),
        "balance": pl.Float64(),
        "tier": pl.String(),
        "confidence": pl.Float64(),
    }
)


def _has(frame: pl.DataFrame, *columns: str) -> bool:
    return not frame.is_empty() and all(c in frame.columns for c in columns)


_FILLS = pl.Schema(
    {
        "order_id": pl.String(),
        "entry_time": pl.Datetime("us", "UTC"),
        "signal_id": pl.String(),
        "symbol": pl.String(),
        "side": pl.String(),
        "quantity": pl.Float64(),
        "fill_price": pl.Float64(),
    }
)
_CLOSES = pl.Schema(
    {
        "order_id": pl.String(),
        "exit_time": pl.Datetime("us", "UTC"),
        "signal_id_pnl": pl.String(),
        "symbol_pnl": pl.String(),
        "side_pnl": pl.String(),
        "quantity_pnl": pl.Float64(),
        "entry_price": pl.Float64(),
        "exit_price": pl.Float64(),
        "realized_pnl": pl.Float64(),
        "commission": pl.Float64(),
        "exit_reason": pl.String(),
        "balance": pl.Float64(),
    }
)


def _fills(executions: pl.DataFrame) -> pl.DataFrame:
    """Per order: its first FILLED time, signal, symbol, side, size and mean fill price."""
    if not _has(executions, "order_id", "status"):
        return pl.DataFrame(schema=_FILLS)
    filled = executions.filter(pl.col("status") == "FILLED")
    return filled.group_by("order_id", maintain_order=True).agg(
        pl.col("timestamp").first().alias("entry_time"),
        pl.col("signal_id").first(),
        pl.col("symbol").first(),
        pl.col("side").first(),
        pl.col("quantity").sum(),
        ((pl.col("fill_price") * pl.col("quantity")).sum() / pl.col("quantity").sum()).alias("fill_price"),
    )


def _closes(pnl: pl.DataFrame) -> pl.DataFrame:
    """Per P&L event: the exit (a v1 event has no exit_reason: null)."""
    if not _has(pnl, "order_id"):
        return pl.DataFrame(schema=_CLOSES)
    reason = pl.col("exit_reason") if "exit_reason" in pnl.columns else pl.lit(None, pl.String)
    return pnl.select(
        "order_id",
        pl.col("timestamp").alias("exit_time"),
        pl.col("signal_id").alias("signal_id_pnl"),
        pl.col("symbol").alias("symbol_pnl"),
        pl.col("side").alias("side_pnl"),
        pl.col("quantity").alias("quantity_pnl"),
        "entry_price",
        "exit_price",
        "realized_pnl",
        "commission",
        reason.alias("exit_reason"),
        "balance",
    ).cast(_CLOSES)


def _first_per(frame: pl.DataFrame, key: str, columns: pl.Schema) -> pl.DataFrame:
    """`columns` of the first row per `key` (typed nulls when the frame lacks them)."""
    if not _has(frame, key, *columns):
        return pl.DataFrame(schema={key: pl.String, **columns})
    return frame.group_by(key, maintain_order=True).agg(pl.col(c).first() for c in columns)


def trades_frame(
    pnl: pl.DataFrame, executions: pl.DataFrame, orders: pl.DataFrame, signals: pl.DataFrame
) -> pl.DataFrame:
    """Every position the run opened (a FILLED execution), in entry order, joined with its
    closing P&L event (none yet: exit columns null), its order's stop and target, and the
    final signal's tier and confidence. A P&L event whose fill the run does not hold (a
    restarted account) still makes a row, with no entry time."""
    joined = (
        _fills(executions)
        .join(_closes(pnl), on="order_id", how="full", coalesce=True)
        .with_columns(
            pl.coalesce("signal_id", "signal_id_pnl").alias("signal_id"),
            pl.coalesce("symbol", "symbol_pnl").alias("symbol"),
            pl.coalesce("side", "side_pnl").alias("side"),
            pl.coalesce("quantity_pnl", "quantity").alias("quantity"),
            pl.coalesce("entry_price", "fill_price").alias("entry_price"),
        )
        .join(_first_per(orders, "order_id", pl.Schema({"stop_loss": pl.Float64, "take_profit": pl.Float64})),
              on="order_id", how="left")
        .join(_first_per(signals, "signal_id", pl.Schema({"tier": pl.String, "confidence": pl.Float64})),
              on="signal_id", how="left")
    )  # fmt: skip
    return joined.select([pl.col(c).cast(t) for c, t in TRADE_COLUMNS.items()]).sort(
        ["entry_time", "exit_time", "symbol"], nulls_last=True, maintain_order=True
    )


def equity_frame(trades: pl.DataFrame, initial_balance: float, start: datetime) -> pl.DataFrame:
    """timestamp, balance: `initial_balance` at `start`, then the balance after each closed
    trade, in closing order."""
    closed = trades.filter(pl.col("exit_time").is_not_null()).sort("exit_time", maintain_order=True)
    head = pl.DataFrame({"timestamp": [start], "balance": [initial_balance]},
                        schema={"timestamp": pl.Datetime("us", "UTC"), "balance": pl.Float64})  # fmt: skip
    return pl.concat([head, closed.select(pl.col("exit_time").alias("timestamp"), "balance")])


def daily_returns(equity: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """date, balance, return: the balance at the end of each UTC day from `start`'s day to the
    day before `end` (the period's end, exclusive), and its change from the day before (the first
    day's from the initial balance)."""
    first = start.date()
    last = (end - timedelta(microseconds=1)).date()
    days = pl.date_range(first, last, "1d", eager=True).alias("date")
    closes = equity.group_by(pl.col("timestamp").dt.date().alias("date")).agg(pl.col("balance").last())
    initial = float(equity["balance"][0])
    frame = (
        pl.DataFrame({"date": days})
        .join(closes, on="date", how="left")
        .with_columns(pl.col("balance").fill_null(strategy="forward").fill_null(initial))
    )
    previous = pl.col("balance").shift(1).fill_null(initial)
    return frame.with_columns((pl.col("balance") / previous - 1.0).alias("return"))


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def sharpe(returns: list[float], periods: int = PERIODS_PER_YEAR) -> float | None:
    """Mean over the sample standard deviation, times sqrt(periods); None under two returns or
    without variation."""
    n = len(returns)
    if n < 2:
        return None
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    return _finite(mean / math.sqrt(var) * math.sqrt(periods)) if var > 0 else None


def sortino(returns: list[float], periods: int = PERIODS_PER_YEAR) -> float | None:
    """Mean over the downside deviation (root mean square of the negative returns, the others
    counted as zero: target 0), times sqrt(periods); None without a losing period."""
    n = len(returns)
    if n < 2:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    return _finite(sum(returns) / n / downside * math.sqrt(periods)) if downside > 0 else None


def drawdown(equity: pl.DataFrame, end: datetime) -> tuple[float, float]:
    """(deepest fall from a running peak as a negative fraction, the longest time in days from a
    peak until the balance first stood at or above it again, or until `end` if it never did)."""
    worst, longest = 0.0, 0.0
    peak, peak_at, under = -math.inf, end, False
    for at, balance in zip(equity["timestamp"].to_list(), equity["balance"].to_list(), strict=True):
        if balance >= peak:
            if under:
                longest = max(longest, (at - peak_at) / _DAY)
            peak, peak_at, under = balance, at, False
        else:
            under = True
            if peak > 0:
                worst = min(worst, balance / peak - 1.0)
    if under:
        longest = max(longest, (end - peak_at) / _DAY)
    return worst, longest


def _exposure(trades: pl.DataFrame, start: datetime, end: datetime) -> float:
    """The share of [start, end) with at least one position open (overlaps counted once)."""
    spans = sorted(
        (max(a, start), min(b if b is not None else end, end))
        for a, b in zip(trades["entry_time"].to_list(), trades["exit_time"].to_list(), strict=True)
        if a is not None
    )
    covered, reach = timedelta(0), start
    for a, b in spans:
        if b <= reach:
            continue
        covered += b - max(a, reach)
        reach = b
    total = end - start
    return covered / total if total > timedelta(0) else 0.0


def _trade_figures(closed: pl.DataFrame) -> dict[str, Any]:
    pnls = closed["realized_pnl"].to_list() if not closed.is_empty() else []
    wins = [p for p in pnls if p > 0]
    losses = [-p for p in pnls if p < 0]
    gross_loss = sum(losses)
    return {
        "trades": len(pnls),
        "realized_pnl": float(sum(pnls)),
        "win_rate": len(wins) / len(pnls) if pnls else None,
        "profit_factor": _finite(sum(wins) / gross_loss) if gross_loss > 0 else None,
        "expectancy": float(sum(pnls)) / len(pnls) if pnls else None,
    }


def statistics(trades: pl.DataFrame, initial_balance: float, start: datetime, end: datetime) -> dict[str, Any]:
    """The run's figures (see the module doc) over the period [start, end)."""
    equity = equity_frame(trades, initial_balance, start)
    final = float(equity["balance"][-1])
    days = (end - start) / _DAY
    growth = final / initial_balance
    try:
        cagr = _finite(growth ** (_YEAR_DAYS / days) - 1.0) if days > 0 and growth > 0 else None
    except OverflowError:  # a planted edge over a week: beyond what a float holds
        cagr = None
    returns = daily_returns(equity, start, end)["return"].to_list()
    worst, duration = drawdown(equity, end)
    closed = trades.filter(pl.col("exit_time").is_not_null())
    figures = _trade_figures(closed)
    return {
        "initial_balance": initial_balance,
        "final_balance": final,
        "total_return": growth - 1.0,
        "cagr": cagr,
        "sharpe": sharpe(returns),
        "sortino": sortino(returns),
        "calmar": _finite(cagr / -worst) if cagr is not None and worst < 0 else None,
        "max_drawdown": worst,
        "max_drawdown_days": duration,
        **figures,
        "exposure": _exposure(trades, start, end),
        "trades_per_day": figures["trades"] / days if days > 0 else None,
        "open_at_end": trades.height - closed.height,
        "period_days": days,
        "by_symbol": {
            str(symbol): _trade_figures(closed.filter(pl.col("symbol") == symbol))
            for symbol in sorted(trades["symbol"].unique().to_list())
        },
        "by_tier": {
            str(tier): _trade_figures(closed.filter(pl.col("tier") == tier))
            for tier in sorted(t for t in trades["tier"].unique().to_list() if t is not None)
        },
    }
