//! Bindings for `kstrade-market`: candles, the TA-Lib-named incremental indicators, batch
//! functions over buffers (numpy arrays) and the `FeatureEngine`. Only type conversion here;
//! every batch call runs with the GIL released. Errors are `MarketError` (a `ValueError`) with
//! a stable `.code`.

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use kstrade_market::features::{feature_names_for, FEATURE_COUNT, FEATURE_VERSION};
use kstrade_market::indicators::{self as ind, batch};
use kstrade_market::{
    Candle as RsCandle, CandleAggregator as RsAggregator, ClosedBar, FeatureEngine as RsEngine,
    MarketError as RsMarketError, PushOutcome, Timeframe,
};

create_exception!(
    kstrade._native,
    MarketError,
    PyValueError,
    "A candle or indicator input was rejected; `.code` is a stable error code."
);

fn err(py: Python<'_>, e: RsMarketError) -> PyErr {
    let pyerr = MarketError::new_err(e.to_string());
    // Attach the stable code; if that fails the message still says what went wrong.
    let _ = pyerr.value(py).setattr("code", e.code());
    pyerr
}

macro_rules! market {
    ($py:expr, $e:expr) => {
        $e.map_err(|e| err($py, e))
    };
}

// ----------------------------------------------------------------------------- candles

/// A validated OHLCV candle; `open_time_ms` is the UTC epoch time its bar opens.
#[pyclass(module = "kstrade._native", name = "Candle", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyCandle {
    inner: RsCandle,
    interval: Timeframe,
}

#[pymethods]
impl PyCandle {
    #[new]
    #[pyo3(signature = (open_time_ms, open, high, low, close, volume, interval="1m"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        open_time_ms: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
        interval: &str,
    ) -> PyResult<Self> {
        let tf = market!(py, Timeframe::parse(interval))?;
        let inner = market!(
            py,
            RsCandle::new(tf, open_time_ms, open, high, low, close, volume)
        )?;
        Ok(Self {
            inner,
            interval: tf,
        })
    }

    #[getter]
    fn open_time_ms(&self) -> i64 {
        self.inner.open_time_ms
    }
    #[getter]
    fn open(&self) -> f64 {
        self.inner.open
    }
    #[getter]
    fn high(&self) -> f64 {
        self.inner.high
    }
    #[getter]
    fn low(&self) -> f64 {
        self.inner.low
    }
    #[getter]
    fn close(&self) -> f64 {
        self.inner.close
    }
    #[getter]
    fn volume(&self) -> f64 {
        self.inner.volume
    }
    #[getter]
    fn interval(&self) -> &'static str {
        self.interval.as_str()
    }

    fn __repr__(&self) -> String {
        let c = &self.inner;
        format!(
            "Candle(open_time_ms={}, open={}, high={}, low={}, close={}, volume={}, interval='{}')",
            c.open_time_ms,
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume,
            self.interval.as_str()
        )
    }
}

/// A closed higher-timeframe bar and how many base candles (1m by default) it was built from.
#[pyclass(module = "kstrade._native", name = "ClosedBar", frozen)]
pub struct PyClosedBar {
    #[pyo3(get)]
    candle: Py<PyCandle>,
    #[pyo3(get)]
    interval: &'static str,
    #[pyo3(get)]
    minutes: u32,
    #[pyo3(get)]
    expected: u32,
    #[pyo3(get)]
    complete: bool,
}

impl PyClosedBar {
    fn from_rs(py: Python<'_>, bar: &ClosedBar) -> PyResult<Self> {
        Ok(Self {
            candle: Py::new(
                py,
                PyCandle {
                    inner: bar.candle,
                    interval: bar.timeframe,
                },
            )?,
            interval: bar.timeframe.as_str(),
            minutes: bar.minutes,
            expected: bar.expected(),
            complete: bar.complete(),
        })
    }
}

#[pymethods]
impl PyClosedBar {
    fn __repr__(&self) -> String {
        format!(
            "ClosedBar(interval='{}', minutes={}/{})",
            self.interval, self.minutes, self.expected
        )
    }
}

/// The candle, if it is of the `base` interval.
fn of_base(py: Python<'_>, candle: &PyCandle, base: Timeframe) -> PyResult<RsCandle> {
    if candle.interval != base {
        return Err(err(
            py,
            RsMarketError::WrongInterval {
                expected: base.as_str(),
                got: candle.interval.as_str(),
            },
        ));
    }
    Ok(candle.inner)
}

/// 1m candles in, closed 5m/15m/1h bars out (or 1h in, 4h/8h/1d out: `base_interval`); see the
/// Rust docs for the policies.
#[pyclass(module = "kstrade._native", name = "CandleAggregator")]
pub struct PyCandleAggregator {
    inner: RsAggregator,
}

#[pymethods]
impl PyCandleAggregator {
    #[new]
    #[pyo3(signature = (base_interval="1m"))]
    fn new(py: Python<'_>, base_interval: &str) -> PyResult<Self> {
        let base = market!(py, Timeframe::parse(base_interval))?;
        Ok(Self {
            inner: market!(py, RsAggregator::with_base(base))?,
        })
    }

    /// Returns None for an ignored duplicate, else `(missing_before, [ClosedBar, ...])`.
    fn push(
        &mut self,
        py: Python<'_>,
        candle: &PyCandle,
    ) -> PyResult<Option<(u32, Vec<PyClosedBar>)>> {
        let base = self.inner.ladder()[0];
        match market!(py, self.inner.push(of_base(py, candle, base)?))? {
            PushOutcome::Duplicate => Ok(None),
            PushOutcome::Accepted(a) => {
                let bars = a
                    .closed
                    .iter()
                    .map(|b| PyClosedBar::from_rs(py, b))
                    .collect::<PyResult<_>>()?;
                Ok(Some((a.missing_before, bars)))
            }
        }
    }
}

// -------------------------------------------------------------------------- indicators

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

// ------------------------------------------------------------------- batch over buffers

fn read(py: Python<'_>, buf: &PyBuffer<f64>) -> PyResult<Vec<f64>> {
    buf.to_vec(py)
}

/// Copy results into caller-allocated output buffers (numpy arrays of the same length).
fn write(py: Python<'_>, outs: &[&PyBuffer<f64>], values: &[Vec<f64>]) -> PyResult<()> {
    for (out, v) in outs.iter().zip(values) {
        out.copy_from_slice(py, v)?;
    }
    Ok(())
}

/// `batch_single(kind, real, out, timeperiod)`: kind is SMA, EMA, RSI, ROCP or VolumeZScore.
#[pyfunction]
fn batch_single(
    py: Python<'_>,
    kind: &str,
    real: PyBuffer<f64>,
    out: PyBuffer<f64>,
    timeperiod: usize,
) -> PyResult<()> {
    let x = read(py, &real)?;
    let kind = kind.to_string();
    let result = py.detach(move || match kind.as_str() {
        "SMA" => batch::sma(&x, timeperiod),
        "EMA" => batch::ema(&x, timeperiod),
        "RSI" => batch::rsi(&x, timeperiod),
        "ROCP" => batch::rocp(&x, timeperiod),
        "VolumeZScore" => batch::volume_zscore(&x, timeperiod),
        other => Err(RsMarketError::InvalidParameter(format!(
            "unknown indicator {other}"
        ))),
    });
    write(py, &[&out], &[market!(py, result)?])
}

#[pyfunction]
fn batch_stddev(
    py: Python<'_>,
    real: PyBuffer<f64>,
    out: PyBuffer<f64>,
    timeperiod: usize,
    nbdev: f64,
) -> PyResult<()> {
    let x = read(py, &real)?;
    let result = py.detach(move || batch::stddev(&x, timeperiod, nbdev));
    write(py, &[&out], &[market!(py, result)?])
}

#[pyfunction]
fn batch_log_return(py: Python<'_>, real: PyBuffer<f64>, out: PyBuffer<f64>) -> PyResult<()> {
    let x = read(py, &real)?;
    let result = py.detach(move || batch::log_return(&x));
    write(py, &[&out], &[result])
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn batch_macd(
    py: Python<'_>,
    real: PyBuffer<f64>,
    macd: PyBuffer<f64>,
    signal: PyBuffer<f64>,
    hist: PyBuffer<f64>,
    fastperiod: usize,
    slowperiod: usize,
    signalperiod: usize,
) -> PyResult<()> {
    let x = read(py, &real)?;
    let result = market!(
        py,
        py.detach(move || batch::macd(&x, fastperiod, slowperiod, signalperiod))
    )?;
    write(py, &[&macd, &signal, &hist], &result)
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn batch_bbands(
    py: Python<'_>,
    real: PyBuffer<f64>,
    upper: PyBuffer<f64>,
    middle: PyBuffer<f64>,
    lower: PyBuffer<f64>,
    timeperiod: usize,
    nbdevup: f64,
    nbdevdn: f64,
) -> PyResult<()> {
    let x = read(py, &real)?;
    let result = market!(
        py,
        py.detach(move || batch::bbands(&x, timeperiod, nbdevup, nbdevdn))
    )?;
    write(py, &[&upper, &middle, &lower], &result)
}

#[pyfunction]
fn batch_atr(
    py: Python<'_>,
    high: PyBuffer<f64>,
    low: PyBuffer<f64>,
    close: PyBuffer<f64>,
    out: PyBuffer<f64>,
    timeperiod: usize,
) -> PyResult<()> {
    let (h, l, c) = (read(py, &high)?, read(py, &low)?, read(py, &close)?);
    let result = market!(py, py.detach(move || batch::atr(&h, &l, &c, timeperiod)))?;
    write(py, &[&out], &[result])
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn batch_stoch(
    py: Python<'_>,
    high: PyBuffer<f64>,
    low: PyBuffer<f64>,
    close: PyBuffer<f64>,
    slowk: PyBuffer<f64>,
    slowd: PyBuffer<f64>,
    fastk_period: usize,
    slowk_period: usize,
    slowd_period: usize,
) -> PyResult<()> {
    let (h, l, c) = (read(py, &high)?, read(py, &low)?, read(py, &close)?);
    let result = market!(
        py,
        py.detach(move || batch::stoch(&h, &l, &c, fastk_period, slowk_period, slowd_period))
    )?;
    write(py, &[&slowk, &slowd], &result)
}

/// Fills PLUS_DI, MINUS_DI and ADX in one pass.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn batch_directional(
    py: Python<'_>,
    high: PyBuffer<f64>,
    low: PyBuffer<f64>,
    close: PyBuffer<f64>,
    plus_di: PyBuffer<f64>,
    minus_di: PyBuffer<f64>,
    adx: PyBuffer<f64>,
    timeperiod: usize,
) -> PyResult<()> {
    let (h, l, c) = (read(py, &high)?, read(py, &low)?, read(py, &close)?);
    let result = market!(
        py,
        py.detach(move || batch::directional(&h, &l, &c, timeperiod))
    )?;
    write(py, &[&plus_di, &minus_di, &adx], &result)
}

#[pyfunction]
fn batch_obv(
    py: Python<'_>,
    real: PyBuffer<f64>,
    volume: PyBuffer<f64>,
    out: PyBuffer<f64>,
) -> PyResult<()> {
    let (c, v) = (read(py, &real)?, read(py, &volume)?);
    let result = market!(py, py.detach(move || batch::obv(&c, &v)))?;
    write(py, &[&out], &[result])
}

#[pyfunction]
fn batch_vwap(
    py: Python<'_>,
    high: PyBuffer<f64>,
    low: PyBuffer<f64>,
    close: PyBuffer<f64>,
    volume: PyBuffer<f64>,
    out: PyBuffer<f64>,
) -> PyResult<()> {
    let (h, l, c, v) = (
        read(py, &high)?,
        read(py, &low)?,
        read(py, &close)?,
        read(py, &volume)?,
    );
    let result = market!(py, py.detach(move || batch::vwap(&h, &l, &c, &v)))?;
    write(py, &[&out], &[result])
}

#[pyfunction]
fn batch_session_vwap(
    py: Python<'_>,
    session: PyBuffer<i64>,
    high: PyBuffer<f64>,
    low: PyBuffer<f64>,
    close: PyBuffer<f64>,
    volume: PyBuffer<f64>,
    out: PyBuffer<f64>,
) -> PyResult<()> {
    let s = session.to_vec(py)?;
    let (h, l, c, v) = (
        read(py, &high)?,
        read(py, &low)?,
        read(py, &close)?,
        read(py, &volume)?,
    );
    let result = market!(
        py,
        py.detach(move || batch::session_vwap(&s, &h, &l, &c, &v))
    )?;
    write(py, &[&out], &[result])
}

// ----------------------------------------------------------------------------- features

static NAMES_1M: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();
static NAMES_1H: PyOnceLock<Py<PyTuple>> = PyOnceLock::new();

/// The feature names of an engine on `base` candles, built once per base.
fn names_tuple(py: Python<'_>, base: Timeframe) -> PyResult<&Bound<'_, PyTuple>> {
    let cell = match base {
        Timeframe::M1 => &NAMES_1M,
        Timeframe::H1 => &NAMES_1H,
        other => {
            return Err(err(
                py,
                RsMarketError::InvalidParameter(format!(
                    "base interval {}: features are built on 1m or 1h candles",
                    other.as_str()
                )),
            ))
        }
    };
    let names = cell.get_or_try_init(py, || {
        let names = market!(py, feature_names_for(base))?;
        PyTuple::new(py, names).map(Bound::unbind)
    })?;
    Ok(names.bind(py))
}

/// One feature vector: `values` (list of float, NaN while warming up), `names`, `ready`.
///
/// Not `frozen`: the engine writes the values straight into a freshly allocated object
/// (`PyFeatureEngine::push`), which saves copying 90 floats through PyO3's constructor two or
/// three times. Python code cannot change it (no setters).
#[pyclass(module = "kstrade._native", name = "FeatureVector", freelist = 32)]
pub struct PyFeatureVector {
    #[pyo3(get)]
    open_time_ms: i64,
    #[pyo3(get)]
    ready: bool,
    values: [f64; FEATURE_COUNT],
    closed: Vec<ClosedBar>,
    /// The engine's base interval (which names its values).
    base: Timeframe,
}

impl PyFeatureVector {
    /// What a vector holds before the engine has written it.
    const BLANK: Self = Self {
        open_time_ms: 0,
        ready: false,
        values: [f64::NAN; FEATURE_COUNT],
        closed: Vec::new(),
        base: Timeframe::M1,
    };
}

#[pymethods]
impl PyFeatureVector {
    #[getter]
    fn values(&self) -> [f64; FEATURE_COUNT] {
        self.values
    }

    /// The values as raw native-endian float64 bytes (for `numpy.frombuffer`).
    fn raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        PyBytes::new_with(py, FEATURE_COUNT * 8, |buf| {
            for (chunk, v) in buf.chunks_exact_mut(8).zip(&self.values) {
                chunk.copy_from_slice(&v.to_ne_bytes());
            }
            Ok(())
        })
    }

    #[getter]
    fn names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        Ok(names_tuple(py, self.base)?.clone())
    }

    /// Higher-timeframe bars that closed with this candle.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<Vec<PyClosedBar>> {
        self.closed
            .iter()
            .map(|b| PyClosedBar::from_rs(py, b))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.values.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "FeatureVector(open_time_ms={}, ready={}, n={})",
            self.open_time_ms,
            self.ready,
            self.values.len()
        )
    }
}

/// Per-symbol multi-timeframe feature engine.
#[pyclass(module = "kstrade._native", name = "FeatureEngine", subclass)]
pub struct PyFeatureEngine {
    inner: RsEngine,
}

impl PyFeatureEngine {
    /// Allocates the Python vector first and has the engine write into it: the 90 values are
    /// written once, where they stay. A duplicate or a rejected candle drops the blank object.
    /// `validated`: the candle comes from a Python `Candle`, which validated it when built.
    fn push<'py>(
        &mut self,
        py: Python<'py>,
        candle: RsCandle,
        validated: bool,
    ) -> PyResult<Option<Bound<'py, PyFeatureVector>>> {
        let base = self.inner.ladder()[0];
        let object = Bound::new(
            py,
            PyFeatureVector {
                base,
                ..PyFeatureVector::BLANK
            },
        )?;
        {
            let mut vector = object.borrow_mut();
            let update = if validated {
                self.inner.update_row_validated(candle, &mut vector.values)
            } else {
                self.inner.update_row(candle, &mut vector.values)
            };
            let Some(update) = market!(py, update)? else {
                return Ok(None);
            };
            vector.open_time_ms = candle.open_time_ms;
            vector.ready = update.ready;
            vector.closed = update.closed;
        }
        Ok(Some(object))
    }
}

#[pymethods]
impl PyFeatureEngine {
    /// An engine on `base_interval` candles: "1m" (5m, 15m, 1h above it) or "1h" (4h, 8h, 1d).
    #[new]
    #[pyo3(signature = (base_interval="1m"))]
    fn new(py: Python<'_>, base_interval: &str) -> PyResult<Self> {
        let base = market!(py, Timeframe::parse(base_interval))?;
        Ok(Self {
            inner: market!(py, RsEngine::with_base(base))?,
        })
    }

    /// Push a closed `Candle` of the base interval; None for an ignored duplicate.
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        candle: &PyCandle,
    ) -> PyResult<Option<Bound<'py, PyFeatureVector>>> {
        let c = of_base(py, candle, self.inner.ladder()[0])?;
        self.push(py, c, true)
    }

    /// The base interval, then the timeframes built from it: ["1m", "5m", "15m", "1h"].
    #[getter]
    fn timeframes(&self) -> [&'static str; 4] {
        self.inner.ladder().map(Timeframe::as_str)
    }

    /// `update` without building a `Candle` first (the ingest hot path); same validation.
    #[allow(clippy::too_many_arguments)]
    fn update_ohlcv<'py>(
        &mut self,
        py: Python<'py>,
        open_time_ms: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
    ) -> PyResult<Option<Bound<'py, PyFeatureVector>>> {
        self.push(
            py,
            RsCandle {
                open_time_ms,
                open,
                high,
                low,
                close,
                volume,
            },
            false,
        )
    }

    /// Batch path over columns: returns `(values_bytes, open_time_ms, ready, rejected)` where
    /// values are float64, feature-major (`FEATURE_COUNT` columns of one value per accepted
    /// candle) and rejected is `[(index, code, message)]`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn update_batch(
        &mut self,
        py: Python<'_>,
        open_time_ms: PyBuffer<i64>,
        open: PyBuffer<f64>,
        high: PyBuffer<f64>,
        low: PyBuffer<f64>,
        close: PyBuffer<f64>,
        volume: PyBuffer<f64>,
    ) -> PyResult<(
        Py<PyBytes>,
        Vec<i64>,
        Vec<bool>,
        Vec<(usize, &'static str, String)>,
    )> {
        let t = open_time_ms.to_vec(py)?;
        let cols = [
            read(py, &open)?,
            read(py, &high)?,
            read(py, &low)?,
            read(py, &close)?,
            read(py, &volume)?,
        ];
        if cols.iter().any(|c| c.len() != t.len()) {
            return Err(err(
                py,
                RsMarketError::LengthMismatch("FeatureEngine.update_batch".into()),
            ));
        }
        let engine = &mut self.inner;
        let (columns, out) = py.detach(move || {
            let candles: Vec<RsCandle> = (0..t.len())
                .map(|i| RsCandle {
                    open_time_ms: t[i],
                    open: cols[0][i],
                    high: cols[1][i],
                    low: cols[2][i],
                    close: cols[3][i],
                    volume: cols[4][i],
                })
                .collect();
            let mut out = engine.update_batch(&candles);
            let columns = std::mem::take(&mut out.columns);
            (columns, out)
        });
        let bytes = PyBytes::new_with(py, columns.len() * 8, |buf| {
            for (chunk, v) in buf.chunks_exact_mut(8).zip(&columns) {
                chunk.copy_from_slice(&v.to_ne_bytes());
            }
            Ok(())
        })?;
        let rejected = out
            .rejected
            .iter()
            .map(|(i, e)| (*i, e.code(), e.to_string()))
            .collect();
        Ok((bytes.unbind(), out.open_time_ms, out.ready, rejected))
    }

    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        let bytes = market!(py, self.inner.snapshot())?;
        Ok(PyBytes::new(py, &bytes).unbind())
    }

    /// Replace this engine's state with a snapshot's (of an engine on the same base interval).
    fn restore(&mut self, py: Python<'_>, snapshot: &[u8]) -> PyResult<()> {
        let restored = market!(py, RsEngine::restore(snapshot))?;
        let (base, got) = (self.inner.ladder()[0], restored.ladder()[0]);
        if got != base {
            return Err(err(
                py,
                RsMarketError::Snapshot(format!(
                    "the snapshot is of an engine on {} candles, this one is on {}",
                    got.as_str(),
                    base.as_str()
                )),
            ));
        }
        self.inner = restored;
        Ok(())
    }

    #[getter]
    fn candles(&self) -> u64 {
        self.inner.candles()
    }

    /// `{"5m": n, "15m": n, "1h": n}`: higher bars fed to the indicators with fewer 1m candles
    /// than their interval (used as built), since this engine was created (not restored).
    #[getter]
    fn incomplete_bars<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (tf, n) in self.inner.incomplete_bars() {
            d.set_item(tf.as_str(), n)?;
        }
        Ok(d)
    }

    /// The names of the values of an engine on `base_interval` candles, in order.
    #[staticmethod]
    #[pyo3(signature = (base_interval="1m"))]
    fn feature_names<'py>(py: Python<'py>, base_interval: &str) -> PyResult<Bound<'py, PyTuple>> {
        let base = market!(py, Timeframe::parse(base_interval))?;
        Ok(names_tuple(py, base)?.clone())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("MarketError", py.get_type::<MarketError>())?;
    m.add("FEATURE_VERSION", FEATURE_VERSION)?;
    m.add("FEATURE_COUNT", FEATURE_COUNT)?;
    m.add_class::<PyCandle>()?;
    m.add_class::<PyClosedBar>()?;
    m.add_class::<PyCandleAggregator>()?;
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
    m.add_class::<PySessionVwap>()?;
    m.add_class::<PyFeatureVector>()?;
    m.add_class::<PyFeatureEngine>()?;
    for f in [
        wrap_pyfunction!(batch_single, m)?,
        wrap_pyfunction!(batch_stddev, m)?,
        wrap_pyfunction!(batch_log_return, m)?,
        wrap_pyfunction!(batch_macd, m)?,
        wrap_pyfunction!(batch_bbands, m)?,
        wrap_pyfunction!(batch_atr, m)?,
        wrap_pyfunction!(batch_stoch, m)?,
        wrap_pyfunction!(batch_directional, m)?,
        wrap_pyfunction!(batch_obv, m)?,
        wrap_pyfunction!(batch_vwap, m)?,
        wrap_pyfunction!(batch_session_vwap, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
