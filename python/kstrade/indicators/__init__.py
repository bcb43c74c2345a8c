"""Incremental technical indicators that equal TA-Lib bar for bar, compiled in Rust.

One class per indicator, named after TA-Lib's function and taking TA-Lib's parameter names.
`update(...)` takes what TA-Lib's function takes for one bar and returns the value (a tuple
where TA-Lib returns several), or None until the bar where TA-Lib gives its first value:

    from kstrade.indicators import RSI, MACD
    rsi, macd = RSI(timeperiod=14), MACD(fastperiod=12, slowperiod=26, signalperiod=9)
    for close in closes:
        value = rsi.update(close)          # None for the first 14 bars
        lines = macd.update(close)         # (macd, macdsignal, macdhist) from bar 33

Whole arrays: `kstrade.indicators.batch` has functions with TA-Lib's signatures
(`batch.RSI(close, timeperiod=14)`), NaN before the first output bar, exactly like TA-Lib.

Besides TA-Lib's set: `STDDEV` and `ROCP` (also TA-Lib functions), `SessionVWAP` (VWAP that
restarts when the session key changes) and `VolumeZScore` ((V - SMA) / STDDEV of volume).
"""

from kstrade._native import (
    ADX,
    ATR,
    BBANDS,
    EMA,
    MACD,
    MINUS_DI,
    OBV,
    PLUS_DI,
    ROCP,
    RSI,
    SMA,
    STDDEV,
    STOCH,
    VWAP,
    MarketError,
    SessionVWAP,
    VolumeZScore,
)
from kstrade.indicators import batch

__all__ = [
    "ADX",
    "ATR",
    "BBANDS",
    "EMA",
    "MACD",
    "MINUS_DI",
    "OBV",
    "PLUS_DI",
    "ROCP",
    "RSI",
    "SMA",
    "STDDEV",
    "STOCH",
    "VWAP",
    "MarketError",
    "SessionVWAP",
    "VolumeZScore",
    "batch",
]
