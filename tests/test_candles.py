"""Candle validation and the CandleAggregator: 1m in, closed UTC-aligned 5m/15m/1h out.

The oracle for aggregation is a plain group-by of the accepted 1m candles on
floor(open_time / timeframe): open = first open, high = max, low = min, close = last close,
volume = sum (added in time order, as the engine does, so equality is exact).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstrade.data import eurusd_1h
from kstrade.features import Candle, CandleAggregator
from kstrade.indicators import MarketError

MINUTE = 60_000
FRAMES = {"5m": 5, "15m": 15, "1h": 60}

# Derandomized and bounded for CI; KSTRADE_SOAK_EXAMPLES=N for a long random run.
SOAK = int(os.environ.get("KSTRADE_SOAK_EXAMPLES", "0"))
PROPERTY = settings(
    max_examples=SOAK or 100,
    deadline=None,
    derandomize=not SOAK,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Bar:
    interval: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    minutes: int


@st.composite
def minute_candles(draw: st.DrawFn) -> list[Candle]:
    """Sorted distinct minutes with gaps (some of several hours), valid OHLCV, 2^k scales."""
    n = draw(st.integers(1, 400))
    start_minute = draw(st.integers(0, 60 * 24 * 3)) + 28_000_000  # around 2023
    gaps = draw(
        st.lists(st.one_of(st.just(1), st.just(1), st.integers(1, 7), st.integers(1, 200)), min_size=n, max_size=n)
    )
    minutes = start_minute + np.cumsum(gaps)
    scale = 2.0 ** draw(st.integers(-20, 20))
    candles = []
    price = float(draw(st.integers(100, 10_000)))
    for m in minutes:
        o = price
        c = max(1.0, o + draw(st.integers(-10, 10)))
        h = max(o, c) + draw(st.integers(0, 5))
        lo = max(0.5, min(o, c) - draw(st.integers(0, 5)))
        v = float(draw(st.integers(0, 1000)))
        candles.append(Candle(int(m) * MINUTE, o * scale, h * scale, lo * scale, c * scale, v))
        price = c
    return candles


def aggregate(candles: list[Candle]) -> tuple[list[tuple[int, Bar]], list[int]]:
    """Push everything; returns (index of the 1m candle that closed it, bar) and missing counts."""
    agg = CandleAggregator()
    closed: list[tuple[int, Bar]] = []
    missing: list[int] = []
    for i, candle in enumerate(candles):
        result = agg.push(candle)
        assert result is not None
        gap, bars = result
        missing.append(gap)
        for b in bars:
            c = b.candle
            assert c.interval == b.interval
            closed.append((i, Bar(b.interval, c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, b.minutes)))
            assert b.expected == FRAMES[b.interval]
            assert b.complete == (b.minutes == b.expected)
    return closed, missing


def oracle(candles: list[Candle], interval: str) -> list[Bar]:
    width = FRAMES[interval] * MINUTE
    groups: dict[int, list[Candle]] = {}
    for c in candles:
        groups.setdefault(c.open_time_ms // width * width, []).append(c)
    bars = []
    for start, members in sorted(groups.items()):
        volume = 0.0
        for m in members:
            volume += m.volume  # in time order, like the engine
        bars.append(
            Bar(
                interval,
                start,
                members[0].open,
                max(m.high for m in members),
                min(m.low for m in members),
                members[-1].close,
                volume,
                len(members),
            )
        )
    return bars


def check_aggregation(candles: list[Candle]) -> None:
    closed, missing = aggregate(candles)
    last_minute = candles[-1].open_time_ms
    for interval, size in FRAMES.items():
        width = size * MINUTE
        got = [bar for _, bar in closed if bar.interval == interval]
        expected = oracle(candles, interval)
        # The newest bucket is still open unless its last minute has arrived.
        if expected and last_minute + MINUTE != expected[-1].open_time_ms + width:
            expected = expected[:-1]
        assert got == expected, interval
    for i, bar in closed:
        # Never emitted before the minute that completes it (no look-ahead), and emitted at
        # the latest with the first candle after the bar.
        end = bar.open_time_ms + FRAMES[bar.interval] * MINUTE
        assert candles[i].open_time_ms + MINUTE >= end
        assert i == 0 or candles[i - 1].open_time_ms < end
    expected_missing = [0] + [(b.open_time_ms - a.open_time_ms) // MINUTE - 1 for a, b in itertools.pairwise(candles)]
    assert missing == expected_missing


@PROPERTY
@given(minute_candles())
def test_closed_bars_equal_a_group_by_of_the_minutes(candles: list[Candle]) -> None:
    check_aggregation(candles)


def test_aggregation_on_real_eurusd_bars_laid_on_minutes() -> None:
    """EURUSD hourly bars laid on consecutive minutes (an hour gap becomes a minute gap), so
    the weekend gaps become missing minutes inside and across bars."""
    df = eurusd_1h()
    hours = (df["open_time_ms"].to_numpy() - df["open_time_ms"][0]) // 3_600_000
    candles = [
        Candle(int(h) * MINUTE, o, hi, lo, c, v)
        for h, o, hi, lo, c, v in zip(
            hours, *(df[k].to_numpy() for k in ("open", "high", "low", "close", "volume")), strict=True
        )
    ]
    check_aggregation(candles)


def test_five_minute_bar_closes_on_its_last_minute_and_hour_on_minute_59() -> None:
    agg = CandleAggregator()
    t0 = 1_700_000_400_000  # 2023-11-14 22:20 UTC, a 5m boundary
    assert t0 % (5 * MINUTE) == 0
    outputs = [agg.push(Candle(t0 + i * MINUTE, 10.0, 11.0, 9.0, 10.0, 1.0)) for i in range(40)]
    closes = {i: [b.interval for b in out[1]] for i, out in enumerate(outputs) if out and out[1]}
    assert closes[4] == ["5m"]
    assert closes[9] == ["5m", "15m"]  # 22:29 ends 22:25-22:30 and 22:15-22:30
    assert closes[39] == ["5m", "15m", "1h"]  # 22:59


def test_duplicates_are_ignored_and_conflicts_and_late_candles_are_reported() -> None:
    agg = CandleAggregator()
    first = Candle(0, 10.0, 11.0, 9.0, 10.5, 1.0)
    second = Candle(MINUTE, 10.5, 12.0, 10.0, 11.0, 2.0)
    assert agg.push(first) == (0, [])
    assert agg.push(second) == (0, [])
    assert agg.push(second) is None  # exact repeat of the newest minute
    assert agg.push(first) is None  # repeat of a minute of the current hour
    with pytest.raises(MarketError) as conflict:
        agg.push(Candle(MINUTE, 10.5, 12.0, 10.0, 11.5, 2.0))
    assert conflict.value.code == "CONFLICTING_DUPLICATE"
    # Minutes 2-4 never come; minute 7 opens the next 5m bar and closes 0-5 incomplete.
    gap, bars = agg.push(Candle(7 * MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0))
    assert gap == 5
    assert [(b.interval, b.minutes, b.complete) for b in bars] == [("5m", 2, False)]
    assert bars[0].candle.volume == 3.0 and bars[0].candle.close == 11.0
    with pytest.raises(MarketError) as late:
        agg.push(Candle(3 * MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0))
    assert late.value.code == "LATE_CANDLE"
    assert "5m@0" in str(late.value)
    # The rejected candles changed nothing: the open 5m bar holds minute 7 only.
    for m in (8, 9):
        result = agg.push(Candle(m * MINUTE, 11.0, 11.0, 11.0, 11.0, 1.0))
    assert result is not None
    assert [(b.interval, b.minutes, b.candle.volume) for b in result[1]] == [("5m", 3, 2.0)]


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("fields", "interval", "code"),
    [
        ((0, 10.0, 9.0, 8.0, 9.5, 1.0), "1m", "HIGH_BELOW_BODY"),
        ((0, 10.0, 11.0, 9.8, 9.5, 1.0), "1m", "LOW_ABOVE_BODY"),
        ((0, 10.0, 11.0, 9.0, 9.5, -1.0), "1m", "NEGATIVE_VOLUME"),
        ((0, NAN, 11.0, 9.0, 9.5, 1.0), "1m", "NON_FINITE"),
        ((0, 10.0, INF, 9.0, 9.5, 1.0), "1m", "NON_FINITE"),
        ((0, 10.0, 11.0, 9.0, 9.5, NAN), "1m", "NON_FINITE"),
        ((0, 10.0, 11.0, -INF, 9.5, 1.0), "1m", "NON_FINITE"),
        ((0, 10.0, 11.0, 0.0, 9.5, 1.0), "1m", "NON_POSITIVE_PRICE"),
        ((30_000, 10.0, 11.0, 9.0, 9.5, 1.0), "1m", "MISALIGNED_TIME"),
        ((MINUTE, 10.0, 11.0, 9.0, 9.5, 1.0), "5m", "MISALIGNED_TIME"),
        ((0, 10.0, 11.0, 9.0, 9.5, 1.0), "2m", "UNKNOWN_INTERVAL"),
        ((0, 10.0, 11.0, 9.0, 9.5, 1.0), "", "UNKNOWN_INTERVAL"),
        ((2**62, 10.0, 11.0, 9.0, 9.5, 1.0), "1m", "TIME_OUT_OF_RANGE"),
    ],
)
def test_invalid_candles_are_rejected_with_a_stable_code(fields: tuple[float, ...], interval: str, code: str) -> None:
    with pytest.raises(MarketError) as info:
        Candle(*fields, interval=interval)  # type: ignore[arg-type]
    assert info.value.code == code
    assert str(info.value)  # a human-readable reason


def test_aggregator_takes_only_1m_candles() -> None:
    with pytest.raises(MarketError) as info:
        CandleAggregator().push(Candle(0, 10.0, 11.0, 9.0, 9.5, 1.0, interval="5m"))
    assert info.value.code == "WRONG_INTERVAL"


@settings(max_examples=SOAK or 200, deadline=None, derandomize=not SOAK, database=None)
@given(
    st.tuples(
        st.integers(-(2**63), 2**63 - 1),
        *(st.floats(allow_nan=True, allow_infinity=True) for _ in range(5)),
    ),
    st.sampled_from(["1m", "5m", "15m", "1h", "1d", "x"]),
)
def test_any_input_is_a_candle_or_a_market_error_never_a_panic(
    fields: tuple[int, float, float, float, float, float], interval: str
) -> None:
    try:
        candle = Candle(*fields, interval=interval)
    except MarketError as e:
        assert e.code in {
            "NON_FINITE",
            "NON_POSITIVE_PRICE",
            "HIGH_BELOW_BODY",
            "LOW_ABOVE_BODY",
            "NEGATIVE_VOLUME",
            "MISALIGNED_TIME",
            "UNKNOWN_INTERVAL",
            "TIME_OUT_OF_RANGE",
        }
        return
    assert candle.high >= max(candle.open, candle.close) and candle.low <= min(candle.open, candle.close)
    if interval == "1m":
        agg = CandleAggregator()
        assert agg.push(candle) == (0, [])
