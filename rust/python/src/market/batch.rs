//! Whole-series indicator functions over caller-allocated float64 buffers, GIL released.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;

use kstrade_market::indicators::batch;
use kstrade_market::MarketError as RsMarketError;

use super::err;

pub(super) fn read(py: Python<'_>, buf: &PyBuffer<f64>) -> PyResult<Vec<f64>> {
    buf.to_vec(py)
}

/// Copy results into caller-allocated output buffers (numpy arrays of the same length).
pub(super) fn write(py: Python<'_>, outs: &[&PyBuffer<f64>], values: &[Vec<f64>]) -> PyResult<()> {
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

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
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
