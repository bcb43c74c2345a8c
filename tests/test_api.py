"""The Python API (`kstrade.backtest`, `kstrade.run`) and the run statistics behind it: the frames
agree with the run directory and summary.json, and Sharpe, maximum drawdown and profit factor
recomputed here, independently, from the trades and the equity frames equal the reported ones."""

from __future__ import annotations

import json
import math
import statistics as stdlib_statistics
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import kstrade
from kstrade.codes import ExitReason
from kstrade.ingest import synthetic
from kstrade.report.statistics import TRADE_COLUMNS, daily_returns, drawdown, equity_frame, statistics

START = datetime(2026, 1, 5, tzinfo=UTC)


def _candles(days: int) -> pl.DataFrame:
    """SYNTHETIC planted-edge minutes for the default symbols, two days of warm-up first."""
    first = START - timedelta(days=2)
    frames = [synthetic.generate(s, first, days + 2, 7, "edge") for s in ("BTC-USD", "ETH-USD", "SOL-USD")]
    return pl.concat(frames).select("timestamp", "symbol", "open", "high", "low", "close", "volume")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> kstrade.BacktestResult:
    out = tmp_path_factory.mktemp("api") / "run"
    return kstrade.backtest(_candles(2), since=START, out=out)


def test_a_dataframe_backtest_returns_the_run_directory_as_frames(result: kstrade.BacktestResult) -> None:
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["statistics"] == result.statistics
    assert result.signals.height == summary["signals_final"] > 0
    assert result.closes.height == summary["trades_closed"] > 0
    assert result.fills.height == summary["executions"]
    assert pl.read_parquet(result.run_dir / "trades.parquet").equals(result.trades)
    assert dict(result.trades.schema) == dict(TRADE_COLUMNS)
    assert "a polars DataFrame" in summary["data"]
    assert result.period == (START, START + timedelta(days=2))


def test_every_position_is_one_trade_row_with_its_exit(result: kstrade.BacktestResult) -> None:
    trades, closes = result.trades, result.closes
    closed = trades.filter(pl.col("exit_time").is_not_null())
    assert closed.height == closes.height
    assert trades.height == result.fills.filter(pl.col("status") == "FILLED").height
    assert sorted(closed["signal_id"].to_list()) == sorted(closes["signal_id"].to_list())
    assert math.isclose(sum(closed["realized_pnl"].to_list()), result.summary["realized_pnl"], rel_tol=1e-12)
    assert (closed["entry_time"] <= closed["exit_time"]).all()
    assert set(closed["exit_reason"].to_list()) <= {r.value for r in ExitReason}
    assert closed["tier"].null_count() == 0 and set(closed["tier"].to_list()) <= {"A", "B", "C"}
    # a stop or target exit is at (or, for a gap, beyond) its level
    for row in closed.iter_rows(named=True):
        long = row["side"] == "BUY"
        if row["exit_reason"] == "TAKE_PROFIT":
            assert (row["exit_price"] >= row["take_profit"]) if long else (row["exit_price"] <= row["take_profit"])
        if row["exit_reason"] == "STOP_LOSS_GAP":
            assert (row["exit_price"] <= row["stop_loss"]) if long else (row["exit_price"] >= row["stop_loss"])


def test_sharpe_drawdown_and_profit_factor_recomputed_independently(result: kstrade.BacktestResult) -> None:
    figures = result.statistics
    initial = figures["initial_balance"]
    # equity: the initial balance, then the balance after each close, in closing order
    closes = result.closes.sort("timestamp", maintain_order=True)
    balances = [initial, *closes["balance"].to_list()]
    assert result.equity["balance"].to_list() == balances
    # maximum drawdown: the deepest fall below the running peak
    curve = np.array(balances)
    assert figures["max_drawdown"] == pytest.approx(float(np.min(curve / np.maximum.accumulate(curve) - 1.0)))
    # profit factor: gross wins over gross losses of the closed trades
    pnl = np.array(result.trades["realized_pnl"].drop_nulls().to_list())
    losses = -pnl[pnl < 0].sum()
    expected_pf = pnl[pnl > 0].sum() / losses if losses > 0 else None
    assert figures["profit_factor"] == (pytest.approx(expected_pf) if expected_pf is not None else None)
    assert figures["win_rate"] == pytest.approx(float((pnl > 0).mean()))
    # Sharpe: daily (UTC) closing balances of each calendar day, returns, sqrt(365)
    start, end = result.period
    day_close: dict[date, float] = {}
    for at, balance in zip(closes["timestamp"].to_list(), closes["balance"].to_list(), strict=True):
        day_close[at.date()] = balance
    last, returns, day = initial, [], start.date()
    while day < end.date():
        now = day_close.get(day, last)
        returns.append(now / last - 1.0)
        last, day = now, day + timedelta(days=1)
    expected = stdlib_statistics.mean(returns) / stdlib_statistics.stdev(returns) * math.sqrt(365)
    assert figures["sharpe"] == pytest.approx(expected)
    assert result.returns()["return"].to_list() == pytest.approx(returns)
    assert figures["total_return"] == pytest.approx(balances[-1] / initial - 1.0)


def test_kstrade_run_replays_the_synthetic_market(tmp_path: Path) -> None:
    got = kstrade.run(days=1, out=tmp_path / "run")
    assert "SYNTHETIC" in got.summary["data"] and got.statistics["period_days"] == 1.0
    assert got.trades.height >= got.closes.height


def test_a_frame_with_an_unconfigured_symbol_is_refused_by_name(tmp_path: Path) -> None:
    frame = _candles(1).with_columns(pl.lit("DOGE-USD").alias("symbol"))
    with pytest.raises(ValueError, match="DOGE-USD"):
        kstrade.backtest(frame, since=START, out=tmp_path / "run")
    with pytest.raises(ValueError, match="missing column"):
        kstrade.backtest(frame.drop("close"), out=tmp_path / "run2")


# -- the statistics on trades made by hand ---------------------------------------------------------

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _trades(rows: list[tuple[int, int | None, float, float | None]]) -> pl.DataFrame:
    """(entry hour, exit hour or None: open, realized P&L, balance after) per position."""
    return pl.DataFrame(
        {
            "signal_id": [str(i) for i in range(len(rows))],
            "symbol": ["BTC-USD"] * len(rows),
            "side": ["BUY"] * len(rows),
            "quantity": [1.0] * len(rows),
            "entry_time": [T0 + timedelta(hours=a) for a, *_ in rows],
            "exit_time": [None if b is None else T0 + timedelta(hours=b) for _, b, *_ in rows],
            "entry_price": [1.0] * len(rows),
            "exit_price": [None if b is None else 1.0 for _, b, *_ in rows],
            "stop_loss": [0.9] * len(rows),
            "take_profit": [1.2] * len(rows),
            "realized_pnl": [None if b is None else p for _, b, p, _ in rows],
            "commission": [0.0] * len(rows),
            "exit_reason": [None if b is None else "STOP_LOSS" for _, b, *_ in rows],
            "balance": [bal for *_, bal in rows],
            "tier": ["A"] * len(rows),
            "confidence": [0.7] * len(rows),
        },
        schema=TRADE_COLUMNS,
    )


def test_drawdown_depth_and_duration_exposure_and_undefined_figures() -> None:
    # 1000 -> 1100 (peak, hour 2) -> 990 (hour 10) -> 1100 again at hour 50: 48 h under water
    trades = _trades([(0, 2, 100.0, 1100.0), (4, 10, -110.0, 990.0), (5, 50, 110.0, 1100.0), (70, None, 0.0, None)])
    end = T0 + timedelta(days=4)
    figures = statistics(trades, 1000.0, T0, end)
    assert figures["max_drawdown"] == pytest.approx(990 / 1100 - 1)
    assert figures["max_drawdown_days"] == pytest.approx(2.0)
    # open [0,2] + [4,50] (overlapping [5,50] counted once) + [70, end=96]: 2 + 46 + 26 of 96 hours
    assert figures["exposure"] == pytest.approx((2 + 46 + 26) / 96)
    assert figures["open_at_end"] == 1 and figures["trades"] == 3
    assert figures["profit_factor"] == pytest.approx(210 / 110)
    assert figures["trades_per_day"] == pytest.approx(3 / 4)
    winners = statistics(_trades([(0, 1, 5.0, 1005.0)]), 1000.0, T0, end)
    assert winners["profit_factor"] is None and winners["sortino"] is None  # no loss: undefined, not inf
    assert json.loads(json.dumps(winners)) == winners  # valid JSON: no inf, no NaN
    # a drawdown still open at the end lasts until the end
    _, lasting = drawdown(equity_frame(_trades([(0, 1, 10.0, 1010.0), (2, 24, -20.0, 990.0)]), 1000.0, T0), end)
    assert lasting == pytest.approx((96 - 1) / 24)


def test_daily_returns_cover_every_day_of_the_period_quiet_ones_included() -> None:
    equity = equity_frame(_trades([(0, 30, 50.0, 1050.0)]), 1000.0, T0)
    days = daily_returns(equity, T0, T0 + timedelta(days=3))
    assert days["date"].to_list() == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    assert days["balance"].to_list() == [1000.0, 1050.0, 1050.0]
    assert days["return"].to_list() == pytest.approx([0.0, 0.05, 0.0])


def test_the_wilson_interval_of_an_all_or_nothing_rate_reaches_its_bound_exactly() -> None:
    from kstrade.report.calibration import wilson

    assert wilson(7, 7)[1] == 1.0 and wilson(0, 7)[0] == 0.0
    low, high = wilson(3, 7)
    assert 0.0 < low < 3 / 7 < high < 1.0
