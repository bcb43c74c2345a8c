"""Whole-array indicators with TA-Lib's signatures and output shape (NaN before the first
output bar). Each runs the same Rust incremental code as the streaming classes, over the whole
array, with the GIL released: streaming and batch cannot disagree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

import kstrade._native as _native

Array = npt.NDArray[np.float64]


def _f64(x: npt.ArrayLike) -> Array:
    return np.ascontiguousarray(x, dtype=np.float64)


def _out(n: int, k: int = 1) -> list[Array]:
    return [np.empty(n, dtype=np.float64) for _ in range(k)]


def _single(kind: str, real: npt.ArrayLike, timeperiod: int) -> Array:
    x = _f64(real)
    (out,) = _out(len(x))
    _native.batch_single(kind, x, out, timeperiod)
    return out


def SMA(real: npt.ArrayLike, timeperiod: int = 30) -> Array:
    return _single("SMA", real, timeperiod)


def EMA(real: npt.ArrayLike, timeperiod: int = 30) -> Array:
    return _single("EMA", real, timeperiod)


def RSI(real: npt.ArrayLike, timeperiod: int = 14) -> Array:
    return _single("RSI", real, timeperiod)


def ROCP(real: npt.ArrayLike, timeperiod: int = 10) -> Array:
    return _single("ROCP", real, timeperiod)


def VOLUME_ZSCORE(volume: npt.ArrayLike, timeperiod: int = 20) -> Array:
    return _single("VolumeZScore", volume, timeperiod)


def STDDEV(real: npt.ArrayLike, timeperiod: int = 5, nbdev: float = 1.0) -> Array:
    x = _f64(real)
    (out,) = _out(len(x))
    _native.batch_stddev(x, out, timeperiod, nbdev)
    return out


def LOG_RETURN(real: npt.ArrayLike) -> Array:
    """ln(x / x[1]); NaN at bar 0."""
    x = _f64(real)
    (out,) = _out(len(x))
    _native.batch_log_return(x, out)
    return out


def MACD(
    real: npt.ArrayLike, fastperiod: int = 12, slowperiod: int = 26, signalperiod: int = 9
) -> tuple[Array, Array, Array]:
    x = _f64(real)
    macd, signal, hist = _out(len(x), 3)
    _native.batch_macd(x, macd, signal, hist, fastperiod, slowperiod, signalperiod)
    return macd, signal, hist


def BBANDS(
    real: npt.ArrayLike,
    timeperiod: int = 5,
    nbdevup: float = 2.0,
    nbdevdn: float = 2.0,
    matype: int = 0,
) -> tuple[Array, Array, Array]:
    if matype != 0:
        _native.BBANDS(timeperiod, nbdevup, nbdevdn, matype)  # raises MarketError
    x = _f64(real)
    upper, middle, lower = _out(len(x), 3)
    _native.batch_bbands(x, upper, middle, lower, timeperiod, nbdevup, nbdevdn)
    return upper, middle, lower


def ATR(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, timeperiod: int = 14) -> Array:
    h, lo, c = _f64(high), _f64(low), _f64(close)
    (out,) = _out(len(c))
    _native.batch_atr(h, lo, c, out, timeperiod)
    return out


def STOCH(
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    fastk_period: int = 5,
    slowk_period: int = 3,
    slowk_matype: int = 0,
    slowd_period: int = 3,
    slowd_matype: int = 0,
) -> tuple[Array, Array]:
    if slowk_matype != 0 or slowd_matype != 0:
        _native.STOCH(fastk_period, slowk_period, slowk_matype, slowd_period, slowd_matype)
    h, lo, c = _f64(high), _f64(low), _f64(close)
    slowk, slowd = _out(len(c), 2)
    _native.batch_stoch(h, lo, c, slowk, slowd, fastk_period, slowk_period, slowd_period)
    return slowk, slowd


def _directional(
    high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, timeperiod: int
) -> tuple[Array, Array, Array]:
    h, lo, c = _f64(high), _f64(low), _f64(close)
    plus_di, minus_di, adx = _out(len(c), 3)
    _native.batch_directional(h, lo, c, plus_di, minus_di, adx, timeperiod)
    return plus_di, minus_di, adx


def ADX(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, timeperiod: int = 14) -> Array:
    return _directional(high, low, close, timeperiod)[2]


def PLUS_DI(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, timeperiod: int = 14) -> Array:
    return _directional(high, low, close, timeperiod)[0]


def MINUS_DI(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, timeperiod: int = 14) -> Array:
    return _directional(high, low, close, timeperiod)[1]


def OBV(real: npt.ArrayLike, volume: npt.ArrayLike) -> Array:
    c, v = _f64(real), _f64(volume)
    (out,) = _out(len(c))
    _native.batch_obv(c, v, out)
    return out


def VWAP(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, volume: npt.ArrayLike) -> Array:
    h, lo, c, v = _f64(high), _f64(low), _f64(close), _f64(volume)
    (out,) = _out(len(c))
    _native.batch_vwap(h, lo, c, v, out)
    return out


def SESSION_VWAP(
    session: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
) -> Array:
    """VWAP restarted whenever `session` (an integer key, e.g. the UTC day) changes."""
    s = np.ascontiguousarray(session, dtype=np.int64)
    h, lo, c, v = _f64(high), _f64(low), _f64(close), _f64(volume)
    (out,) = _out(len(c))
    _native.batch_session_vwap(s, h, lo, c, v, out)
    return out


__all__ = [
    "ADX",
    "ATR",
    "BBANDS",
    "EMA",
    "LOG_RETURN",
    "MACD",
    "MINUS_DI",
    "OBV",
    "PLUS_DI",
    "ROCP",
    "RSI",
    "SESSION_VWAP",
    "SMA",
    "STDDEV",
    "STOCH",
    "VOLUME_ZSCORE",
    "VWAP",
]
