"""FeatureEngine: names and version, warm-up flags, TA-Lib values per timeframe from closed bars
only (no look-ahead), streaming = batch (polars), snapshot/restore = an uninterrupted run.

Minute data here is synthetic (a seeded random walk with flat runs and gaps), labelled as
such; the real-data checks use EURUSD hourly bars laid on consecutive minutes.
"""

from __future__ import annotations

import math
import os

import numpy as np
import polars as pl
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstrade.data import eurusd_1h
from kstrade.features import FEATURE_COUNT, FEATURE_NAMES, FEATURE_VERSION, Candle, FeatureEngine
from kstrade.indicators import MarketError

# Derandomized and bounded for CI; KSTRADE_SOAK_EXAMPLES=N for a long random run.
SOAK = int(os.environ.get("KSTRADE_SOAK_EXAMPLES", "0"))
MINUTE = 60_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC (a Wednesday)
FRAMES = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}


def synthetic_minutes(n: int, seed: int, gaps: bool = True) -> pl.DataFrame:
    """SYNTHETIC 1m candles: a seeded geometric random walk with flat runs and missing minutes."""
    rng = np.random.default_rng(seed)
    step = np.ones(n, dtype=np.int64)
    if gaps:
        step[rng.random(n) < 0.02] = rng.integers(2, 30, size=int((rng.random(n) < 0.02).sum()) or 1)[0]
    minutes = np.cumsum(step) - step[0]
    ret = rng.normal(0, 0.001, n)
    ret[(np.arange(n) // 50) % 7 == 3] = 0.0  # flat runs
    close = 30_000 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.0005, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.0005, n)))
    volume = rng.gamma(2.0, 5.0, n)
    return pl.DataFrame(
        {
            "open_time_ms": T0 + minutes * MINUTE,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def candles_of(df: pl.DataFrame) -> list[Candle]:
    return [Candle(*row) for row in df.select("open_time_ms", "open", "high", "low", "close", "volume").iter_rows()]


def stream(engine: FeatureEngine, candles: list[Candle]) -> np.ndarray:
    rows = []
    for c in candles:
        v = engine.update(c)
        assert v is not None
        assert len(v) == FEATURE_COUNT
        rows.append(v.values)
    return np.array(rows, dtype=np.float64).reshape(len(rows), FEATURE_COUNT)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality, NaN included."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def test_names_are_stable_unique_and_versioned() -> None:
    assert FEATURE_VERSION == "kstrade.features.v1"
    assert len(FEATURE_NAMES) == FEATURE_COUNT >= 50
    assert len(set(FEATURE_NAMES)) == FEATURE_COUNT
    assert FEATURE_NAMES[:3] == ("1m_log_return", "1m_close_sma20", "1m_macd")
    for tf in FRAMES:
        assert f"{tf}_rsi14" in FEATURE_NAMES and f"ready_{tf}" in FEATURE_NAMES
    for name in (
        "mtf_alignment",
        "vol_regime_low",
        "vol_regime_medium",
        "vol_regime_high",
        "hour_sin",
        "dow_cos",
    ):
        assert name in FEATURE_NAMES
    assert FeatureEngine().names == FEATURE_NAMES and FeatureEngine.version == FEATURE_VERSION


def test_warm_up_is_flagged_never_silent() -> None:
    df = synthetic_minutes(3 * 24 * 60, seed=1, gaps=False)
    engine = FeatureEngine()
    values = stream(engine, candles_of(df))
    ready = values[:, [col(f"ready_{tf}") for tf in FRAMES]]
    for row in range(0, len(values), 97):
        for k, tf in enumerate(FRAMES):
            block = values[row, col(f"{tf}_log_return") : col(f"{tf}_log_return") + 19]
            # ready_{tf} is exactly the share of that timeframe's values that are not NaN.
            assert ready[row, k] == pytest.approx(np.mean(~np.isnan(block)))
    assert np.isnan(values[0]).any() and ready[0, 3] < 1.0
    # The 1h MACD needs 34 closed hours; after 3 days every value is finite.
    last = values[-1]
    assert np.isfinite(last).all()
    assert engine.update(
        Candle(int(df["open_time_ms"][-1]) + MINUTE, 30_000.0, 30_001.0, 29_999.0, 30_000.0, 1.0)
    ).ready


def closed_bars(df: pl.DataFrame, minutes: int) -> pl.DataFrame:
    """Group-by oracle of higher bars, with the 1m row index at which each bar closes."""
    width = minutes * MINUTE
    indexed = df.with_row_index("row").with_columns((pl.col("open_time_ms") // width * width).alias("bucket"))
    bars = (
        indexed.group_by("bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("row").last().alias("last_row"),
            pl.col("open_time_ms").last().alias("last_minute"),
        )
        .sort("bucket")
    )
    # A bar closes on its last minute, or (last minute missing) on the next 1m candle.
    complete = bars["last_minute"] + MINUTE == bars["bucket"] + width
    close_row = pl.Series(np.where(complete.to_numpy(), bars["last_row"].to_numpy(), bars["last_row"].to_numpy() + 1))
    return bars.with_columns(close_row.alias("close_row")).filter(pl.col("close_row") < len(df))


@pytest.mark.parametrize("tf", ["1m", "5m", "15m", "1h"])
def test_each_timeframe_equals_talib_on_its_closed_bars_only(tf: str) -> None:
    df = synthetic_minutes(4 * 24 * 60, seed=7)
    values = FeatureEngine().update_frame(df)
    assert values.height == df.height
    bars = df.with_columns(pl.int_range(pl.len()).alias("close_row")) if tf == "1m" else closed_bars(df, FRAMES[tf])
    h, lo, c, v = (bars[k].to_numpy() for k in ("high", "low", "close", "volume"))
    macd, signal, hist = talib.MACD(c)
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2, 0)
    slowk, slowd = talib.STOCH(h, lo, c)
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        pctb = np.where(width > 0, (c - lower) / width, 0.5)  # flat bands: documented 0.5
    pctb[np.isnan(width)] = np.nan
    expected = {
        "rsi14": talib.RSI(c, 14) / 100,
        "close_sma20": c / talib.SMA(c, 20) - 1,
        "macd": macd / c,
        "macd_signal": signal / c,
        "macd_hist": hist / c,
        "bb_pctb": pctb,
        "bb_width": (upper - lower) / middle,
        "atr14": talib.ATR(h, lo, c, 14) / c,
        "stoch_k": slowk / 100,
        "stoch_d": slowd / 100,
        "adx14": talib.ADX(h, lo, c, 14) / 100,
        "plus_di14": talib.PLUS_DI(h, lo, c, 14) / 100,
        "minus_di14": talib.MINUS_DI(h, lo, c, 14) / 100,
        "obv_ratio": talib.OBV(c, v) / np.cumsum(v),
        "vwap_dev": c / talib.VWAP(h, lo, c, v) - 1,
        "log_return": np.concatenate([[np.nan], np.log(c[1:] / c[:-1])]),
        "realized_vol20": talib.STDDEV(np.concatenate([[np.nan], np.log(c[1:] / c[:-1])])[1:], 20, 1),
    }
    expected["realized_vol20"] = np.concatenate([[np.nan], expected["realized_vol20"]])
    close_rows = bars["close_row"].to_numpy()
    # Row r of the feature frame must carry the last bar closed at or before r: hold each
    # bar's expected value from its close row to the next one. Before the first close: NaN.
    owner = np.searchsorted(close_rows, np.arange(df.height), side="right") - 1
    for name, exp in expected.items():
        ours = values[f"{tf}_{name}"].to_numpy()
        want = np.where(owner >= 0, exp[np.maximum(owner, 0)], np.nan)
        assert np.array_equal(np.isnan(ours), np.isnan(want)), f"{tf}_{name}: warm-up differs"
        ok = ~np.isnan(want)
        scale = 1.0 if name in ("bb_pctb",) else 1e-6
        np.testing.assert_allclose(ours[ok], want[ok], rtol=1e-9, atol=1e-9 * scale, err_msg=f"{tf}_{name}")


def test_future_candles_never_change_past_vectors() -> None:
    df = synthetic_minutes(2000, seed=3)
    base = stream(FeatureEngine(), candles_of(df))
    cut = 1234
    shocked = df.with_columns(
        pl.when(pl.int_range(pl.len()) > cut).then(pl.col(k) * 1.5).otherwise(pl.col(k)).alias(k)
        for k in ("open", "high", "low", "close")
    )
    other = stream(FeatureEngine(), candles_of(shocked))
    assert same(base[: cut + 1], other[: cut + 1])
    assert not same(base[cut + 1 :], other[cut + 1 :])


def test_streaming_equals_batch_and_snapshot_resume_equals_uninterrupted_on_eurusd() -> None:
    df = eurusd_1h()
    hours = (df["open_time_ms"] - df["open_time_ms"][0]) // 3_600_000
    minutes = df.with_columns((T0 + hours * MINUTE).alias("open_time_ms"))
    candles = candles_of(minutes)
    streamed = stream(FeatureEngine(), candles)
    batch = FeatureEngine().update_frame(minutes)
    assert same(streamed, batch.select(FEATURE_NAMES).to_numpy())
    assert batch["ready"].to_list() == [bool(np.isfinite(r).all()) for r in streamed]
    assert batch["ready"][-1]
    # 1m features on these bars are TA-Lib on the hourly series itself.
    c = df["close"].to_numpy()
    rsi = talib.RSI(c, 14) / 100
    ok = ~np.isnan(rsi)
    np.testing.assert_allclose(streamed[ok, col("1m_rsi14")], rsi[ok], rtol=1e-9, atol=1e-12)
    first = FeatureEngine()
    head = stream(first, candles[:4000])
    resumed = FeatureEngine()
    resumed.restore(first.snapshot())
    assert resumed.candles == 4000
    assert same(np.vstack([head, stream(resumed, candles[4000:])]), streamed)


@settings(
    max_examples=SOAK or 12,
    deadline=None,
    derandomize=not SOAK,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.integers(0, 10_000), st.integers(1, 1499))
def test_snapshot_restore_continue_equals_uninterrupted(seed: int, cut: int) -> None:
    df = synthetic_minutes(1500, seed=seed)
    whole = FeatureEngine().update_frame(df).select(FEATURE_NAMES).to_numpy()
    first = FeatureEngine()
    head = first.update_frame(df.head(cut)).select(FEATURE_NAMES).to_numpy()
    snapshot = first.snapshot()
    second = FeatureEngine()
    second.restore(snapshot)
    tail = second.update_frame(df.slice(cut)).select(FEATURE_NAMES).to_numpy()
    assert same(np.vstack([head, tail]), whole)
    # The original keeps going identically too (a snapshot does not disturb the engine).
    assert same(first.update_frame(df.slice(cut)).select(FEATURE_NAMES).to_numpy(), tail)


def test_bad_snapshot_is_rejected() -> None:
    engine = FeatureEngine()
    for bad in (b"", b"not json", b'{"format": 99}'):
        with pytest.raises(MarketError) as info:
            engine.restore(bad)
        assert info.value.code == "BAD_SNAPSHOT"


def test_rejected_candles_leave_the_engine_unchanged() -> None:
    df = synthetic_minutes(600, seed=11, gaps=False)
    candles = candles_of(df)
    clean = stream(FeatureEngine(), candles)
    engine = FeatureEngine()
    rows = []
    for i, c in enumerate(candles):
        if i == 300:
            with pytest.raises(MarketError) as conflict:  # same minute, different close
                engine.update(Candle(candles[299].open_time_ms, c.open, c.high, c.low, c.low, c.volume))
            assert conflict.value.code == "CONFLICTING_DUPLICATE"
            with pytest.raises(MarketError) as late:
                engine.update(candles[10])
            assert late.value.code == "LATE_CANDLE"
            assert engine.update(candles[299]) is None  # duplicate: ignored
        v = engine.update(c)
        assert v is not None
        rows.append(v.values)
    assert same(np.array(rows), clean)
    with pytest.raises(MarketError) as wrong:
        engine.update(Candle(0, 1.0, 1.0, 1.0, 1.0, 1.0, interval="5m"))
    assert wrong.value.code == "WRONG_INTERVAL"
    # The fast path validates the same way and gives the same vectors.
    fast = FeatureEngine()
    fast_rows = [fast.update_ohlcv(*row).values for row in df.iter_rows()]  # type: ignore[union-attr]
    assert same(np.array(fast_rows), clean)
    with pytest.raises(MarketError) as bad:
        fast.update_ohlcv(candles[-1].open_time_ms + MINUTE, 1.0, 0.5, 0.9, 1.0, 1.0)
    assert bad.value.code == "HIGH_BELOW_BODY"


def test_batch_reports_rejected_rows() -> None:
    df = synthetic_minutes(50, seed=5, gaps=False)
    broken = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 20).then(pl.col("low") * 0.0 - 1.0).otherwise(pl.col("low")).alias("low")
    )
    with pytest.raises(MarketError) as info:
        FeatureEngine().update_frame(broken)
    assert info.value.code == "NON_POSITIVE_PRICE"
    engine = FeatureEngine()
    out = engine.update_frame(broken, strict=False)
    assert out.height == 49
    assert [(i, code) for i, code, _ in engine.rejected] == [(20, "NON_POSITIVE_PRICE")]
    datetimes = df.with_columns(pl.from_epoch("open_time_ms", time_unit="ms").alias("open_time")).drop("open_time_ms")
    assert same(
        FeatureEngine().update_frame(datetimes).select(FEATURE_NAMES).to_numpy(),
        FeatureEngine().update_frame(df).select(FEATURE_NAMES).to_numpy(),
    )


def test_clock_regime_and_alignment_features() -> None:
    df = synthetic_minutes(3 * 24 * 60, seed=2, gaps=False)
    out = FeatureEngine().update_frame(df)
    t = df["open_time_ms"].to_numpy()
    minute_of_day = (t % 86_400_000) / 60_000
    np.testing.assert_allclose(out["hour_sin"].to_numpy(), np.sin(2 * math.pi * minute_of_day / 1440), atol=1e-12)
    dow = ((t // 86_400_000) + 3) % 7  # Monday = 0
    assert dow[0] == 2  # 2023-11-15 is a Wednesday
    np.testing.assert_allclose(out["dow_cos"].to_numpy(), np.cos(2 * math.pi * dow / 7), atol=1e-12)
    ready = out.filter(pl.col("ready"))
    regimes = ready.select("vol_regime_low", "vol_regime_medium", "vol_regime_high").to_numpy()
    assert np.all(regimes.sum(axis=1) == 1.0)
    ratio = ready["vol_ratio"].to_numpy()
    assert np.array_equal(regimes[:, 0] == 1.0, ratio < 0.75)
    assert np.array_equal(regimes[:, 2] == 1.0, ratio > 1.5)
    signs = np.sign(ready.select(f"{tf}_close_sma20" for tf in FRAMES).to_numpy())
    np.testing.assert_array_equal(ready["mtf_alignment"].to_numpy(), signs.sum(axis=1) / 4)
    assert out["gap_minutes"].sum() == 0


@st.composite
def messy_minutes(draw: st.DrawFn) -> pl.DataFrame:
    """SYNTHETIC minutes with repeats, corrections, late and invalid candles mixed in."""
    clean = synthetic_minutes(draw(st.integers(50, 700)), seed=draw(st.integers(0, 1000)))
    rows = [list(r) for r in clean.iter_rows()]
    for _ in range(draw(st.integers(0, 12))):
        i = draw(st.integers(1, len(rows) - 1))
        kind = draw(st.sampled_from(["repeat", "correction", "late", "invalid"]))
        row = list(rows[i - 1])
        if kind == "correction":
            row[4] = row[3]  # close moved to the low: same minute, different values
        elif kind == "late":
            row = list(rows[max(0, i - draw(st.integers(2, 40)))])
        elif kind == "invalid":
            row[2] = row[1] * 0.5  # high below the body
        rows.insert(i, row)
    return pl.DataFrame(rows, schema=clean.schema, orient="row")


@settings(max_examples=SOAK or 25, deadline=None, derandomize=not SOAK, database=None)
@given(messy_minutes())
def test_streaming_equals_batch_on_messy_input(df: pl.DataFrame) -> None:
    engine = FeatureEngine()
    rows, outcomes = [], []
    for i, candle_row in enumerate(df.iter_rows()):
        try:
            candle = Candle(*candle_row)
            vector = engine.update(candle)
        except MarketError as e:
            outcomes.append((i, e.code))
            continue
        if vector is not None:
            rows.append(vector.values)
    batch_engine = FeatureEngine()
    out = batch_engine.update_frame(df, strict=False)
    assert [(i, code) for i, code, _ in batch_engine.rejected] == outcomes
    assert same(np.array(rows).reshape(-1, FEATURE_COUNT), out.select(FEATURE_NAMES).to_numpy())
    assert engine.snapshot() == batch_engine.snapshot()
