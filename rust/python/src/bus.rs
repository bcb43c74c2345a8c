//! Bindings for `kstrade-bus`: `MemoryBroker`, `Producer`, `Consumer`, `Admin`, `Record`.
//! Every method that can wait (poll, flush, commit, admin calls) runs with the GIL released.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use kstrade_bus::kafka::{self, KafkaAdmin, KafkaConsumer, KafkaProducer};
use kstrade_bus::memory::{self, MemoryAdmin, MemoryConsumer, MemoryProducer};
use kstrade_bus::partitioner;
use kstrade_bus::{
    BusError as RsBusError, OutRecord, RebalanceEvent, RecordRef, Subscription, TopicPartition,
    TopicSpec,
};

create_exception!(
    kstrade._native,
    BusError,
    PyException,
    "A bus operation failed; `.code` is a stable error code."
);

fn err(py: Python<'_>, e: RsBusError) -> PyErr {
    let pyerr = BusError::new_err(e.to_string());
    // Attach the stable code; if that fails the message still says what went wrong.
    let _ = pyerr.value(py).setattr("code", e.code());
    pyerr
}

fn duration(seconds: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds.max(0.0))
        .map_err(|_| pyo3::exceptions::PyValueError::new_err(format!("invalid timeout {seconds}")))
}

type Partitions = Vec<(String, i32)>;

fn tps(list: Vec<(String, i32)>) -> Vec<TopicPartition> {
    list.into_iter()
        .map(|(t, p)| TopicPartition::new(t, p))
        .collect()
}

fn tp_tuples(list: Vec<TopicPartition>) -> Vec<(String, i32)> {
    list.into_iter()
        .map(|tp| (tp.topic, tp.partition))
        .collect()
}

/// The in-process cluster behind the `memory` transport.
#[pyclass(module = "kstrade._native", name = "MemoryBroker", frozen)]
pub struct PyMemoryBroker {
    inner: Arc<memory::MemoryBroker>,
}

#[pymethods]
impl PyMemoryBroker {
    #[new]
    fn new() -> Self {
        Self {
            inner: memory::MemoryBroker::new(),
        }
    }
}

/// A consumed record. `key` and `value` are bytes or None; headers are (name, bytes | None).
#[pyclass(module = "kstrade._native", name = "Record", frozen)]
pub struct PyRecord {
    /// Interned: every record of a topic shares one string (its hash computed once).
    #[pyo3(get)]
    topic: Py<PyString>,
    #[pyo3(get)]
    partition: i32,
    #[pyo3(get)]
    offset: i64,
    #[pyo3(get)]
    key: Option<Py<PyBytes>>,
    #[pyo3(get)]
    value: Option<Py<PyBytes>>,
    #[pyo3(get)]
    timestamp_ms: i64,
    /// Header names and values back to back, and where each lies: two allocations per record
    /// however many headers it has.
    header_bytes: Box<[u8]>,
    header_spans: Box<[HeaderSpan]>,
}

/// One header in `PyRecord::header_bytes`: the name ends where the value starts.
#[derive(Clone, Copy)]
struct HeaderSpan {
    name_start: u32,
    name_end: u32,
    /// The value's end, or None for a null value.
    value_end: Option<u32>,
}

impl PyRecord {
    /// For the stages' native readers (`signal_core`, `metrics`): where the record sits, its
    /// key, value and time.
    pub(crate) fn topic(&self) -> &Py<PyString> {
        &self.topic
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    pub(crate) fn value(&self) -> Option<&Py<PyBytes>> {
        self.value.as_ref()
    }

    pub(crate) fn key(&self) -> Option<&Py<PyBytes>> {
        self.key.as_ref()
    }

    pub(crate) fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// The value of the first header with this name; None where there is none, or it is null.
    pub(crate) fn header_value(&self, name: &str) -> Option<&[u8]> {
        let (bytes, name) = (&self.header_bytes, name.as_bytes());
        let s = self
            .header_spans
            .iter()
            .find(|s| &bytes[s.name_start as usize..s.name_end as usize] == name)?;
        Some(&bytes[s.name_end as usize..s.value_end? as usize])
    }

    /// `header_value` of each of `names`, in one pass over the headers.
    pub(crate) fn header_values<const N: usize>(&self, names: &[&str; N]) -> [Option<&[u8]>; N] {
        let bytes = &self.header_bytes;
        let (mut out, mut seen) = ([None; N], [false; N]);
        for s in &self.header_spans {
            let (a, b) = (s.name_start as usize, s.name_end as usize);
            for k in 0..N {
                if !seen[k] && &bytes[a..b] == names[k].as_bytes() {
                    seen[k] = true;
                    out[k] = s.value_end.map(|e| &bytes[b..e as usize]);
                }
            }
        }
        out
    }

    pub(crate) fn header_list(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        let bytes = &self.header_bytes;
        self.header_spans.iter().map(move |s| {
            let (a, b) = (s.name_start as usize, s.name_end as usize);
            // Written from a &str in `Records::push`.
            let name = std::str::from_utf8(&bytes[a..b]).unwrap_or("");
            (name, s.value_end.map(|e| &bytes[b..e as usize]))
        })
    }
}

/// A poll's records as the transport handed them out, copied once into one buffer with the
/// GIL released; `into_py` then makes the Python objects. Per record only what Python keeps
/// is allocated (the record, its key and value bytes, its headers), and each topic's name
/// once per poll.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    topics: Vec<String>,
    records: Vec<RawRecord>,
    headers: Vec<(Span, Option<Span>)>,
}

type Span = (usize, usize);

struct RawRecord {
    topic: usize,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<Span>,
    value: Option<Span>,
    headers: Span,
}

impl Records {
    fn keep(&mut self, data: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        (start, self.bytes.len())
    }

    fn push(&mut self, r: RecordRef<'_>) {
        // The records of a poll come partition after partition: the last topic usually matches.
        let topic = match self.topics.iter().rposition(|t| t == r.topic) {
            Some(i) => i,
            None => {
                self.topics.push(r.topic.to_string());
                self.topics.len() - 1
            }
        };
        let first_header = self.headers.len();
        for (name, value) in r.headers {
            let name = self.keep(name.as_bytes());
            let value = value.map(|v| self.keep(v));
            self.headers.push((name, value));
        }
        let record = RawRecord {
            topic,
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(|k| self.keep(k)),
            value: r.value.map(|v| self.keep(v)),
            headers: (first_header, self.headers.len()),
        };
        self.records.push(record);
    }

    fn into_py(self, py: Python<'_>) -> PyResult<Vec<PyRecord>> {
        let topics: Vec<Py<PyString>> = self
            .topics
            .iter()
            .map(|t| PyString::intern(py, t).unbind())
            .collect();
        let bytes = &self.bytes;
        let slice = |(a, b): Span| &bytes[a..b];
        self.records
            .iter()
            .map(|r| {
                let spans = &self.headers[r.headers.0..r.headers.1];
                let (header_bytes, header_spans) = match spans.first() {
                    None => (Box::default(), Box::default()),
                    Some(((first, _), _)) => {
                        // A record's headers lie back to back in the buffer: one copy.
                        let end = spans
                            .iter()
                            .map(|(n, v)| v.map_or(n.1, |v| v.1))
                            .max()
                            .unwrap_or(*first);
                        let offset = |at: usize| u32::try_from(at - first).ok();
                        let header_spans = spans
                            .iter()
                            .map(|(n, v)| {
                                Ok(HeaderSpan {
                                    name_start: offset(n.0).ok_or_else(too_large)?,
                                    name_end: offset(n.1).ok_or_else(too_large)?,
                                    value_end: match v {
                                        None => None,
                                        Some(v) => Some(offset(v.1).ok_or_else(too_large)?),
                                    },
                                })
                            })
                            .collect::<PyResult<Box<[HeaderSpan]>>>()?;
                        (Box::from(&bytes[*first..end]), header_spans)
                    }
                };
                Ok(PyRecord {
                    topic: topics[r.topic].clone_ref(py),
                    partition: r.partition,
                    offset: r.offset,
                    key: r.key.map(|k| PyBytes::new(py, slice(k)).unbind()),
                    value: r.value.map(|v| PyBytes::new(py, slice(v)).unbind()),
                    timestamp_ms: r.timestamp_ms,
                    header_bytes,
                    header_spans,
                })
            })
            .collect()
    }
}

fn too_large() -> PyErr {
    pyo3::exceptions::PyValueError::new_err("a record's headers exceed 4 GiB")
}

#[pymethods]
impl PyRecord {
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Bound<'py, PyTuple>> = self
            .header_list()
            .map(|(k, v)| {
                let value: Option<Bound<'py, PyBytes>> = v.map(|v| PyBytes::new(py, v));
                (k, value).into_pyobject(py)
            })
            .collect::<PyResult<_>>()?;
        PyList::new(py, items)
    }

    /// The first header with this name, or None.
    fn header<'py>(&self, py: Python<'py>, name: &str) -> Option<Bound<'py, PyBytes>> {
        Some(PyBytes::new(py, self.header_value(name)?))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Record(topic={:?}, partition={}, offset={})",
            self.topic.bind(py).to_string(),
            self.partition,
            self.offset
        )
    }
}

/// Produces to either transport. `flush` raises `BusError` if any delivery failed.
#[pyclass(module = "kstrade._native", name = "Producer", frozen)]
pub struct PyProducer {
    inner: Box<dyn kstrade_bus::Producer>,
    transport: &'static str,
}

#[pymethods]
impl PyProducer {
    #[staticmethod]
    fn memory(
        py: Python<'_>,
        broker: &PyMemoryBroker,
        config: HashMap<String, String>,
    ) -> PyResult<Self> {
        let p = MemoryProducer::new(Arc::clone(&broker.inner), &config).map_err(|e| err(py, e))?;
        Ok(Self {
            inner: Box::new(p),
            transport: "memory",
        })
    }

    #[staticmethod]
    fn kafka(py: Python<'_>, config: HashMap<String, String>) -> PyResult<Self> {
        let p = py
            .detach(|| KafkaProducer::new(&config))
            .map_err(|e| err(py, e))?;
        Ok(Self {
            inner: Box::new(p),
            transport: "kafka",
        })
    }

    #[getter]
    fn transport(&self) -> &'static str {
        self.transport
    }

    // Mirrors the Python signature one to one: keyword arguments, not a struct.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (topic, value, key=None, headers=None, partition=None, timestamp_ms=None))]
    fn send(
        &self,
        py: Python<'_>,
        topic: String,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        headers: Option<Vec<(String, Option<Bound<'_, PyBytes>>)>>,
        partition: Option<i32>,
        timestamp_ms: Option<i64>,
    ) -> PyResult<()> {
        // `&[u8]` borrows the bytes object's buffer: one memcpy into the record, instead of
        // PyO3 extracting a Vec<u8> element by element.
        let headers = headers
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.map(|b| b.as_bytes().to_vec())))
            .collect();
        let record = OutRecord {
            topic,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers,
            partition,
            timestamp_ms,
        };
        // send can wait while librdkafka's queue is full, so it runs without the GIL. The
        // memory log never waits: releasing the GIL there only hands it to another thread.
        if self.transport == "memory" {
            return self.inner.send(record).map_err(|e| err(py, e));
        }
        py.detach(|| self.inner.send(record))
            .map_err(|e| err(py, e))
    }

    #[pyo3(signature = (timeout=30.0))]
    fn flush(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let t = duration(timeout)?;
        if self.transport == "memory" {
            return self.inner.flush(t).map_err(|e| err(py, e));
        }
        py.detach(|| self.inner.flush(t)).map_err(|e| err(py, e))
    }

    #[getter]
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// The records the producer gave up on since the last call, as sent:
    /// `[(topic, value, key, headers, partition, timestamp_ms)]`, for `send` again.
    #[allow(clippy::type_complexity)]
    fn take_failed<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.inner
            .take_failed()
            .into_iter()
            .map(|r| {
                let headers: Vec<(String, Option<Bound<'py, PyBytes>>)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_deref().map(|b| PyBytes::new(py, b))))
                    .collect();
                (
                    r.topic,
                    r.value.as_deref().map(|b| PyBytes::new(py, b)),
                    r.key.as_deref().map(|b| PyBytes::new(py, b)),
                    headers,
                    r.partition,
                    r.timestamp_ms,
                )
                    .into_pyobject(py)
            })
            .collect()
    }

    /// A new client with the same settings, once nothing is in flight (raises otherwise).
    fn renew(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.renew()).map_err(|e| err(py, e))
    }
}

/// Consumes from either transport in a consumer group, with explicit commits.
#[pyclass(module = "kstrade._native", name = "Consumer", frozen)]
pub struct PyConsumer {
    inner: Mutex<Box<dyn kstrade_bus::Consumer>>,
    transport: &'static str,
}

impl PyConsumer {
    /// Lock the consumer with the GIL released, so a thread blocked in `poll` never holds the
    /// GIL while another waits for the lock.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut dyn kstrade_bus::Consumer) -> Result<T, RsBusError> + Send,
    ) -> PyResult<T> {
        self.with_wait(py, false, f)
    }

    /// `with`, for a call that may wait (`poll` with a timeout). The memory transport never
    /// blocks otherwise, and then keeps the GIL: releasing it would only hand it to another
    /// thread for up to a switch interval (a replay's stages that run ahead live in one).
    fn with_wait<T: Send>(
        &self,
        py: Python<'_>,
        may_wait: bool,
        f: impl FnOnce(&mut dyn kstrade_bus::Consumer) -> Result<T, RsBusError> + Send,
    ) -> PyResult<T> {
        if self.transport == "memory" && !may_wait {
            return f(self.inner.lock().as_mut()).map_err(|e| err(py, e));
        }
        py.detach(|| f(self.inner.lock().as_mut()))
            .map_err(|e| err(py, e))
    }
}

#[pymethods]
impl PyConsumer {
    #[staticmethod]
    fn memory(
        py: Python<'_>,
        broker: &PyMemoryBroker,
        config: HashMap<String, String>,
    ) -> PyResult<Self> {
        let c = MemoryConsumer::new(Arc::clone(&broker.inner), &config).map_err(|e| err(py, e))?;
        Ok(Self {
            inner: Mutex::new(Box::new(c)),
            transport: "memory",
        })
    }

    #[staticmethod]
    fn kafka(py: Python<'_>, config: HashMap<String, String>) -> PyResult<Self> {
        let c = py
            .detach(|| KafkaConsumer::new(&config))
            .map_err(|e| err(py, e))?;
        Ok(Self {
            inner: Mutex::new(Box::new(c)),
            transport: "kafka",
        })
    }

    #[getter]
    fn transport(&self) -> &'static str {
        self.transport
    }

    fn subscribe(&self, py: Python<'_>, topics: Vec<String>) -> PyResult<()> {
        self.with(py, |c| c.subscribe(Subscription::Topics(topics)))
    }

    /// Subscribe to every topic matching a regular expression (anchored with '^').
    fn subscribe_pattern(&self, py: Python<'_>, pattern: String) -> PyResult<()> {
        self.with(py, |c| c.subscribe(Subscription::Pattern(pattern)))
    }

    /// Up to `max_records` records, waiting at most `timeout` for the first. The first is
    /// waited for; the rest are what the client has already fetched, copied straight from its
    /// buffers (`Consumer::drain`).
    #[pyo3(signature = (max_records=500, timeout=1.0))]
    fn poll<'py>(
        &self,
        py: Python<'py>,
        max_records: usize,
        timeout: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let t = duration(timeout)?;
        let records = self.with_wait(py, !t.is_zero(), |c| {
            let mut records = Records::default();
            let mut rest = max_records.max(1);
            if !t.is_zero() {
                for r in c.poll(1, t)? {
                    r.with_ref(|r| records.push(r));
                }
                if records.records.is_empty() {
                    return Ok(records);
                }
                rest -= 1;
            }
            if rest > 0 {
                c.drain(rest, &mut |r| records.push(r))?;
            }
            Ok(records)
        })?;
        let records = records
            .into_py(py)?
            .into_iter()
            .map(|r| {
                let record = Bound::new(py, r)?;
                // A record holds only strings and bytes, so it can never be part of a cycle:
                // the cycle collector need not visit it. Untracked, a poll of 500 records no
                // longer makes every collection walk them (nor later ones, while a stage keeps
                // them).
                // SAFETY: `record` is a fully built object of a GC type; CPython checks that
                // it is tracked before untracking, and its deallocation does the same.
                unsafe { pyo3::ffi::PyObject_GC_UnTrack(record.as_ptr().cast()) };
                Ok(record)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, records)
    }

    /// Whether a `poll` now would return a record or rebalance events, taking none (memory
    /// transport only).
    fn has_pending(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |c| c.has_pending())
    }

    /// Event-time fence (memory transport only): `poll` then stops, on each partition, before
    /// the first record stamped later than `until_ms`; None lifts it.
    #[pyo3(signature = (until_ms))]
    fn set_read_until(&self, py: Python<'_>, until_ms: Option<i64>) -> PyResult<()> {
        self.with(py, |c| c.set_read_until(until_ms))
    }

    /// Commit `[(topic, partition, next_offset), ...]`, or with no argument the position after
    /// every record polled so far. Synchronous.
    #[pyo3(signature = (offsets=None))]
    fn commit(&self, py: Python<'_>, offsets: Option<Vec<(String, i32, i64)>>) -> PyResult<()> {
        let offsets = offsets.map(|v| {
            v.into_iter()
                .map(|(t, p, o)| (TopicPartition::new(t, p), o))
                .collect()
        });
        self.with(py, |c| c.commit(offsets))
    }

    #[pyo3(signature = (partitions, timeout=10.0))]
    fn committed(
        &self,
        py: Python<'_>,
        partitions: Vec<(String, i32)>,
        timeout: f64,
    ) -> PyResult<Vec<(String, i32, Option<i64>)>> {
        let t = duration(timeout)?;
        let got = self.with(py, |c| c.committed(&tps(partitions), t))?;
        Ok(got
            .into_iter()
            .map(|(tp, o)| (tp.topic, tp.partition, o))
            .collect())
    }

    fn seek(&self, py: Python<'_>, topic: String, partition: i32, offset: i64) -> PyResult<()> {
        self.with(py, |c| {
            c.seek(&TopicPartition::new(topic, partition), offset)
        })
    }

    fn pause(&self, py: Python<'_>, partitions: Vec<(String, i32)>) -> PyResult<()> {
        self.with(py, |c| c.pause(&tps(partitions)))
    }

    fn resume(&self, py: Python<'_>, partitions: Vec<(String, i32)>) -> PyResult<()> {
        self.with(py, |c| c.resume(&tps(partitions)))
    }

    fn assignment(&self, py: Python<'_>) -> PyResult<Vec<(String, i32)>> {
        Ok(tp_tuples(self.with(py, |c| c.assignment())?))
    }

    fn position(&self, py: Python<'_>) -> PyResult<Vec<(String, i32, i64)>> {
        let got = self.with(py, |c| c.position())?;
        Ok(got
            .into_iter()
            .map(|(tp, o)| (tp.topic, tp.partition, o))
            .collect())
    }

    #[pyo3(signature = (timeout=10.0))]
    fn lag(&self, py: Python<'_>, timeout: f64) -> PyResult<BTreeMap<(String, i32), i64>> {
        let t = duration(timeout)?;
        let got = self.with(py, |c| c.lag(t))?;
        Ok(got
            .into_iter()
            .map(|(tp, l)| ((tp.topic, tp.partition), l))
            .collect())
    }

    /// Rebalance events since the last call: `[("assigned" | "revoked" | "lost", [(topic, partition)])]`.
    fn rebalance_events(&self, py: Python<'_>) -> PyResult<Vec<(&'static str, Partitions)>> {
        let events = self.with(py, |c| Ok(c.take_rebalance_events()))?;
        Ok(events
            .into_iter()
            .map(|e| match e {
                RebalanceEvent::Assigned(p) => ("assigned", tp_tuples(p)),
                RebalanceEvent::Revoked(p) => ("revoked", tp_tuples(p)),
                RebalanceEvent::Lost(p) => ("lost", tp_tuples(p)),
            })
            .collect())
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.close())
    }
}

/// Topic administration on either transport.
#[pyclass(module = "kstrade._native", name = "Admin", frozen)]
pub struct PyAdmin {
    inner: Box<dyn kstrade_bus::Admin>,
}

#[pymethods]
impl PyAdmin {
    #[staticmethod]
    fn memory(broker: &PyMemoryBroker) -> Self {
        Self {
            inner: Box::new(MemoryAdmin::new(Arc::clone(&broker.inner))),
        }
    }

    #[staticmethod]
    fn kafka(py: Python<'_>, config: HashMap<String, String>) -> PyResult<Self> {
        let a = py
            .detach(|| KafkaAdmin::new(&config))
            .map_err(|e| err(py, e))?;
        Ok(Self { inner: Box::new(a) })
    }

    /// `specs`: `[(name, partitions, replication_factor, {config: value})]`. Returns
    /// `[(name, created)]`; `created` is False where the topic already existed.
    #[pyo3(signature = (specs, timeout=30.0))]
    fn create_topics(
        &self,
        py: Python<'_>,
        specs: Vec<(String, i32, i32, BTreeMap<String, String>)>,
        timeout: f64,
    ) -> PyResult<Vec<(String, bool)>> {
        let t = duration(timeout)?;
        let specs: Vec<TopicSpec> = specs
            .into_iter()
            .map(
                |(name, partitions, replication_factor, configs)| TopicSpec {
                    name,
                    partitions,
                    replication_factor,
                    configs,
                },
            )
            .collect();
        py.detach(|| self.inner.create_topics(&specs, t))
            .map_err(|e| err(py, e))
    }

    #[pyo3(signature = (names, timeout=30.0))]
    fn delete_topics(&self, py: Python<'_>, names: Vec<String>, timeout: f64) -> PyResult<()> {
        let t = duration(timeout)?;
        py.detach(|| self.inner.delete_topics(&names, t))
            .map_err(|e| err(py, e))
    }

    /// `[{"name", "partitions", "replication_factor", "configs"}]` as the cluster reports them.
    #[pyo3(signature = (names, timeout=30.0))]
    fn describe_topics<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        timeout: f64,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let t = duration(timeout)?;
        let described = py
            .detach(|| self.inner.describe_topics(&names, t))
            .map_err(|e| err(py, e))?;
        described
            .into_iter()
            .map(|d| {
                let dict = PyDict::new(py);
                dict.set_item("name", d.name)?;
                dict.set_item("partitions", d.partitions)?;
                dict.set_item("replication_factor", d.replication_factor)?;
                dict.set_item("configs", d.configs)?;
                Ok(dict)
            })
            .collect()
    }

    #[pyo3(signature = (timeout=30.0))]
    fn list_topics(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<String>> {
        let t = duration(timeout)?;
        py.detach(|| self.inner.list_topics(t))
            .map_err(|e| err(py, e))
    }

    #[pyo3(signature = (topic, timeout=30.0))]
    fn end_offsets(&self, py: Python<'_>, topic: String, timeout: f64) -> PyResult<Vec<i64>> {
        let t = duration(timeout)?;
        py.detach(|| self.inner.end_offsets(&topic, t))
            .map_err(|e| err(py, e))
    }

    /// Delete, from every topic but `keep`, the records every group reading it has committed
    /// (memory transport only: a replay's memory stays bounded). Returns the records deleted.
    #[pyo3(signature = (keep=Vec::new()))]
    fn purge_consumed(&self, py: Python<'_>, keep: Vec<String>) -> PyResult<u64> {
        py.detach(|| self.inner.purge_consumed(&keep))
            .map_err(|e| err(py, e))
    }
}

/// Kafka's murmur2 hash of `key` (Java client compatible).
#[pyfunction]
fn murmur2(key: &[u8]) -> i32 {
    partitioner::murmur2(key)
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
#[pyfunction]
fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    partitioner::partition_for_key(key, partitions)
}

/// The cluster's topic names, asked once within `timeout` seconds with these librdkafka
/// properties. Raises `BusError`; when the request fails, the message ends with what the client
/// heard while it waited (`the client said: ...`: a refused handshake or credentials).
#[pyfunction]
#[pyo3(signature = (config, timeout=10.0))]
fn probe_kafka(
    py: Python<'_>,
    config: HashMap<String, String>,
    timeout: f64,
) -> PyResult<Vec<String>> {
    let t = duration(timeout)?;
    py.detach(|| kafka::probe(&config, t))
        .map_err(|e| err(py, e))
}

#[pyfunction]
fn librdkafka_version() -> String {
    kafka::librdkafka_version()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BusError", m.py().get_type::<BusError>())?;
    m.add_class::<PyMemoryBroker>()?;
    m.add_class::<PyRecord>()?;
    m.add_class::<PyProducer>()?;
    m.add_class::<PyConsumer>()?;
    m.add_class::<PyAdmin>()?;
    m.add_function(wrap_pyfunction!(murmur2, m)?)?;
    m.add_function(wrap_pyfunction!(partition_for_key, m)?)?;
    m.add_function(wrap_pyfunction!(librdkafka_version, m)?)?;
    m.add_function(wrap_pyfunction!(probe_kafka, m)?)?;
    Ok(())
}
