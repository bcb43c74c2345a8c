"""The Python API: a backtest (your candles) or a run (SYNTHETIC candles) from a Python session,
through exactly the pipeline `python -m kstrade backtest` and `run` replay, with the results as
polars DataFrames.

    import kstrade

    result = kstrade.backtest("candles.parquet")      # a CSV/Parquet file, or a polars DataFrame
    real = kstrade.backtest("eurusd")                 # the bundled REAL EURUSD 1h, with the 1h models
    result.statistics["sharpe"], result.statistics["max_drawdown"]
    result.trades                                     # entry/exit time, side, size, prices, P&L, exit reason
    result.equity                                     # the balance after each closed trade
    daily = result.returns()                          # date, return: one row per UTC day

    # quantstats / vectorbt take a pandas Series of returns indexed by date:
    series = daily.to_pandas().set_index("date")["return"]

`kstrade.run(days=7)` replays the default SYNTHETIC market the same way. Each call writes a run
directory (`result.run_dir`, a fresh temporary one unless `out` names one) with report.html and
summary.json, whose `statistics` are `result.statistics`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from kstrade.config import Settings, discover, load
from kstrade.ingest import synthetic
from kstrade.report.statistics import daily_returns

_DAY = timedelta(days=1)
#: The run directory's tables a result holds, by attribute.
_TABLES = {
    "signals": "signals.parquet",
    "orders": "orders.parquet",
    "fills": "executions.parquet",
    "closes": "pnl.parquet",
    "trades": "trades.parquet",
    "equity": "equity.parquet",
}


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest or a run produced. The frames are the run directory's Parquet files."""

    run_dir: Path
    summary: dict[str, Any]
    #: Final signals (`signals.final`), one row each.
    signals: pl.DataFrame
    #: Orders, pending and confirmed (`trades.orders.*`).
    orders: pl.DataFrame
    #: Executions (`trades.executions`).
    fills: pl.DataFrame
    #: Realized P&L events (`trades.pnl`), one per closed position.
    closes: pl.DataFrame
    #: One row per position: `kstrade.report.statistics.TRADE_COLUMNS`.
    trades: pl.DataFrame
    #: timestamp, balance: the initial balance at the start, then after each closed trade.
    equity: pl.DataFrame

    @property
    def statistics(self) -> dict[str, Any]:
        """summary.json's `statistics` (`kstrade.report.statistics.statistics`)."""
        figures: dict[str, Any] = self.summary["statistics"]
        return figures

    @property
    def period(self) -> tuple[datetime, datetime]:
        """[start, end) of the replayed period, UTC."""
        start = datetime.fromisoformat(self.summary["start"])
        return start, start + (self.summary["statistics"]["period_days"] * _DAY)

    def returns(self) -> pl.DataFrame:
        """date, balance, return: the balance at the end of each UTC day of the period and its
        change from the day before (days without a trade included)."""
        return daily_returns(self.equity, *self.period)


def _settings(
    config: Settings | str | Path | None, models: str | Path | None, preset: dict[str, Any] | None = None
) -> Settings:
    settings = config if isinstance(config, Settings) else load(discover(config), **(preset or {}))
    if models is not None:
        inference = settings.inference.model_copy(update={"models_dir": Path(models)})
        settings = settings.model_copy(update={"inference": inference})
    return settings


def _out(out: str | Path | None, prefix: str) -> Path:
    if out is not None:
        return Path(out)
    return Path(tempfile.mkdtemp(prefix=f"kstrade-{prefix}-")) / "run"


def _result(out: Path, summary: dict[str, Any]) -> BacktestResult:
    frames = {name: pl.read_parquet(out / file) for name, file in _TABLES.items()}
    return BacktestResult(run_dir=out, summary=summary, **frames)


def backtest(
    data: str | Path | pl.DataFrame,
    *,
    config: Settings | str | Path | None = None,
    models: str | Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    out: str | Path | None = None,
) -> BacktestResult:
    """Replay `data` (a CSV/Parquet candle file, or a polars DataFrame with timestamp or
    open_time_ms, symbol, open, high, low, close, volume) through every stage, on the memory
    bus unless the config says otherwise. `config`: Settings, a TOML file, or None (the file
    `python -m kstrade` would read: $KSTRADE_CONFIG, ./kstrade.toml, else the defaults);
    `models`: a models directory instead of the config's; `since`/`until`: the period (what the
    data holds before `since` warms the indicators); `out`: the run directory (default: a new
    temporary one). Raises ValueError naming what is wrong with the data or the range."""
    from kstrade.app import RunOptions, bundled, run

    shipped = bundled(data) if not isinstance(data, pl.DataFrame) else None
    settings = _settings(config, models, shipped.settings if shipped is not None else None)
    if not isinstance(data, pl.DataFrame):
        data = Path(data)
    target = _out(out, "backtest")
    options = RunOptions(out=target, data=data, since=since, until=until, live_view=False)
    return _result(target, run(settings, options, log=lambda _: None))


def run_synthetic(
    *,
    days: int = 7,
    seed: int = 7,
    market: str = synthetic.DEFAULT_MARKET,
    config: Settings | str | Path | None = None,
    models: str | Path | None = None,
    out: str | Path | None = None,
) -> BacktestResult:
    """`python -m kstrade run` from Python: `days` of SYNTHETIC candles for the config's symbols
    from the seeded generator of `market` (`edge`: a planted, documented edge; `control`: none),
    replayed like `backtest`."""
    from kstrade.app import RunOptions, run

    settings = _settings(config, models)
    target = _out(out, "run")
    options = RunOptions(out=target, days=days, seed=seed, market=market, live_view=False)
    return _result(target, run(settings, options, log=lambda _: None))
