//! The incremental indicators, one class per TA-Lib function (`update` per bar).

use pyo3::prelude::*;

use kstrade_market::indicators as ind;
use kstrade_market::MarketError as RsMarketError;

use super::err;

macro_rules! single_input {
    ($rs:ident, $py_name:literal, $ty:ty, $doc:literal, ($($arg:ident : $argty:ty = $default:expr),*), $ctor:expr) => {
        #[doc = $doc]
        #[pyclass(module = "kstrade._native", name = $py_name)]
        pub struct $rs {
            inner: $ty,
        }

        #[pymethods]
        impl $rs {
            #[new]
            #[pyo3(signature = ($($arg = $default),*))]
            fn new(py: Python<'_>, $($arg: $argty),*) -> PyResult<Self> {
                Ok(Self { inner: market!(py, $ctor)? })
            }

            fn update(&mut self, real: f64) -> Option<f64> {
                self.inner.update(real)
            }
        }
    };
}

single_input!(PySma, "SMA", ind::Sma, "TA-Lib SMA, one bar per update.", (timeperiod: usize = 30), ind::Sma::new(timeperiod));
single_input!(PyEma, "EMA", ind::Ema, "TA-Lib EMA, one bar per update.", (timeperiod: usize = 30), ind::Ema::new(timeperiod));
single_input!(PyRsi, "RSI", ind::Rsi, "TA-Lib RSI, one bar per update.", (timeperiod: usize = 14), ind::Rsi::new(timeperiod));
single_input!(PyStdDev, "STDDEV", ind::StdDev, "TA-Lib STDDEV, one bar per update.", (timeperiod: usize = 5, nbdev: f64 = 1.0), ind::StdDev::new(timeperiod, nbdev));
single_input!(PyRocp, "ROCP", ind::Rocp, "TA-Lib ROCP, one bar per update.", (timeperiod: usize = 10), ind::Rocp::new(timeperiod));
single_input!(PyVolumeZScore, "VolumeZScore", ind::VolumeZScore, "(V - SMA(V, n)) / STDDEV(V, n), one bar per update.", (timeperiod: usize = 20), ind::VolumeZScore::new(timeperiod));

fn check_matype(py: Python<'_>, name: &str, matype: i32) -> PyResult<()> {
    if matype != 0 {
        return Err(err(
            py,
            RsMarketError::InvalidParameter(format!("{name}={matype}: only 0 (SMA) is supported")),
        ));
    }
    Ok(())
}

/// TA-Lib MACD: `update(real)` returns `(macd, macdsignal, macdhist)` or None.
#[pyclass(module = "kstrade._native", name = "MACD")]
pub struct PyMacd {
    inner: ind::Macd,
}

#[pymethods]
impl PyMacd {
    #[new]
    #[pyo3(signature = (fastperiod=12, slowperiod=26, signalperiod=9))]
    fn new(
        py: Python<'_>,
        fastperiod: usize,
        slowperiod: usize,
        signalperiod: usize,
    ) -> PyResult<Self> {
        Ok(Self {
            inner: market!(py, ind::Macd::new(fastperiod, slowperiod, signalperiod))?,
        })
    }

    fn update(&mut self, real: f64) -> Option<(f64, f64, f64)> {
        self.inner.update(real).map(|m| (m.macd, m.signal, m.hist))
    }
}

/// TA-Lib BBANDS (matype 0): `update(real)` returns `(upper, middle, lower)` or None.
#[pyclass(module = "kstrade._native", name = "BBANDS")]
pub struct PyBbands {
    inner: ind::BollingerBands,
}

#[pymethods]
impl PyBbands {
    #[new]
    #[pyo3(signature = (timeperiod=5, nbdevup=2.0, nbdevdn=2.0, matype=0))]
    fn new(
        py: Python<'_>,
        timeperiod: usize,
        nbdevup: f64,
        nbdevdn: f64,
        matype: i32,
    ) -> PyResult<Self> {
        check_matype(py, "matype", matype)?;
        Ok(Self {
            inner: market!(py, ind::BollingerBands::new(timeperiod, nbdevup, nbdevdn))?,
        })
    }

    fn update(&mut self, real: f64) -> Option<(f64, f64, f64)> {
        self.inner
            .update(real)
            .map(|b| (b.upper, b.middle, b.lower))
    }
}

/// TA-Lib ATR: `update(high, low, close)`.
#[pyclass(module = "kstrade._native", name = "ATR")]
pub struct PyAtr {
    inner: ind::Atr,
}

#[pymethods]
impl PyAtr {
    #[new]
    #[pyo3(signature = (timeperiod=14))]
    fn new(py: Python<'_>, timeperiod: usize) -> PyResult<Self> {
        Ok(Self {
            inner: market!(py, ind::Atr::new(timeperiod))?,
        })
    }

    fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        self.inner.update(high, low, close)
    }
}

/// TA-Lib STOCH (SMA smoothing): `update(high, low, close)` returns `(slowk, slowd)` or None.
#[pyclass(module = "kstrade._native", name = "STOCH")]
pub struct PyStoch {
    inner: ind::Stochastic,
}

#[pymethods]
impl PyStoch {
    #[new]
    #[pyo3(signature = (fastk_period=5, slowk_period=3, slowk_matype=0, slowd_period=3, slowd_matype=0))]
    fn new(
        py: Python<'_>,
        fastk_period: usize,
        slowk_period: usize,
        slowk_matype: i32,
        slowd_period: usize,
        slowd_matype: i32,
    ) -> PyResult<Self> {
        check_matype(py, "slowk_matype", slowk_matype)?;
        check_matype(py, "slowd_matype", slowd_matype)?;
        Ok(Self {
            inner: market!(
                py,
                ind::Stochastic::new(fastk_period, slowk_period, slowd_period)
            )?,
        })
    }

    fn update(&mut self, high: f64, low: f64, close: f64) -> Option<(f64, f64)> {
        self.inner
            .update(high, low, close)
            .map(|s| (s.slowk, s.slowd))
    }
}

macro_rules! directional {
    ($rs:ident, $py_name:literal, $field:ident) => {
        #[doc = concat!("TA-Lib ", $py_name, ": `update(high, low, close)`.")]
        #[pyclass(module = "kstrade._native", name = $py_name)]
        pub struct $rs {
            inner: ind::DirectionalMovement,
        }

        #[pymethods]
        impl $rs {
            #[new]
            #[pyo3(signature = (timeperiod=14))]
            fn new(py: Python<'_>, timeperiod: usize) -> PyResult<Self> {
                Ok(Self {
                    inner: market!(py, ind::DirectionalMovement::new(timeperiod))?,
                })
            }

            fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
                self.inner.update(high, low, close).$field
            }
        }
    };
}

directional!(PyAdx, "ADX", adx);
directional!(PyPlusDi, "PLUS_DI", plus_di);
directional!(PyMinusDi, "MINUS_DI", minus_di);

/// Indicators without parameters (running totals from the first bar): `update` always
/// returns a value.
macro_rules! cumulative {
    ($rs:ident, $py_name:literal, $ty:ty, $doc:literal, ($($arg:ident : $argty:ty),+)) => {
        #[doc = $doc]
        #[pyclass(module = "kstrade._native", name = $py_name)]
        pub struct $rs {
            inner: $ty,
        }

        #[pymethods]
        impl $rs {
            #[new]
            fn new() -> Self {
                Self { inner: <$ty>::new() }
            }

            fn update(&mut self, $($arg: $argty),+) -> f64 {
                self.inner.update($($arg),+)
            }
        }
    };
}

cumulative!(PyObv, "OBV", ind::Obv, "TA-Lib OBV: `update(real, volume)`; a value from the first bar.", (real: f64, volume: f64));
cumulative!(PyVwap, "VWAP", ind::Vwap, "TA-Lib VWAP (cumulative, no reset): `update(high, low, close, volume)`.", (high: f64, low: f64, close: f64, volume: f64));
cumulative!(PySessionVwap, "SessionVWAP", ind::SessionVwap, "VWAP restarted whenever `session` changes: `update(session, high, low, close, volume)`.", (session: i64, high: f64, low: f64, close: f64, volume: f64));

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySma>()?;
    m.add_class::<PyEma>()?;
    m.add_class::<PyRsi>()?;
    m.add_class::<PyStdDev>()?;
    m.add_class::<PyRocp>()?;
    m.add_class::<PyVolumeZScore>()?;
    m.add_class::<PyMacd>()?;
    m.add_class::<PyBbands>()?;
    m.add_class::<PyAtr>()?;
    m.add_class::<PyStoch>()?;
    m.add_class::<PyAdx>()?;
    m.add_class::<PyPlusDi>()?;
    m.add_class::<PyMinusDi>()?;
    m.add_class::<PyObv>()?;
    m.add_class::<PyVwap>()?;
    m.add_class::<PySessionVwap>()
}
