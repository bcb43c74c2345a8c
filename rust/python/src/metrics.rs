//! The metrics collector's read of the two headers latency needs (`origin_ns`, `stage`) for a
//! whole run of records at once: a replay's collector reads every record of every topic, and
//! two header lookups, an `int()` and a decode per record were a tenth of its time.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::bus::PyRecord;

/// (origin_ns, stage, key, produced_ns): a record's latency as `LatencyTracker.observe_run`
/// takes it.
type Timed = (u64, Py<PyString>, Option<Py<PyBytes>>, i128);

/// Per record, its latency where its `origin` header is plain decimal digits (at most 19: any
/// epoch nanosecond up to the year 2286) and its `stage` header ASCII; else None, and the
/// caller reads that record's headers itself (and counts it unreadable where they are missing,
/// as it always did). `produced_ns` is the middle of the record's create millisecond (Kafka
/// timestamps are whole milliseconds). Records of one stage share one `stage` string.
#[pyfunction]
fn latency_headers(
    py: Python<'_>,
    records: Vec<Bound<'_, PyRecord>>,
    origin: &str,
    stage: &str,
) -> Vec<Option<Timed>> {
    let mut stages: Vec<(Vec<u8>, Py<PyString>)> = Vec::new();
    records
        .iter()
        .map(|record| {
            let r = record.get();
            let origin_ns = r.header_value(origin).and_then(decimal)?;
            let name = r.header_value(stage).filter(|s| s.is_ascii())?;
            let name = match stages.iter().find(|(seen, _)| seen.as_slice() == name) {
                Some((_, s)) => s.clone_ref(py),
                None => {
                    // ASCII (checked above), hence UTF-8.
                    let s = PyString::new(py, std::str::from_utf8(name).ok()?).unbind();
                    stages.push((name.to_vec(), s.clone_ref(py)));
                    s
                }
            };
            let key = r.key().map(|k| k.clone_ref(py));
            Some((
                origin_ns,
                name,
                key,
                i128::from(r.timestamp_ms()) * 1_000_000 + 500_000,
            ))
        })
        .collect()
}

/// Plain decimal digits as a number (19 fit a u64); None for anything else (a sign, blanks,
/// more digits).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(latency_headers, m)?)
}
