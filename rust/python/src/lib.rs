//! `kstrade._native`: the Python face of the Rust core. This crate only converts types and
//! releases the GIL around every call that can block; the logic lives in the concern crates
//! (`kstrade-bus`, ...). Panics in Rust surface as Python exceptions (PyO3's PanicException).

mod bus;
mod codec;
mod execution;
mod market;
mod metrics;
mod metrics_core;
mod signal_core;
mod signals;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bus::register(m)?;
    codec::register(m)?;
    execution::register(m)?;
    market::register(m)?;
    metrics::register(m)?;
    metrics_core::register(m)?;
    signals::register(m)?;
    signal_core::register(m)?;
    Ok(())
}
