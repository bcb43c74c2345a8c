//! `SignalCore`: the signals stage's state and per-record work (`kstrade_codec::signal_core`),
//! driven by one call per batch. `feed` reads the records it can (current, well-formed
//! candles, feature vectors and predictions of their own topics) and decides the candles they
//! complete; it stops at the first record it cannot read, or the first candle only Python can
//! decide, and says which, so the stage's Python path takes that one in order and feeds the
//! values it read back here (`add_close`, `add_features`, `add_prediction`, ...).

use std::collections::HashMap;

use kstrade_codec::feature_pick::FeaturePick;
use kstrade_codec::signal_core::{
    self as core, Decided, HeaderSpec, Input, OwnedVote, SignalCore, Taken, Warning,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::bus::PyRecord;
use crate::signals::SignalPlanner;

/// A natively decided candle: (symbol index, raw body, calibrated body, filtered-or-final body,
/// reasons as `FilterReason` bits, origin_ns).
type PlanTuple = (usize, Py<PyBytes>, Py<PyBytes>, Py<PyBytes>, u32, i64);
/// A vote: (model type, model version, direction index DOWN/FLAT/UP, probability, confidence).
type VoteTuple = (String, String, u8, f64, f64);
/// A candle for the Python path to decide: (symbol index, time us, votes, features, close,
/// last close, origin_ns, position open).
type ContextTuple = (
    usize,
    i64,
    Vec<VoteTuple>,
    Option<Vec<Option<f64>>>,
    Option<f64>,
    Option<f64>,
    i64,
    bool,
);
/// The standard headers of a message type: (schema name, version, encoding).
type SpecTuple = (String, u32, String);

#[pyclass(module = "kstrade._native", name = "SignalCore")]
pub struct PySignalCore {
    core: SignalCore,
    topics: HashMap<String, Input>,
    /// (header spec, interval, its minutes) when candles are read here.
    candles: Option<(HeaderSpec, String, i32)>,
    features: Option<(HeaderSpec, FeaturePick)>,
    predictions: Option<HeaderSpec>,
}

fn spec((schema, version, encoding): SpecTuple) -> HeaderSpec {
    HeaderSpec {
        schema,
        version,
        encoding,
    }
}

#[pymethods]
impl PySignalCore {
    /// Built by `SignalAggregator`: per symbol (in `symbols` order) its candle, feature and LSTM
    /// topics; a reader spec (or None: those records all go to Python) per message type.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (*, symbols, required, deadline_ns, memory, backlog, planner, candle_topics, feature_topics,
                        lstm_topics, transformer_topic, candles, features, predictions))]
    fn new(
        symbols: Vec<String>,
        required: Vec<String>,
        deadline_ns: i64,
        memory: usize,
        backlog: usize,
        planner: Option<PyRef<'_, SignalPlanner>>,
        candle_topics: Vec<String>,
        feature_topics: Vec<String>,
        lstm_topics: Vec<String>,
        transformer_topic: String,
        candles: Option<(SpecTuple, String, i32)>,
        features: Option<(SpecTuple, Vec<String>)>,
        predictions: Option<SpecTuple>,
    ) -> Self {
        let mut topics = HashMap::new();
        for (i, t) in candle_topics.into_iter().enumerate() {
            topics.insert(t, Input::Candle(i));
        }
        for (i, t) in feature_topics.into_iter().enumerate() {
            topics.insert(t, Input::Features(i));
        }
        for (i, t) in lstm_topics.into_iter().enumerate() {
            topics.insert(t, Input::Lstm(i));
        }
        topics.insert(transformer_topic, Input::Transformer);
        Self {
            core: SignalCore::new(
                symbols,
                required,
                deadline_ns,
                memory,
                backlog,
                planner.map(|p| p.settings.clone()),
            ),
            topics,
            candles: candles.map(|(s, interval, minutes)| (spec(s), interval, minutes)),
            features: features.map(|(s, wanted)| (spec(s), FeaturePick::new(wanted))),
            predictions: predictions.map(spec),
        }
    }

    /// Reads `records[start:]` and decides what they complete (and anything queued before).
    /// Returns (index, decided, context): `context` is a candle for Python to decide (then call
    /// again from `index`); else `records[index]`, if any, is one for Python to read (then call
    /// again from `index + 1`).
    fn feed(
        &mut self,
        py: Python<'_>,
        records: &Bound<'_, PyList>,
        start: usize,
        now_ns: i64,
    ) -> PyResult<(usize, Vec<PlanTuple>, Option<ContextTuple>)> {
        let mut decided = Vec::new();
        let mut i = start;
        loop {
            while let Some(d) = self.core.decide_next(now_ns) {
                match d {
                    Decided::Plan(t, p) => decided.push((
                        t.symbol,
                        PyBytes::new(py, &p.raw).unbind(),
                        PyBytes::new(py, &p.calibrated).unbind(),
                        PyBytes::new(py, &p.last).unbind(),
                        p.reasons,
                        t.origin_ns,
                    )),
                    Decided::Python(t) => return Ok((i, decided, Some(context(t)))),
                }
            }
            if i >= records.len() {
                return Ok((i, decided, None));
            }
            if !self.read(py, &records.get_item(i)?, now_ns) {
                return Ok((i, decided, None));
            }
            i += 1;
        }
    }

    fn add_close(
        &mut self,
        symbol: usize,
        ts: i64,
        close: f64,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.core
            .add_close(symbol, ts, close, topic, partition, offset);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_features(
        &mut self,
        symbol: usize,
        ts: i64,
        values: Vec<Option<f64>>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.core
            .add_features(symbol, ts, values, topic, partition, offset);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_prediction(
        &mut self,
        symbol: usize,
        ts: i64,
        vote: VoteTuple,
        now_ns: i64,
        origin_ns: i64,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        let (model, version, direction, probability, confidence) = vote;
        let vote = OwnedVote {
            model,
            version,
            direction,
            probability,
            confidence,
        };
        self.core.add_prediction(
            symbol, ts, vote, now_ns, origin_ns, topic, partition, offset,
        );
    }

    fn filled(&mut self, symbol: usize, signal_id: &str) {
        self.core.filled(symbol, signal_id);
    }

    fn closed(&mut self, signal_id: &str) {
        self.core.closed(signal_id);
    }

    fn reserve(&mut self, symbol: usize, signal_id: String, expires_ns: i64) {
        self.core.reserve(symbol, signal_id, expires_ns);
    }

    fn has_due(&self, now_ns: i64) -> bool {
        self.core.has_due(now_ns)
    }

    fn queue_due(&mut self, now_ns: i64) {
        self.core.queue_due(now_ns);
    }

    fn retained<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (topic, partition, offset) in self.core.retained() {
            out.set_item((topic, partition), offset)?;
        }
        Ok(out)
    }

    /// Log lines since the last call: ("late", model, symbol index, time us, decided through
    /// us, 0) or ("forgotten", "", symbol index, time us, candles in the book, count so far).
    fn take_warnings(&mut self) -> Vec<(&'static str, String, usize, i64, i64, u64)> {
        self.core
            .warnings
            .drain(..)
            .map(|w| match w {
                Warning::Late(model, symbol, ts, done) => ("late", model, symbol, ts, done, 0),
                Warning::Forgotten(symbol, len, ts, n) => {
                    ("forgotten", String::new(), symbol, ts, len as i64, n)
                }
            })
            .collect()
    }

    /// (late, repeated, ignored, forgotten undecided): the join's and the book's counters.
    fn stats(&self) -> (u64, u64, u64, u64) {
        let s = &self.core.stats;
        (s.late, s.repeated, s.ignored, s.forgotten_undecided)
    }

    fn is_pending(&self, symbol: usize, ts: i64) -> bool {
        self.core.is_pending(symbol, ts)
    }

    fn close(&self, symbol: usize, ts: i64) -> Option<f64> {
        self.core.close(symbol, ts)
    }

    fn features(&self, symbol: usize, ts: i64) -> Option<Vec<Option<f64>>> {
        self.core.features(symbol, ts).map(<[_]>::to_vec)
    }

    fn decided_through(&self, symbol: usize) -> Option<i64> {
        self.core.decided_through(symbol)
    }
}

impl PySignalCore {
    /// Takes one record if it is one this core reads (else false: Python reads it).
    fn read(&mut self, py: Python<'_>, item: &Bound<'_, PyAny>, now_ns: i64) -> bool {
        let Ok(record) = item.cast::<PyRecord>() else {
            return false;
        };
        let record = record.get();
        let Ok(topic) = record.topic().bind(py).to_str() else {
            return false;
        };
        let (Some(&input), Some(value)) = (self.topics.get(topic), record.value()) else {
            return false;
        };
        let body = value.bind(py).as_bytes();
        let headers = || record.header_list();
        let (partition, offset) = (record.partition(), record.offset());
        let core = &mut self.core;
        match input {
            Input::Candle(symbol) => {
                let Some((spec, interval, minutes)) = &self.candles else {
                    return false;
                };
                if core::origin_ns(headers(), spec).is_none() {
                    return false;
                }
                match core::read_candle(body, spec.version, interval, *minutes) {
                    Some((s, ts, close)) if s == core.symbols()[symbol] => {
                        core.add_close(symbol, ts, close, topic, partition, offset);
                        true
                    }
                    _ => false,
                }
            }
            Input::Features(symbol) => {
                let Some((spec, picker)) = &mut self.features else {
                    return false;
                };
                if core::origin_ns(headers(), spec).is_none() {
                    return false;
                }
                match core::read_features(picker, body) {
                    Some((s, ts, values)) if s == core.symbols()[symbol] => {
                        core.add_features(symbol, ts, values, topic, partition, offset);
                        true
                    }
                    _ => false,
                }
            }
            Input::Lstm(_) | Input::Transformer => {
                let Some(spec) = &self.predictions else {
                    return false;
                };
                let Some(origin) = core::origin_ns(headers(), spec) else {
                    return false;
                };
                let Some(p) = core::read_prediction(body, spec.version) else {
                    return false;
                };
                let symbol = match input {
                    Input::Lstm(s)
                        if p.model_type.symbol() == "lstm" && p.symbol == core.symbols()[s] =>
                    {
                        s
                    }
                    Input::Transformer if p.model_type.symbol() == "transformer" => {
                        match core.symbol_index(&p.symbol) {
                            Some(s) => s,
                            None => return false,
                        }
                    }
                    _ => return false,
                };
                let vote = OwnedVote {
                    model: p.model_type.symbol().to_string(),
                    version: p.model_version,
                    direction: p.direction.index() as u8,
                    probability: p.probability,
                    confidence: p.confidence,
                };
                core.add_prediction(
                    symbol,
                    p.timestamp_us,
                    vote,
                    now_ns,
                    origin,
                    topic,
                    partition,
                    offset,
                );
                true
            }
        }
    }
}

fn context(t: Taken) -> ContextTuple {
    let votes = t
        .votes
        .into_iter()
        .map(|v| (v.model, v.version, v.direction, v.probability, v.confidence))
        .collect();
    (
        t.symbol,
        t.timestamp_us,
        votes,
        t.features,
        t.close,
        t.last_close,
        t.origin_ns,
        t.position_open,
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySignalCore>()
}
