"""Replay throughput beside the backtesting engines a user would otherwise pick: the same
SYNTHETIC 1m candles (the default `python -m kstrade run` set: 3 symbols, seed 7, from
2026-01-05) through each, one after the other in one pytest session, in candles per second.

- NautilusTrader (`BacktestEngine`): one simulated venue SIM (MARGIN account, NETTING, USD),
  one linear USD-settled `CryptoPerpetual` per symbol, 1-MINUTE-LAST-EXTERNAL bars built by
  `BarDataWrangler` from the candles (stamped at the bar's close), one `Strategy` holding
  Nautilus's own RSI(14, Wilder), MACD(12, 26) with its EMA(9) signal line and EMA(20) per
  symbol, sending a small market order on each RSI cross of 30 (buy) or 70 (sell). Timed:
  `engine.run()` alone (engine, venue, instruments, bars and strategy are built before).
- Backtrader (`Cerebro`, preload and runonce, its defaults; `stdstats=False`, no observers):
  three `PandasData` feeds, one strategy with `bt.indicators` RSI(14), MACD(12, 26, 9) and
  EMA(20) per feed and the same RSI-cross orders. Timed: `cerebro.run()` (which includes
  Backtrader's preload of the feeds into its lines).
- kstrade: `kstrade.app.run` on the Parquet file (features, both ONNX models, signals,
  execution, metrics on the memory bus), its summary's `candles_per_second` (replay start to
  last output; loading the file and building the stages are excluded).

These are not the same amount of work: the anchors run three indicators per symbol and a toy
strategy, kstrade runs its whole pipeline (90 features x 4 timeframes, two neural networks,
calibrated signals, guarded execution, metrics). The row says what a replay costs in each.

KSTRADE_BENCH_REPLAY_DAYS (default 7, the default run's 30,240 candles) shrinks the set, e.g.
to 2 for the CI smoke run. KSTRADE_BENCH_YEAR=1 adds a one-year x 3 symbols backtest
(`python -m kstrade run --days 365`, 1.58M candles) in a subprocess: wall time and peak RSS.

    pip install -e '.[bench]'      # nautilus_trader and backtrader
    python -m pytest bench/bench_replay.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from figures import record
from kstrade.ingest import synthetic
from kstrade.ingest.replay import read_candles

SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
START = datetime(2026, 1, 5, tzinfo=UTC)
SEED = 7
DAYS = int(os.environ.get("KSTRADE_BENCH_REPLAY_DAYS", "7"))
GROUP = f"replay 1m candles, {DAYS}d x 3 symbols (candles/s)"
NOTIONAL = 1_000.0  # USD per market order
INSTALL = "install the bench extra: pip install -e '.[bench]'"

#: Price and size precision of each symbol's instrument (Nautilus), by price level.
PRECISION = {"BTC-USD": (1, 3), "ETH-USD": (2, 3), "SOL-USD": (3, 2)}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus"


def report(contender: str, version: str, candles: int, seconds: float, extra: str = "") -> float:
    rate = candles / seconds
    record(GROUP, contender, rate, "candles/s", True)
    print(f"\n{contender} {version}: {candles:,} candles in {seconds:.2f} s = {rate:,.0f} candles/s{extra} ({load()})")
    return rate


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """The default run's SYNTHETIC candles (the planted-edge market, as `kstrade data synth`
    writes them: kstrade trades on them), once per session: the Parquet file and the frame read
    back from it (open_time_ms, symbol, OHLCV)."""
    path = synthetic.write(SYMBOLS, START, DAYS, SEED, tmp_path_factory.mktemp("replay-data"), synthetic.DEFAULT_MARKET)
    frame = read_candles(path)
    assert frame.height == DAYS * synthetic.MINUTES_PER_DAY * len(SYMBOLS)
    return path, frame


def trade_size(frame: pl.DataFrame, symbol: str) -> float:
    first = frame.filter(pl.col("symbol") == symbol)["close"][0]
    return NOTIONAL / first


def per_symbol_pandas(frame: pl.DataFrame, symbol: str) -> Any:
    """One symbol's candles as a pandas frame indexed by open time (naive UTC)."""
    one = frame.filter(pl.col("symbol") == symbol).sort("open_time_ms")
    pdf = one.select("open", "high", "low", "close", "volume").to_pandas()
    import pandas as pd

    pdf.index = pd.to_datetime(one["open_time_ms"].to_numpy(), unit="ms")
    pdf.index.name = "timestamp"
    return pdf


# -- NautilusTrader -------------------------------------------------------------------------


def build_nautilus(frame: pl.DataFrame) -> tuple[Any, Any]:
    """A BacktestEngine with the venue, instruments, bars and the strategy added; not run."""
    import pandas as pd
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.indicators import (
        ExponentialMovingAverage,
        MovingAverageConvergenceDivergence,
        MovingAverageType,
        RelativeStrengthIndex,
    )
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import Bar, BarType
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
    from nautilus_trader.model.instruments import CryptoPerpetual
    from nautilus_trader.model.objects import Currency, Money, Price, Quantity
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.trading.strategy import Strategy

    venue = Venue("SIM")
    ts = int(START.timestamp() * 1e9)

    def perpetual(symbol: str) -> CryptoPerpetual:
        base = symbol.split("-")[0]
        price_precision, size_precision = PRECISION[symbol]
        return CryptoPerpetual(
            instrument_id=InstrumentId(Symbol(f"{base}USD-PERP"), venue),
            raw_symbol=Symbol(f"{base}USD"),
            base_currency=Currency.from_str(base),
            quote_currency=USD,
            settlement_currency=USD,
            is_inverse=False,
            price_precision=price_precision,
            price_increment=Price(10**-price_precision, price_precision),
            size_precision=size_precision,
            size_increment=Quantity(10**-size_precision, size_precision),
            margin_init=Decimal("0.05"),
            margin_maint=Decimal("0.025"),
            maker_fee=Decimal("0.0002"),
            taker_fee=Decimal("0.0004"),
            ts_event=ts,
            ts_init=ts,
        )

    class RsiCrossConfig(StrategyConfig, frozen=True):
        bar_types: list[str]
        trade_sizes: list[float]

    class RsiCross(Strategy):
        """Per bar type: RSI(14), MACD(12, 26) + EMA(9) signal, EMA(20); market order on RSI crosses."""

        def __init__(self, config: RsiCrossConfig) -> None:
            super().__init__(config)
            self.bars = 0
            self.orders = 0
            self.per: dict[BarType, dict[str, Any]] = {}
            for name, size in zip(config.bar_types, config.trade_sizes, strict=True):
                self.per[BarType.from_str(name)] = {
                    "rsi": RelativeStrengthIndex(14, MovingAverageType.WILDER),
                    "macd": MovingAverageConvergenceDivergence(12, 26),
                    "signal": ExponentialMovingAverage(9),
                    "ema": ExponentialMovingAverage(20),
                    "size": size,
                    "prev": None,
                }

        def on_start(self) -> None:
            for bar_type, s in self.per.items():
                instrument = self.cache.instrument(bar_type.instrument_id)
                s["qty"] = instrument.make_qty(s["size"])
                for key in ("rsi", "macd", "ema"):
                    self.register_indicator_for_bars(bar_type, s[key])
                self.subscribe_bars(bar_type)

        def on_bar(self, bar: Bar) -> None:
            self.bars += 1
            s = self.per[bar.bar_type]
            if s["macd"].initialized:
                s["signal"].update_raw(s["macd"].value)
            rsi = s["rsi"]
            if not (rsi.initialized and s["ema"].initialized):
                return
            prev, now = s["prev"], rsi.value  # Nautilus's RSI is in [0, 1]
            s["prev"] = now
            if prev is None:
                return
            side = None
            if prev < 0.30 <= now:
                side = OrderSide.BUY
            elif prev > 0.70 >= now:
                side = OrderSide.SELL
            if side is not None:
                self.orders += 1
                self.submit_order(self.order_factory.market(bar.bar_type.instrument_id, side, s["qty"]))

    engine = BacktestEngine(
        config=BacktestEngineConfig(trader_id=TraderId("BENCH-001"), logging=LoggingConfig(log_level="ERROR"))
    )
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(10_000_000, USD)],
    )
    bar_types, sizes = [], []
    for symbol in SYMBOLS:
        instrument = perpetual(symbol)
        engine.add_instrument(instrument)
        bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
        pdf = per_symbol_pandas(frame, symbol)
        pdf.index = pdf.index + pd.Timedelta(minutes=1)  # a bar is known at its close
        engine.add_data(BarDataWrangler(bar_type, instrument).process(pdf))
        bar_types.append(str(bar_type))
        sizes.append(trade_size(frame, symbol))
    strategy = RsiCross(RsiCrossConfig(bar_types=bar_types, trade_sizes=sizes))
    engine.add_strategy(strategy)
    return engine, strategy


def test_nautilus_trader_replay(candles: tuple[Path, pl.DataFrame]) -> None:
    try:
        import nautilus_trader
    except ImportError:
        pytest.skip(f"SKIPPED the NautilusTrader row: nautilus_trader is not installed; {INSTALL}")
    _, frame = candles
    started = time.perf_counter()
    engine, strategy = build_nautilus(frame)
    setup = time.perf_counter() - started
    try:
        started = time.perf_counter()
        engine.run()
        seconds = time.perf_counter() - started
        assert strategy.bars == frame.height
        fills = len(engine.cache.orders_closed())
    finally:
        engine.dispose()
    report(
        "NautilusTrader", nautilus_trader.__version__, frame.height, seconds,
        f"; {strategy.orders} orders, {fills} closed; set-up {setup:.1f} s not timed",
    )  # fmt: skip


# -- Backtrader -----------------------------------------------------------------------------


def build_backtrader(frame: pl.DataFrame) -> tuple[Any, Any]:
    import backtrader as bt

    class RsiCross(bt.Strategy):  # type: ignore[misc]
        params = (("sizes", None),)

        def __init__(self) -> None:
            self.ind = []
            for d in self.datas:
                self.ind.append(
                    (
                        bt.indicators.RSI(d.close, period=14),
                        bt.indicators.MACD(d.close, period_me1=12, period_me2=26, period_signal=9),
                        bt.indicators.EMA(d.close, period=20),
                    )
                )
            self.bars = 0
            self.orders = 0

        def next(self) -> None:
            for d, (rsi, _macd, _ema), size in zip(self.datas, self.ind, self.p.sizes, strict=True):
                self.bars += 1
                prev, now = rsi[-1], rsi[0]
                if prev < 30.0 <= now:
                    self.orders += 1
                    self.buy(data=d, size=size)
                elif prev > 70.0 >= now:
                    self.orders += 1
                    self.sell(data=d, size=size)

    cerebro = bt.Cerebro(stdstats=False)  # preload=True, runonce=True: Backtrader's defaults
    cerebro.broker.setcash(10_000_000.0)
    cerebro.broker.setcommission(commission=0.0004)
    for symbol in SYMBOLS:
        cerebro.adddata(bt.feeds.PandasData(dataname=per_symbol_pandas(frame, symbol), openinterest=None), name=symbol)
    cerebro.addstrategy(RsiCross, sizes=[trade_size(frame, s) for s in SYMBOLS])
    return cerebro, bt


def test_backtrader_replay(candles: tuple[Path, pl.DataFrame]) -> None:
    try:
        import backtrader
    except ImportError:
        pytest.skip(f"SKIPPED the Backtrader row: backtrader is not installed; {INSTALL}")
    _, frame = candles
    started = time.perf_counter()
    cerebro, _ = build_backtrader(frame)
    setup = time.perf_counter() - started
    started = time.perf_counter()
    (strategy,) = cerebro.run()
    seconds = time.perf_counter() - started
    # next() runs from the first bar where every indicator has a value (MACD's 33rd minute).
    assert frame.height - 3 * 40 <= strategy.bars <= frame.height
    report(
        "Backtrader", backtrader.__version__, frame.height, seconds,
        f"; {strategy.orders} orders; set-up {setup:.1f} s not timed",
    )  # fmt: skip


# -- kstrade --------------------------------------------------------------------------------


@pytest.mark.timeout(3600)
def test_kstrade_replay(candles: tuple[Path, pl.DataFrame], tmp_path: Path) -> None:
    from kstrade.app import RunOptions, run
    from kstrade.config import load as load_settings

    path, frame = candles
    started = time.perf_counter()
    summary = run(load_settings(), RunOptions(out=tmp_path / "run", data=path, live_view=False), log=lambda _: None)
    call = time.perf_counter() - started
    assert summary["candles"] == frame.height
    rate = float(summary["candles_per_second"])
    record(GROUP, "kstrade", rate, "candles/s", True)
    print(
        f"\nkstrade (whole pipeline): {frame.height:,} candles in {summary['wall_seconds']:.1f} s"
        f" = {rate:,.0f} candles/s; {summary['signals_final']:,} final signals, {summary['orders']:,} orders;"
        f" whole call {call:.1f} s ({load()})"
    )


# -- one year ---------------------------------------------------------------------------------


@pytest.mark.timeout(0)
@pytest.mark.skipif(
    os.environ.get("KSTRADE_BENCH_YEAR") != "1",
    reason="the one-year x 3 symbols backtest (1.58M candles) is long today: set KSTRADE_BENCH_YEAR=1 to run it",
)
def test_kstrade_one_year_backtest(tmp_path: Path) -> None:
    days = int(os.environ.get("KSTRADE_BENCH_YEAR_DAYS", "365"))  # fewer only to try the row out
    out = tmp_path / "year"
    command = [sys.executable, "-m", "kstrade", "run", "--days", str(days), "--out", str(out), "--no-live"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    # wait4: this child's own rusage (RUSAGE_CHILDREN would also count any earlier child of the session).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, output[-4000:]
    peak_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = json.loads((out / "summary.json").read_text())
    group = f"{days}-day x 3 symbols SYNTHETIC backtest ({summary['candles']:,} candles)"
    record(f"{group}: wall", "kstrade", wall, "s", False)
    record(f"{group}: peak RSS", "kstrade", peak_mb, "MB", False)
    record(f"{group}: replay rate", "kstrade", float(summary["candles_per_second"]), "candles/s", True)
    print(
        f"\nkstrade {days}-day run: {summary['candles']:,} candles, wall {wall:,.0f} s"
        f" (replay {summary['wall_seconds']:,.0f} s, {summary['candles_per_second']:,.0f} candles/s),"
        f" peak RSS {peak_mb:,.0f} MB (RUSAGE_CHILDREN max {children_mb:,.0f} MB) ({load()})"
    )
