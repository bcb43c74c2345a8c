//! `MetricsCore`: the metrics collector's per-record state and work
//! (`kstrade_codec::metrics_core`), driven by one call per poll. `feed` counts and reads the
//! records it can and stops at the first one the collector's Python path must read (or whose
//! topic it does not know yet), saying which; the Python path feeds what it reads back here.

use kstrade_codec::metrics_core::{
    AccuracyRow, AccuracySettings, Kind, LatencyTracker, MetricsCore, Readers, RecordIn, Step,
    Summary,
};
use kstrade_codec::signal_core::HeaderSpec;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::bus::PyRecord;

/// The standard headers of a message type: (schema name, version, encoding).
type SpecTuple = (String, u32, String);
/// A latency window's row: (stage, topic, count, p50, p95, p99, max) in ms; the topic is `*`
/// for the time a stage adds.
type LatencyRow = (String, String, u64, f64, f64, f64, f64);
/// What `feed` stopped at: every record done, a topic to register, a record for the Python
/// path whole (counted), its content only (counted, latency taken), a record that is no
/// `Record` (not counted).
const DONE: u8 = 0;
const NEW_TOPIC: u8 = 1;
const WHOLE: u8 = 2;
const CONTENT: u8 = 3;
const FOREIGN: u8 = 4;

#[pyclass(module = "kstrade._native", name = "MetricsCore")]
pub struct PyMetricsCore {
    core: MetricsCore,
    /// The header names: origin, stage, schema, schema version, encoding.
    names: [String; 5],
    /// The last record's topic string and its id: a poll comes in runs of one topic whose
    /// records share one string, so a lookup is mostly a pointer comparison (the string is
    /// held, so the pointer stays its own).
    last: Option<(Py<PyString>, usize)>,
}

fn spec((schema, version, encoding): SpecTuple) -> HeaderSpec {
    HeaderSpec {
        schema,
        version,
        encoding,
    }
}

fn row(stage: &str, topic: &str, (count, p50, p95, p99, max): Summary) -> LatencyRow {
    (
        stage.to_owned(),
        topic.to_owned(),
        count,
        p50,
        p95,
        p99,
        max,
    )
}

#[pymethods]
impl PyMetricsCore {
    /// Built by `MetricsCollector`: the header names, the latency tracker's bounds, the
    /// accuracy settings, one prediction stored in `sample_every` (None: no database), and a
    /// reader spec per hot type (None: those records all go to Python).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (*, headers, max_plausible_ns, max_events, settle_ns, bar_ns, horizon_bars, flat_band, window,
                        delta, threshold, sample_every, candle, prediction, signal, final_stage))]
    fn new(
        headers: (String, String, String, String, String),
        max_plausible_ns: i64,
        max_events: usize,
        settle_ns: i64,
        bar_ns: i64,
        horizon_bars: i64,
        flat_band: f64,
        window: usize,
        delta: f64,
        threshold: f64,
        sample_every: Option<u64>,
        candle: Option<SpecTuple>,
        prediction: Option<SpecTuple>,
        signal: Option<SpecTuple>,
        final_stage: usize,
    ) -> PyResult<Self> {
        if window == 0 || max_events == 0 || bar_ns <= 0 || horizon_bars <= 0 {
            return Err(PyValueError::new_err(
                "window, max_events, bar_ns and horizon_bars must be positive",
            ));
        }
        let (origin, stage, schema, version, encoding) = headers;
        Ok(Self {
            core: MetricsCore::new(
                LatencyTracker::new(max_plausible_ns.into(), max_events, settle_ns.into()),
                AccuracySettings {
                    bar_ns: bar_ns.into(),
                    horizon_bars: horizon_bars.into(),
                    flat_band,
                    window,
                    delta,
                    threshold,
                },
                Readers {
                    candle: candle.map(spec),
                    prediction: prediction.map(spec),
                    signal: signal.map(spec),
                    final_stage,
                },
                sample_every,
            ),
            names: [origin, stage, schema, version, encoding],
            last: None,
        })
    }

    /// Registers `topic`: "python" (read whole by Python), "timed", "timed_python" (latency
    /// here, content in Python), "candle", "bar", "prediction" or "signal" (`stored`: the
    /// stage index whose signals on this topic the database keeps).
    #[pyo3(signature = (topic, kind, stored=None))]
    fn topic(&mut self, topic: &str, kind: &str, stored: Option<usize>) -> PyResult<()> {
        let kind = match kind {
            "python" => Kind::Python,
            "timed" => Kind::Timed,
            "timed_python" => Kind::TimedPython,
            "candle" => Kind::Candle,
            "bar" => Kind::Bar,
            "prediction" => Kind::Prediction,
            "signal" => Kind::Signal { stored },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown topic kind {other:?}"
                )))
            }
        };
        self.core.topic(topic, kind);
        Ok(())
    }

    /// Counts and reads `records[start:]` until one needs Python. Returns (index, what): DONE
    /// (index = len), NEW_TOPIC (register `records[index].topic`, call again from index), else
    /// `records[index]` is the Python path's (WHOLE, CONTENT, FOREIGN: see the constants),
    /// then call again from index + 1.
    fn feed(
        &mut self,
        py: Python<'_>,
        records: &Bound<'_, PyList>,
        start: usize,
        now_ns: i64,
    ) -> PyResult<(usize, u8)> {
        for i in start..records.len() {
            let item = records.get_item(i)?;
            let Ok(record) = item.cast::<PyRecord>() else {
                return Ok((i, FOREIGN));
            };
            let r = record.get();
            let name = r.topic();
            let topic = match &self.last {
                Some((s, id)) if s.as_ptr() == name.as_ptr() => *id,
                _ => match self.core.topic_id(name.bind(py).to_str()?) {
                    Some(id) => {
                        self.last = Some((name.clone_ref(py), id));
                        id
                    }
                    None => return Ok((i, NEW_TOPIC)),
                },
            };
            let [o, s, sc, v, e] = &self.names;
            let [origin, stage, schema, version, encoding] =
                r.header_values(&[o.as_str(), s.as_str(), sc.as_str(), v.as_str(), e.as_str()]);
            let input = RecordIn {
                origin,
                stage,
                schema,
                version,
                encoding,
                key: r.key().map(|k| k.as_bytes(py)),
                value: r.value().map(|v| v.as_bytes(py)),
                timestamp_ms: r.timestamp_ms(),
            };
            match self.core.take(topic, &input, now_ns) {
                Step::Done => {}
                Step::Whole => return Ok((i, WHOLE)),
                Step::Content => return Ok((i, CONTENT)),
            }
        }
        Ok((records.len(), DONE))
    }

    /// Counts `n` records of a registered topic (the Python path).
    fn count(&mut self, topic: &str, n: u64) -> PyResult<()> {
        let id = self
            .core
            .topic_id(topic)
            .ok_or_else(|| PyValueError::new_err(format!("{topic}: not registered")))?;
        self.core.count(id, n);
        Ok(())
    }

    /// Records per topic, in the order first seen.
    fn counts(&self) -> Vec<(String, u64)> {
        self.core
            .counts()
            .into_iter()
            .map(|(t, n)| (t.to_owned(), n))
            .collect()
    }

    /// Records per topic not yet added to the Prometheus counter.
    fn unexported(&self) -> Vec<(String, u64)> {
        self.core
            .unexported()
            .into_iter()
            .map(|(t, n)| (t.to_owned(), n))
            .collect()
    }

    /// `unexported`, then zero.
    fn take_unexported(&mut self) -> Vec<(String, u64)> {
        self.core.take_unexported()
    }

    /// Latencies read by the Python path: (origin_ns, stage, key, produced_ns) each, of a
    /// registered topic (`LatencyTracker.observe_run`).
    fn observe_run(
        &mut self,
        topic: &str,
        timed: Vec<(i128, String, Option<Vec<u8>>, i128)>,
    ) -> PyResult<()> {
        let id = self
            .core
            .topic_id(topic)
            .ok_or_else(|| PyValueError::new_err(format!("{topic}: not registered")))?;
        for (origin, stage, key, produced) in timed {
            let stage = self.core.stage(stage.as_bytes());
            self.core
                .observe(id, origin, stage, key.as_deref(), produced);
        }
        Ok(())
    }

    /// The latency window that ends at `now_ns`: (per stage and topic, per stage) rows.
    fn take_window(&mut self, now_ns: i128) -> (Vec<LatencyRow>, Vec<LatencyRow>) {
        let (outputs, stages) = self.core.take_window(now_ns);
        let core = &self.core;
        (
            outputs
                .into_iter()
                .map(|((s, t), sum)| row(core.stage_name(s), core.topic_name(t), sum))
                .collect(),
            stages
                .into_iter()
                .map(|(s, sum)| row(core.stage_name(s), "*", sum))
                .collect(),
        )
    }

    /// A bar read by the Python path.
    fn add_bar(&mut self, symbol: &str, origin_ns: i128, close: f64) {
        self.core.add_bar(symbol, origin_ns, close);
    }

    /// A prediction read by the Python path; the predictions seen so far.
    fn add_prediction(&mut self, model: &str, symbol: &str, origin_ns: i128, direction: i8) -> u64 {
        self.core
            .add_prediction(model, symbol, origin_ns, direction)
    }

    /// (model, symbol, accuracy, hits in the window, Page-Hinkley statistic, threshold, fired)
    /// per tracker, sorted by (model, symbol); `take`: the fired flags are reset (an emission).
    #[pyo3(signature = (*, take))]
    fn accuracy(&mut self, take: bool) -> Vec<AccuracyRow> {
        self.core.accuracy(take)
    }

    #[getter]
    fn predictions_seen(&self) -> u64 {
        self.core.predictions_seen
    }

    #[getter]
    fn last_candle_ns(&self) -> Option<i64> {
        self.core.last_candle_ns
    }

    /// A candle read by the Python path at the clock's `now_ns` (ingest is alive).
    fn candle_seen(&mut self, now_ns: i64) {
        self.core.last_candle_ns = Some(now_ns);
    }

    /// Latencies counted, not recorded (negative or implausibly large).
    #[getter]
    fn implausible(&self) -> u64 {
        self.core.latency.implausible
    }

    /// The whole state as text (tests compare two cores).
    fn dump(&self) -> String {
        self.core.dump()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMetricsCore>()
}
