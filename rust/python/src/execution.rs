//! The execution stage's candle read for a whole poll at once (`kstrade_codec::candle_mark`):
//! a replay hands it a few candles per instant, and the header checks, the decode and the
//! model's checks in Python were a fifth of the stage's time.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use kstrade_codec::candle_mark::{self, MarkSpec};

use crate::bus::PyRecord;

/// Reads the marks (symbol, open, high, low, close, origin_ns) of current candle records;
/// None for any other record, which the stage reads in Python.
#[pyclass(module = "kstrade._native", name = "CandleMarks", frozen)]
pub struct PyCandleMarks {
    spec: MarkSpec,
}

#[pymethods]
impl PyCandleMarks {
    /// `schema`, `version` and `encoding`: the current candle codec's; `intervals`: each
    /// interval the model knows with its minutes; `origins`: the origin symbols it knows;
    /// `micros_min`..=`micros_max`: the open times the stage lets through.
    #[new]
    #[pyo3(signature = (*, schema, version, encoding, intervals, origins, micros_min, micros_max))]
    fn new(
        schema: String,
        version: u32,
        encoding: String,
        intervals: HashMap<String, i32>,
        origins: Vec<String>,
        micros_min: i64,
        micros_max: i64,
    ) -> Self {
        let mut intervals: Vec<(String, i32)> = intervals.into_iter().collect();
        intervals.sort();
        Self {
            spec: MarkSpec {
                schema: schema.into_bytes(),
                version,
                version_header: version.to_string().into_bytes(),
                encoding: encoding.into_bytes(),
                intervals,
                origins,
                micros: micros_min..=micros_max,
            },
        }
    }

    /// Per record, in order: its mark, or None where the Python path must read it (not a
    /// record, no value, other headers, a body the model would refuse or not decode).
    fn read<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for item in records.iter() {
            let mark = item.cast::<PyRecord>().ok().and_then(|record| {
                let record = record.get();
                let body = record.value()?.bind(py).as_bytes();
                candle_mark::read(record.header_list(), body, &self.spec)
            });
            match mark {
                Some(m) => out.append(PyTuple::new(
                    py,
                    [
                        m.symbol.into_pyobject(py)?.into_any(),
                        m.open.into_pyobject(py)?.into_any(),
                        m.high.into_pyobject(py)?.into_any(),
                        m.low.into_pyobject(py)?.into_any(),
                        m.close.into_pyobject(py)?.into_any(),
                        m.origin_ns.into_pyobject(py)?.into_any(),
                    ],
                )?)?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCandleMarks>()
}
