"""Trading performance: win rate, profit factor, Sharpe annualized for the bar, drawdown, tier
calibration; and the collector publishing them from trades.pnl and signals.final."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import numpy as np
import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import METRICS_PERFORMANCE, PNL, signals
from kstrade.config import MetricsSettings
from kstrade.metrics import MetricsCollector
from kstrade.metrics.performance import (
    ClosedTrade,
    PerformanceWindow,
    TierCalibration,
    annualized_sharpe,
    max_drawdown,
    periods_per_year,
)
from kstrade.schemas import Codec, PerformanceMetrics, PnlEvent, Signal
from kstrade.schemas.models import Side, SignalDirection, SignalStage, Tier

from .conftest import drain

T0 = datetime(2026, 3, 2, tzinfo=UTC)
NS = 1_000_000_000


def ns(t: datetime) -> int:
    return int(t.timestamp()) * NS


def test_bars_per_year_follow_the_market_calendar() -> None:
    assert periods_per_year(60, 365, 24) == 525_600  # crypto, 1m bars, every minute of the year
    assert periods_per_year(3600, 365, 24) == 8_760
    assert periods_per_year(60, 260, 24) == 374_400  # forex: closed at weekends


def test_sharpe_counts_idle_bars_and_annualizes_by_the_bar() -> None:
    # a day of 1m bars; three trades close in it, every other bar returns 0
    now = ns(T0 + timedelta(days=1)) - 1
    w = PerformanceWindow(window_seconds=86_400, bar_seconds=60)
    trades = [
        (T0 + timedelta(minutes=10), 100.0),
        (T0 + timedelta(minutes=700), -50.0),
        (T0 + timedelta(hours=20), 80.0),
    ]
    balance = 10_000.0
    for t, pnl in trades:
        balance += pnl
        w.record(ClosedTrade(ns(t), pnl, balance))
    # independent computation: a return per minute on the balance at the start of the minute
    pnl_by_bar = np.zeros(1440)
    for t, pnl in trades:
        pnl_by_bar[int((t - T0).total_seconds() // 60)] += pnl
    start = 10_000.0 + np.concatenate([[0.0], np.cumsum(pnl_by_bar)[:-1]])
    r = pnl_by_bar / start
    want = r.mean() / r.std(ddof=1) * math.sqrt(365 * 1440)
    snap = w.snapshot(now)
    assert snap.sharpe == pytest.approx(want, rel=1e-9)
    # the same trades on hourly bars: a different (and smaller) annualization
    hourly = PerformanceWindow(window_seconds=86_400, bar_seconds=3600)
    balance = 10_000.0
    for t, pnl in trades:
        balance += pnl
        hourly.record(ClosedTrade(ns(t), pnl, balance))
    assert 0 < hourly.snapshot(now).sharpe < snap.sharpe
    assert annualized_sharpe([0.0, 0.0, 0.0], 525_600) == 0.0  # no variation: defined as 0, never inf


def test_win_rate_profit_factor_drawdown_and_expiry() -> None:
    w = PerformanceWindow(window_seconds=3600, bar_seconds=60)
    balance = 10_000.0
    for minute, pnl in [(1, 100.0), (2, -50.0), (3, 30.0), (4, -20.0)]:
        balance += pnl
        w.record(ClosedTrade(ns(T0 + timedelta(minutes=minute)), pnl, balance))
    snap = w.snapshot(ns(T0 + timedelta(minutes=5)))
    assert (snap.trades, snap.win_rate, snap.realized_pnl, snap.balance) == (4, 0.5, 60.0, 10_060.0)
    assert snap.profit_factor == pytest.approx(130 / 70)
    assert snap.max_drawdown == pytest.approx(50 / 10_100)  # 10 100 -> 10 050
    # an hour later the first two trades have left the window
    later = w.snapshot(ns(T0 + timedelta(minutes=62, seconds=30)))
    assert (later.trades, later.realized_pnl) == (2, 10.0)
    assert later.max_drawdown == pytest.approx(20 / 10_080)
    assert max_drawdown([100.0, 120.0, 90.0, 130.0, 117.0]) == pytest.approx(0.25)


def test_tier_hit_rate_is_compared_with_its_confidence() -> None:
    cal = TierCalibration(window_trades=10)
    for i in range(20):  # tier A keeps its promise (80 %), tier C does not (promises 60 %, hits 30 %)
        a, c = uuid4(), uuid4()
        cal.signal(a, "A", 0.8)
        cal.signal(c, "C", 0.6)
        cal.outcome(a, 1.0 if i % 5 else -1.0)
        cal.outcome(c, 1.0 if i % 10 < 3 else -1.0)
    cal.outcome(uuid4(), 5.0)  # unknown signal: ignored
    tiers = cal.tiers()
    assert (tiers["A"].trades, tiers["A"].hit_rate, tiers["A"].gap) == (10, 0.8, pytest.approx(0.0))
    assert tiers["C"].hit_rate == 0.3 and tiers["C"].gap == pytest.approx(-0.3)


def _signal(signal_id: UUID, tier: Tier, confidence: float) -> Signal:
    return Signal(timestamp=T0, symbol="BTC-USD", signal_id=signal_id, stage=SignalStage.FINAL,
                  direction=SignalDirection.LONG, confidence=confidence, tier=tier, entry_price=100.0,
                  stop_loss=99.0, take_profit=102.0, ttl_seconds=60)  # fmt: skip


def _pnl(signal_id: UUID, minute: int, pnl: float, balance: float) -> PnlEvent:
    return PnlEvent(timestamp=T0 + timedelta(minutes=minute), signal_id=signal_id, order_id=f"o{minute}",
                    symbol="BTC-USD", side=Side.BUY, quantity=1.0, entry_price=100.0, exit_price=100.0 + pnl,
                    realized_pnl=pnl, commission=0.1, currency="USD", balance=balance)  # fmt: skip


def test_collector_publishes_performance_from_trades_and_signals() -> None:
    bus = Bus.memory()
    bus.admin().create_topics([(t, 1, 1, {}) for t in (signals("final"), PNL)])
    producer = bus.producer()
    sig, pnl = Codec(Signal), Codec(PnlEvent)
    balance = 10_000.0
    for minute, outcome in enumerate([120.0, -40.0, 60.0, -40.0]):
        signal_id = uuid4()
        origin = ns(T0) + minute * 60 * NS
        producer.send(
            signals("final"), sig.encode(_signal(signal_id, Tier.B, 0.7)), headers=sig.headers(origin, "signals")
        )
        balance += outcome
        event = _pnl(signal_id, minute + 1, outcome, balance)
        producer.send(PNL, pnl.encode(event), headers=pnl.headers(origin, "execution"))
    producer.flush()
    consumer = bus.consumer("metrics")
    consumer.subscribe_pattern(r"^(signals|trades)\..*")
    collector = MetricsCollector(MetricsSettings(emit_interval_s=10, performance_windows_s=[3600]))
    for r in drain(consumer, 8):
        assert list(collector.handle(r)) == []
    now = ns(T0 + timedelta(minutes=10))
    assert list(collector.on_time(now)) == []  # the first call starts the window
    outs = list(collector.on_time(now + 10 * NS))
    [metrics] = [Codec(PerformanceMetrics).decode(o.value) for o in outs if o.topic == METRICS_PERFORMANCE]
    assert isinstance(metrics, PerformanceMetrics)
    assert (metrics.trades, metrics.win_rate, metrics.realized_pnl) == (4, 0.5, 100.0)
    assert metrics.max_drawdown == pytest.approx(40 / 10_120)
    assert metrics.sharpe > 0
    scrape = collector.exporter.registry.get_sample_value
    assert scrape("kstrade_profit_factor", {"window": "3600"}) == pytest.approx(180 / 80)
    assert scrape("kstrade_tier_hit_rate", {"tier": "B"}) == 0.5
    assert scrape("kstrade_tier_confidence", {"tier": "B"}) == pytest.approx(0.7)
