//! `Candle`, `ClosedBar` and the `CandleAggregator`.

use pyo3::prelude::*;

use kstrade_market::{
    Candle as RsCandle, CandleAggregator as RsAggregator, ClosedBar, MarketError as RsMarketError,
    PushOutcome, Timeframe,
};

use super::err;

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
    pub(super) fn from_rs(py: Python<'_>, bar: &ClosedBar) -> PyResult<Self> {
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
pub(super) fn of_base(py: Python<'_>, candle: &PyCandle, base: Timeframe) -> PyResult<RsCandle> {
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCandle>()?;
    m.add_class::<PyClosedBar>()?;
    m.add_class::<PyCandleAggregator>()
}
