//! Bindings for `kstrade-market`: candles (`candles`), the TA-Lib-named incremental indicators
//! (`indicators`), batch functions over buffers, numpy arrays (`batch`), and the `FeatureEngine`
//! (`features`). Only type conversion here; every batch call runs with the GIL released. Errors
//! are `MarketError` (a `ValueError`) with a stable `.code`.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use kstrade_market::MarketError as RsMarketError;

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

mod batch;
mod candles;
mod features;
mod indicators;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MarketError", m.py().get_type::<MarketError>())?;
    candles::register(m)?;
    indicators::register(m)?;
    batch::register(m)?;
    features::register(m)
}
