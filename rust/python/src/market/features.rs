//! The per-symbol multi-timeframe `FeatureEngine` and the `FeatureVector` it writes.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use kstrade_market::features::{feature_names_for, FEATURE_COUNT, FEATURE_VERSION};
use kstrade_market::{
    Candle as RsCandle, ClosedBar, FeatureEngine as RsEngine, MarketError as RsMarketError,
    Timeframe,
};

use super::batch::read;
use super::candles::{of_base, PyCandle, PyClosedBar};
use super::err;

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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FEATURE_VERSION", FEATURE_VERSION)?;
    m.add("FEATURE_COUNT", FEATURE_COUNT)?;
    m.add_class::<PyFeatureVector>()?;
    m.add_class::<PyFeatureEngine>()
}
