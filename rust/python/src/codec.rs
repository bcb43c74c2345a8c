//! Bindings for `kstrade-codec`: encode/decode of candles, feature vectors and predictions,
//! one record at a time or a whole batch at once. Batches run with the GIL released and come
//! back columnar (numeric columns as little-endian buffers that `kstrade.schemas.codec` wraps
//! in numpy arrays without a copy), so a bus path never touches a message in Python.
//!
//! Records cross as dicts shaped like fastavro's Avro values, except `timestamp`, which is
//! epoch microseconds (an int); an optional field may be None or, as with fastavro, left out.
//! Every failure raises `CodecError` with stable `.code`, and `.schema`, `.field`, `.topic`,
//! `.offset`.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use kstrade_codec::{
    self as codec, AvroRecord, Candle, CandleOrigin, CodecError as RsCodecError, Context,
    Direction, FeatureVector, ModelType, Prediction,
};

create_exception!(
    kstrade._native,
    CodecError,
    PyValueError,
    "A message could not be encoded or decoded; `.code` is a stable error code, `.schema`, `.field`, `.topic` and `.offset` say where."
);

fn err(py: Python<'_>, e: RsCodecError) -> PyErr {
    let pyerr = CodecError::new_err(e.to_string());
    let v = pyerr.value(py);
    let at = e.location();
    // If an attribute cannot be set, the message still says everything.
    let _ = v.setattr("code", e.code());
    let _ = v.setattr("schema", at.schema);
    let _ = v.setattr("field", at.field.as_str());
    let _ = v.setattr("topic", at.topic.as_deref());
    let _ = v.setattr("offset", at.offset);
    pyerr
}

fn invalid(py: Python<'_>, schema: &'static str, field: &str, reason: String) -> PyErr {
    err(
        py,
        RsCodecError::Invalid {
            at: codec::Location::new(schema, field),
            reason,
        },
    )
}

/// Reads one field of an input dict, turning a missing key or a wrong type into `CodecError`.
/// Keys are interned once (`get!`), so a lookup allocates no Python string.
fn get<'py, T>(
    d: &Bound<'py, PyDict>,
    schema: &'static str,
    key: &Bound<'py, PyString>,
    field: &str,
) -> PyResult<T>
where
    T: for<'a> FromPyObject<'a, 'py>,
{
    let py = d.py();
    match d.get_item(key)? {
        None => Err(invalid(py, schema, field, "missing".into())),
        Some(v) => v.extract::<T>().map_err(|_| {
            invalid(
                py,
                schema,
                field,
                format!(
                    "wrong type {}",
                    v.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ),
            )
        }),
    }
}

/// An optional field (a `["null", T]` union): a missing key or None is None.
fn get_optional<'py, T>(
    d: &Bound<'py, PyDict>,
    schema: &'static str,
    key: &Bound<'py, PyString>,
    field: &str,
) -> PyResult<Option<T>>
where
    T: for<'a> FromPyObject<'a, 'py>,
{
    match d.get_item(key)? {
        Some(v) if !v.is_none() => get(d, schema, key, field).map(Some),
        _ => Ok(None),
    }
}

macro_rules! get_optional {
    ($d:expr, $schema:expr, $field:literal) => {
        get_optional($d, $schema, intern!($d.py(), $field), $field)
    };
}

macro_rules! get {
    ($d:expr, $schema:expr, $field:literal) => {
        get($d, $schema, intern!($d.py(), $field), $field)
    };
}

macro_rules! set {
    ($d:expr, $key:literal, $value:expr) => {
        $d.set_item(intern!($d.py(), $key), $value)
    };
}

/// Columns of a batch of records into `out`, one per `"name": kind = |r| value`, in order:
/// `i64`/`f64` pack the values as little-endian bytes (numpy reads them without a copy),
/// `f64_flat` packs the values of every record back to back, `list` builds a Python list.
macro_rules! columns {
    ($py:expr, $recs:expr, $out:expr; $($name:literal: $kind:ident = |$r:ident| $value:expr),+ $(,)?) => {
        $( set!($out, $name, columns!(@$kind $py, $recs.iter(), |$r| $value))?; )+
    };
    (@i64 $py:expr, $it:expr, $f:expr) => { le_i64($py, $it.map($f)) };
    (@f64 $py:expr, $it:expr, $f:expr) => { le_f64($py, $it.map($f)) };
    (@f64_flat $py:expr, $it:expr, $f:expr) => { le_f64($py, $it.flat_map($f)) };
    (@list $py:expr, $it:expr, $f:expr) => { PyList::new($py, $it.map($f))? };
}

fn le_f64(py: Python<'_>, v: impl Iterator<Item = f64>) -> Bound<'_, PyBytes> {
    let buf: Vec<u8> = v.flat_map(f64::to_le_bytes).collect();
    PyBytes::new(py, &buf)
}

fn le_i64(py: Python<'_>, v: impl Iterator<Item = i64>) -> Bound<'_, PyBytes> {
    let buf: Vec<u8> = v.flat_map(i64::to_le_bytes).collect();
    PyBytes::new(py, &buf)
}

/// Conversion between a hot record and its Python forms (type conversion only, no logic).
trait PyConvert: AvroRecord + Send + Sync {
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self>;
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>>;
    fn columns<'py>(py: Python<'py>, recs: &[Self], out: &Bound<'py, PyDict>) -> PyResult<()>;
}

impl PyConvert for Candle {
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let s = Self::SCHEMA;
        let origin: Option<String> = get_optional!(d, s, "origin")?;
        let origin = origin
            .map(|o| {
                CandleOrigin::from_symbol(&o)
                    .ok_or_else(|| invalid(d.py(), s, "origin", format!("unknown symbol '{o}'")))
            })
            .transpose()?;
        Ok(Self {
            timestamp_us: get!(d, s, "timestamp")?,
            symbol: get!(d, s, "symbol")?,
            interval: get!(d, s, "interval")?,
            open: get!(d, s, "open")?,
            high: get!(d, s, "high")?,
            low: get!(d, s, "low")?,
            close: get!(d, s, "close")?,
            volume: get!(d, s, "volume")?,
            source: get!(d, s, "source")?,
            minutes: get_optional!(d, s, "minutes")?,
            origin,
        })
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        set!(d, "timestamp", self.timestamp_us)?;
        set!(d, "symbol", &self.symbol)?;
        set!(d, "interval", &self.interval)?;
        set!(d, "open", self.open)?;
        set!(d, "high", self.high)?;
        set!(d, "low", self.low)?;
        set!(d, "close", self.close)?;
        set!(d, "volume", self.volume)?;
        set!(d, "source", &self.source)?;
        set!(d, "minutes", self.minutes)?;
        set!(d, "origin", self.origin.map(CandleOrigin::symbol))?;
        Ok(d)
    }

    /// `minutes` is an int64 column with -1 where it is not stated (null); `origin` a list of
    /// symbols and None.
    fn columns<'py>(py: Python<'py>, recs: &[Self], out: &Bound<'py, PyDict>) -> PyResult<()> {
        let (trades, rest) = (intern!(py, "TRADES"), intern!(py, "REST"));
        let origin = |o| match o {
            CandleOrigin::Trades => trades,
            CandleOrigin::Rest => rest,
        };
        columns!(py, recs, out;
            "timestamp": i64 = |r| r.timestamp_us,
            "symbol": list = |r| r.symbol.as_str(),
            "interval": list = |r| r.interval.as_str(),
            "open": f64 = |r| r.open,
            "high": f64 = |r| r.high,
            "low": f64 = |r| r.low,
            "close": f64 = |r| r.close,
            "volume": f64 = |r| r.volume,
            "source": list = |r| r.source.as_str(),
            "minutes": i64 = |r| r.minutes.map_or(-1, i64::from),
            "origin": list = |r| r.origin.map(origin),
        );
        Ok(())
    }
}

impl PyConvert for FeatureVector {
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let s = Self::SCHEMA;
        Ok(Self {
            timestamp_us: get!(d, s, "timestamp")?,
            symbol: get!(d, s, "symbol")?,
            version: get!(d, s, "version")?,
            names: get!(d, s, "names")?,
            values: get!(d, s, "values")?,
        })
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        set!(d, "timestamp", self.timestamp_us)?;
        set!(d, "symbol", &self.symbol)?;
        set!(d, "version", &self.version)?;
        set!(d, "names", &self.names)?;
        set!(d, "values", &self.values)?;
        Ok(d)
    }

    /// `values` is flat (all vectors back to back) with `lengths`; feature lists are sent once
    /// each in `feature_sets`, and `feature_set` maps each record to its list (batches almost
    /// always share one list, so this avoids n copies of 50+ names).
    fn columns<'py>(py: Python<'py>, recs: &[Self], out: &Bound<'py, PyDict>) -> PyResult<()> {
        let mut sets: Vec<&[String]> = Vec::new();
        let mut set_of = Vec::with_capacity(recs.len());
        for r in recs {
            let i = match sets.iter().position(|s| *s == r.names.as_slice()) {
                Some(i) => i,
                None => {
                    sets.push(&r.names);
                    sets.len() - 1
                }
            };
            set_of.push(i as i64);
        }
        columns!(py, recs, out;
            "timestamp": i64 = |r| r.timestamp_us,
            "symbol": list = |r| r.symbol.as_str(),
            "version": list = |r| r.version.as_str(),
        );
        set!(
            out,
            "feature_sets",
            PyList::new(py, sets.iter().map(|s| s.to_vec()))?
        )?;
        set!(out, "feature_set", le_i64(py, set_of.into_iter()))?;
        columns!(py, recs, out;
            "lengths": i64 = |r| r.values.len() as i64,
            "values": f64_flat = |r| r.values.iter().copied(),
        );
        Ok(())
    }
}

impl PyConvert for Prediction {
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let s = Self::SCHEMA;
        let py = d.py();
        let model_type: String = get!(d, s, "model_type")?;
        let model_type = ModelType::from_symbol(&model_type).ok_or_else(|| {
            invalid(
                py,
                s,
                "model_type",
                format!("unknown symbol '{model_type}'"),
            )
        })?;
        let p: Bound<'_, PyDict> = get!(d, s, "prediction")?;
        let direction: String = get(&p, s, intern!(py, "direction"), "prediction.direction")?;
        let direction = Direction::from_symbol(&direction).ok_or_else(|| {
            invalid(
                py,
                s,
                "prediction.direction",
                format!("unknown symbol '{direction}'"),
            )
        })?;
        Ok(Self {
            timestamp_us: get!(d, s, "timestamp")?,
            symbol: get!(d, s, "symbol")?,
            model_type,
            model_version: get!(d, s, "model_version")?,
            direction,
            probability: get(&p, s, intern!(py, "probability"), "prediction.probability")?,
            confidence: get(&p, s, intern!(py, "confidence"), "prediction.confidence")?,
            inference_time_ms: get!(d, s, "inference_time_ms")?,
        })
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = PyDict::new(py);
        set!(p, "direction", self.direction.symbol())?;
        set!(p, "probability", self.probability)?;
        set!(p, "confidence", self.confidence)?;
        let d = PyDict::new(py);
        set!(d, "timestamp", self.timestamp_us)?;
        set!(d, "symbol", &self.symbol)?;
        set!(d, "model_type", self.model_type.symbol())?;
        set!(d, "model_version", &self.model_version)?;
        set!(d, "prediction", p)?;
        set!(d, "inference_time_ms", self.inference_time_ms)?;
        Ok(d)
    }

    fn columns<'py>(py: Python<'py>, recs: &[Self], out: &Bound<'py, PyDict>) -> PyResult<()> {
        columns!(py, recs, out;
            "timestamp": i64 = |r| r.timestamp_us,
            "symbol": list = |r| r.symbol.as_str(),
            "model_type": list = |r| r.model_type.symbol(),
            "model_version": list = |r| r.model_version.as_str(),
        );
        // The design's -1 / 0 / 1, ready for arithmetic.
        columns!(py, recs, out;
            "direction": i64 = |r| i64::from(r.direction.sign()),
            "probability": f64 = |r| r.probability,
            "confidence": f64 = |r| r.confidence,
            "inference_time_ms": f64 = |r| r.inference_time_ms,
        );
        Ok(())
    }
}

/// What a signal's stored fields are to Python: the enums as their schema indexes.
type SignalTuple = (
    i64,
    String,
    String,
    usize,
    usize,
    f64,
    Option<usize>,
    f64,
    f64,
    f64,
    Option<f64>,
);

/// `(timestamp_us, symbol, signal_id, stage, direction, confidence, tier, entry_price,
/// stop_loss, take_profit, position_size)` of a bare Avro `Signal` v1 body, checked as
/// `Codec(Signal).decode` checks it (`kstrade_codec::signal`). Raises `CodecError`.
#[pyfunction]
fn read_signal_fields(py: Python<'_>, body: &[u8]) -> PyResult<SignalTuple> {
    let f = codec::signal::read_signal_fields(body).map_err(|e| err(py, e))?;
    Ok((
        f.timestamp_us,
        f.symbol,
        f.signal_id,
        f.stage,
        f.direction,
        f.confidence,
        f.tier,
        f.entry_price,
        f.stop_loss,
        f.take_profit,
        f.position_size,
    ))
}

/// Picks a few named values from feature vector bodies (`kstrade_codec::feature_pick`): what the
/// signals stage uses of a vector, without decoding its ~90 names and values into Python.
#[pyclass(module = "kstrade._native", name = "FeaturePicker", frozen)]
pub struct FeaturePicker {
    inner: std::sync::Mutex<codec::feature_pick::FeaturePick>,
}

#[pymethods]
impl FeaturePicker {
    #[new]
    fn new(wanted: Vec<String>) -> Self {
        Self {
            inner: std::sync::Mutex::new(codec::feature_pick::FeaturePick::new(wanted)),
        }
    }

    #[getter]
    fn wanted(&self) -> Vec<String> {
        self.lock().wanted().to_vec()
    }

    /// `(timestamp_us, symbol, values)` of a bare Avro `FeatureVector` v1 body, `values[i]` the
    /// value of `wanted[i]` or None; raises `CodecError` on what the full decode would refuse
    /// (and may refuse more: the caller then decodes in full, which judges the record).
    fn read(&self, py: Python<'_>, body: &[u8]) -> PyResult<(i64, String, Vec<Option<f64>>)> {
        let picked = self.lock().read(body).map_err(|e| err(py, e))?;
        Ok((picked.timestamp_us, picked.symbol, picked.values))
    }
}

impl FeaturePicker {
    fn lock(&self) -> std::sync::MutexGuard<'_, codec::feature_pick::FeaturePick> {
        // A panic while held cannot leave the cache half-written in a way that matters: the
        // next read either matches the cached names exactly or recomputes them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ctx(topic: Option<String>, offset: Option<i64>) -> Context {
    Context { topic, offset }
}

/// The codec is panic-free by construction (and fuzzed for it); should a bug ever panic on
/// hostile bytes anyway, the message still becomes a `CodecError` for the dead-letter path
/// instead of a `PanicException` that would take the stage down.
fn guarded_decode<T: AvroRecord>(
    data: &[u8],
    version: Option<u32>,
    c: &Context,
) -> Result<T, RsCodecError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        codec::decode::<T>(data, version, c)
    }))
    .unwrap_or_else(|_| {
        Err(RsCodecError::Malformed {
            at: codec::Location {
                schema: T::SCHEMA,
                field: String::new(),
                topic: c.topic.clone(),
                offset: c.offset,
            },
            reason: "internal decoder error (a bug: please report it with the message bytes)"
                .into(),
        })
    })
}

fn encode_one<T: PyConvert>(py: Python<'_>, record: &Bound<'_, PyDict>) -> PyResult<Py<PyBytes>> {
    let r = T::from_dict(record)?;
    let bytes = codec::encode(&r).map_err(|e| err(py, e))?;
    Ok(PyBytes::new(py, &bytes).unbind())
}

fn decode_one<'py, T: PyConvert>(
    py: Python<'py>,
    data: &[u8],
    version: Option<u32>,
    topic: Option<String>,
    offset: Option<i64>,
) -> PyResult<Bound<'py, PyDict>> {
    let r: T = guarded_decode(data, version, &ctx(topic, offset)).map_err(|e| err(py, e))?;
    r.to_dict(py)
}

/// Encoded bodies as Python bytes, in order.
fn to_bytes(py: Python<'_>, encoded: &[Vec<u8>]) -> Vec<Py<PyBytes>> {
    encoded
        .iter()
        .map(|b| PyBytes::new(py, b).unbind())
        .collect()
}

fn encode_many<T: PyConvert>(
    py: Python<'_>,
    records: &Bound<'_, PyList>,
) -> PyResult<Vec<Py<PyBytes>>> {
    let recs: Vec<T> = records
        .iter()
        .map(|r| {
            T::from_dict(
                r.cast::<PyDict>()
                    .map_err(|_| invalid(py, T::SCHEMA, "", "not a dict".into()))?,
            )
        })
        .collect::<PyResult<_>>()?;
    let encoded = py
        .detach(|| {
            recs.iter()
                .map(codec::encode)
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| err(py, e))?;
    Ok(to_bytes(py, &encoded))
}

/// Decodes a batch. `errors="raise"` fails on the first bad message; `errors="skip"` leaves bad
/// messages out and lists them in `failed` as (position, CodecError) for the dead-letter path,
/// with `rows` giving the input position of each decoded record.
fn decode_many<'py, T: PyConvert>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    version: Option<u32>,
    topic: Option<String>,
    offsets: Option<Vec<i64>>,
    errors: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let skip = match errors {
        "raise" => false,
        "skip" => true,
        other => {
            return Err(PyValueError::new_err(format!(
                "errors must be 'raise' or 'skip', not {other:?}"
            )))
        }
    };
    if let Some(o) = &offsets {
        if o.len() != values.len() {
            return Err(PyValueError::new_err(format!(
                "{} offsets for {} values",
                o.len(),
                values.len()
            )));
        }
    }
    let items: Vec<Bound<'py, PyBytes>> = values
        .iter()
        .map(|v| {
            v.cast_into::<PyBytes>()
                .map_err(|_| PyValueError::new_err("values must be bytes"))
        })
        .collect::<PyResult<_>>()?;
    let slices: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
    let results: Vec<Result<T, RsCodecError>> = py.detach(|| {
        let mut out = Vec::with_capacity(slices.len());
        for (i, s) in slices.iter().enumerate() {
            let c = ctx(topic.clone(), offsets.as_ref().map(|o| o[i]));
            let r = guarded_decode::<T>(s, version, &c);
            let bad = r.is_err();
            out.push(r);
            if bad && !skip {
                break;
            }
        }
        out
    });
    let mut good = Vec::with_capacity(results.len());
    let mut rows = Vec::with_capacity(results.len());
    let failed = PyList::empty(py);
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(rec) => {
                good.push(rec);
                rows.push(i as i64);
            }
            Err(e) if !skip => return Err(err(py, e)),
            Err(e) => failed.append((i, err(py, e).value(py)))?,
        }
    }
    let out = PyDict::new(py);
    set!(out, "count", good.len())?;
    set!(out, "rows", le_i64(py, rows.into_iter()))?;
    set!(out, "failed", failed)?;
    T::columns(py, &good, &out)?;
    Ok(out)
}

macro_rules! bindings {
    ($t:ty, $enc:ident, $dec:ident, $enc_many:ident, $dec_many:ident) => {
        #[pyfunction]
        fn $enc(py: Python<'_>, record: &Bound<'_, PyDict>) -> PyResult<Py<PyBytes>> {
            encode_one::<$t>(py, record)
        }

        #[pyfunction]
        #[pyo3(signature = (data, *, version=None, topic=None, offset=None))]
        fn $dec<'py>(
            py: Python<'py>,
            data: &[u8],
            version: Option<u32>,
            topic: Option<String>,
            offset: Option<i64>,
        ) -> PyResult<Bound<'py, PyDict>> {
            decode_one::<$t>(py, data, version, topic, offset)
        }

        #[pyfunction]
        fn $enc_many(py: Python<'_>, records: &Bound<'_, PyList>) -> PyResult<Vec<Py<PyBytes>>> {
            encode_many::<$t>(py, records)
        }

        #[pyfunction]
        #[pyo3(signature = (values, *, version=None, topic=None, offsets=None, errors="raise"))]
        fn $dec_many<'py>(
            py: Python<'py>,
            values: &Bound<'py, PyList>,
            version: Option<u32>,
            topic: Option<String>,
            offsets: Option<Vec<i64>>,
            errors: &str,
        ) -> PyResult<Bound<'py, PyDict>> {
            decode_many::<$t>(py, values, version, topic, offsets, errors)
        }
    };
}

bindings!(
    Candle,
    encode_candle,
    decode_candle,
    encode_candles,
    decode_candles
);
bindings!(
    FeatureVector,
    encode_feature_vector,
    decode_feature_vector,
    encode_feature_vectors,
    decode_feature_vectors
);
bindings!(
    Prediction,
    encode_prediction,
    decode_prediction,
    encode_predictions,
    decode_predictions
);

/// Bare Avro `FeatureVector` bodies for some columns of a feature-major matrix of float64
/// (`matrix`: `names.len()` rows of one value per candle, as `FeatureEngine.update_batch` returns
/// it): body `i` is column `columns[i]` at `timestamps_us[i]`. The same bytes as
/// `encode_feature_vectors` of the equivalent dicts, without a dict or a float object per value,
/// encoded with the GIL released. A non-finite value raises `CodecError`, as there.
#[pyfunction]
fn encode_feature_columns(
    py: Python<'_>,
    symbol: String,
    version: String,
    names: Vec<String>,
    matrix: &[u8],
    columns: Vec<usize>,
    timestamps_us: Vec<i64>,
) -> PyResult<Vec<Py<PyBytes>>> {
    let rows = names.len();
    let width = (matrix.len() / 8).checked_div(rows).unwrap_or(0);
    if matrix.len() != rows * width * 8 || columns.len() != timestamps_us.len() {
        return Err(invalid(
            py,
            FeatureVector::SCHEMA,
            "values",
            "the matrix is not names x candles of float64, or columns and timestamps differ in length".into(),
        ));
    }
    if let Some(&c) = columns.iter().find(|&&c| c >= width) {
        return Err(invalid(
            py,
            FeatureVector::SCHEMA,
            "values",
            format!("column {c} of a matrix {width} wide"),
        ));
    }
    let value = |row: usize, column: usize| {
        let at = (row * width + column) * 8;
        f64::from_ne_bytes(matrix[at..at + 8].try_into().expect("8 bytes"))
    };
    let encoded = py
        .detach(|| {
            // One vector reused: only the time and the values change from column to column.
            let mut vector = FeatureVector {
                timestamp_us: 0,
                symbol,
                version,
                names,
                values: Vec::with_capacity(rows),
            };
            columns
                .iter()
                .zip(&timestamps_us)
                .map(|(&column, &at)| {
                    vector.timestamp_us = at;
                    vector.values.clear();
                    vector
                        .values
                        .extend((0..rows).map(|row| value(row, column)));
                    codec::encode(&vector)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|e| err(py, e))?;
    Ok(to_bytes(py, &encoded))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CodecError", py.get_type::<CodecError>())?;
    let versions = PyDict::new(py);
    versions.set_item(Candle::SCHEMA, Candle::VERSION)?;
    versions.set_item(FeatureVector::SCHEMA, FeatureVector::VERSION)?;
    versions.set_item(Prediction::SCHEMA, Prediction::VERSION)?;
    m.add("NATIVE_SCHEMA_VERSIONS", versions)?;
    // Every writer version each layout reads natively (the current one and older ones whose
    // fields are a prefix of it); others are resolved by fastavro.
    let readable = PyDict::new(py);
    readable.set_item(Candle::SCHEMA, codec::native_versions::<Candle>())?;
    readable.set_item(
        FeatureVector::SCHEMA,
        codec::native_versions::<FeatureVector>(),
    )?;
    readable.set_item(Prediction::SCHEMA, codec::native_versions::<Prediction>())?;
    m.add("NATIVE_READ_VERSIONS", readable)?;
    let files = PyDict::new(py);
    for (path, text) in kstrade_codec::embedded::SCHEMA_FILES {
        files.set_item(*path, *text)?;
    }
    m.add("SCHEMA_FILES", files)?;
    m.add_function(wrap_pyfunction!(read_signal_fields, m)?)?;
    m.add_class::<FeaturePicker>()?;
    m.add_function(wrap_pyfunction!(encode_candle, m)?)?;
    m.add_function(wrap_pyfunction!(decode_candle, m)?)?;
    m.add_function(wrap_pyfunction!(encode_candles, m)?)?;
    m.add_function(wrap_pyfunction!(decode_candles, m)?)?;
    m.add_function(wrap_pyfunction!(encode_feature_vector, m)?)?;
    m.add_function(wrap_pyfunction!(decode_feature_vector, m)?)?;
    m.add_function(wrap_pyfunction!(encode_feature_vectors, m)?)?;
    m.add_function(wrap_pyfunction!(encode_feature_columns, m)?)?;
    m.add_function(wrap_pyfunction!(decode_feature_vectors, m)?)?;
    m.add_function(wrap_pyfunction!(encode_prediction, m)?)?;
    m.add_function(wrap_pyfunction!(decode_prediction, m)?)?;
    m.add_function(wrap_pyfunction!(encode_predictions, m)?)?;
    m.add_function(wrap_pyfunction!(decode_predictions, m)?)?;
    Ok(())
}
