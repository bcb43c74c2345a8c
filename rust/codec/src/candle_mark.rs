//! The execution stage's read of a candle (`kstrade.execution.stage`): a paper position is
//! marked, and its stop and target triggered, on each base-interval candle, so the stage needs
//! only the symbol, open, high, low and close, and the record's origin time.
//!
//! A record is read here only when the Python path would read exactly the same from it and
//! accept it: the headers exactly as `Codec.headers` writes them for the current bare Avro
//! candle, and a body that `Candle` validates (`_valid_candle` in the stage). Anything else is
//! left to the Python path (None), which decodes through the model and dead-letters a bad
//! record with the same error as always. Stricter than needed is safe; looser never is.

use std::ops::RangeInclusive;

use crate::records::Candle;
use crate::Context;

/// What a current candle record looks like to the stage, and what the model accepts.
#[derive(Debug, Clone)]
pub struct MarkSpec {
    /// The `schema` header's value (`kstrade.Candle`).
    pub schema: Vec<u8>,
    /// The current schema version: the body's layout and the `schema_version` header (decimal).
    pub version: u32,
    pub version_header: Vec<u8>,
    /// The `encoding` header's value (`avro`).
    pub encoding: Vec<u8>,
    /// Each interval the model knows, with how many 1m candles make one (INTERVAL_MINUTES).
    pub intervals: Vec<(String, i32)>,
    /// The `origin` symbols the model knows (CandleOrigin).
    pub origins: Vec<String>,
    /// The open times (epoch microseconds) the stage's check lets through.
    pub micros: RangeInclusive<i64>,
}

/// A candle as the stage marks positions with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub symbol: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// The record's `origin_ns` header.
    pub origin_ns: i64,
}

/// The header names `Codec.headers` writes, in its order.
const HEADERS: [&str; 5] = ["schema", "schema_version", "origin_ns", "stage", "encoding"];

/// The origin time when the headers are exactly the five `Codec.headers` writes for the
/// current candle, in that order, with the values `_current_candle_origin` accepts: the
/// schema, version and encoding as in `spec`, an origin of plain ASCII digits (read as an
/// i64; a longer one is left to Python, whose int has no bound) and an ASCII stage.
pub fn origin_ns<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    spec: &MarkSpec,
) -> Option<i64> {
    let mut values: [&[u8]; 5] = [&[]; 5];
    let mut n = 0;
    for (name, value) in headers {
        if n == HEADERS.len() || name != HEADERS[n] {
            return None;
        }
        values[n] = value?;
        n += 1;
    }
    let [schema, version, origin, stage, encoding] = values;
    if n != HEADERS.len()
        || schema != spec.schema.as_slice()
        || version != spec.version_header.as_slice()
        || encoding != spec.encoding.as_slice()
        || !stage.is_ascii()
        || origin.is_empty()
        || !origin.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(origin).ok()?.parse().ok()
}

/// The candle a current body holds, when the model certainly accepts it as decoded: a
/// representable open time, a symbol, a known interval and provenance, finite prices and
/// volume, volume >= 0 and low <= open, close <= high.
pub fn read_body(body: &[u8], spec: &MarkSpec) -> Option<Candle> {
    let context = Context {
        topic: None,
        offset: None,
    };
    let c: Candle = std::panic::catch_unwind(|| {
        crate::decode::<Candle>(body, Some(spec.version), &context).ok()
    })
    .ok()??;
    let &(_, most) = spec.intervals.iter().find(|(i, _)| *i == c.interval)?;
    let provenance = c.minutes.is_none_or(|m| (1..=most).contains(&m))
        && c.origin.is_none_or(|o| {
            c.interval == "1m" && spec.origins.iter().any(|known| known == o.symbol())
        });
    let finite = [c.open, c.high, c.low, c.close, c.volume]
        .iter()
        .all(|x| x.is_finite());
    let ok = spec.micros.contains(&c.timestamp_us)
        && !c.symbol.is_empty()
        && provenance
        && finite
        && c.volume >= 0.0
        && c.low <= c.open.min(c.close)
        && c.open.max(c.close) <= c.high;
    ok.then_some(c)
}

/// `origin_ns` and `read_body` together: the mark of a current, valid candle record.
pub fn read<'a>(
    headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    body: &[u8],
    spec: &MarkSpec,
) -> Option<Mark> {
    let origin_ns = origin_ns(headers, spec)?;
    let c = read_body(body, spec)?;
    Some(Mark {
        symbol: c.symbol,
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        origin_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AvroRecord, CandleOrigin};

    fn spec() -> MarkSpec {
        MarkSpec {
            schema: b"kstrade.Candle".to_vec(),
            version: Candle::VERSION,
            version_header: Candle::VERSION.to_string().into_bytes(),
            encoding: b"avro".to_vec(),
            intervals: vec![("1m".into(), 1), ("5m".into(), 5)],
            origins: vec!["TRADES".into(), "REST".into()],
            micros: 0..=4_000_000_000_000_000,
        }
    }

    fn candle() -> Candle {
        Candle {
            timestamp_us: 1_767_600_000_000_000,
            symbol: "BTC-USD".into(),
            interval: "1m".into(),
            open: 100.0,
            high: 101.0,
            low: 99.0,
            close: 100.5,
            volume: 2.0,
            source: "test".into(),
            minutes: Some(1),
            origin: Some(CandleOrigin::Trades),
        }
    }

    fn headers(origin: &'static [u8]) -> Vec<(&'static str, Option<&'static [u8]>)> {
        vec![
            ("schema", Some(b"kstrade.Candle".as_slice())),
            ("schema_version", Some(b"2".as_slice())),
            ("origin_ns", Some(origin)),
            ("stage", Some(b"ingest".as_slice())),
            ("encoding", Some(b"avro".as_slice())),
        ]
    }

    fn mark(c: &Candle, h: &[(&str, Option<&[u8]>)]) -> Option<Mark> {
        let body = crate::encode(c).unwrap();
        read(h.iter().copied(), &body, &spec())
    }

    /// The body of `candle()` with one double (found by its value) replaced: the encoder
    /// refuses a non-finite one, as a writer here would; a foreign writer need not.
    fn patched(old: f64, new: f64) -> Vec<u8> {
        let mut body = crate::encode(&candle()).unwrap();
        let at = body
            .windows(8)
            .position(|w| w == old.to_le_bytes())
            .expect("the value is in the body");
        body[at..at + 8].copy_from_slice(&new.to_le_bytes());
        body
    }

    #[test]
    fn a_current_valid_candle_is_read() {
        assert_eq!(Candle::VERSION, 2, "the headers below name version 2");
        let got = mark(&candle(), &headers(b"0042")).unwrap();
        assert_eq!(
            got,
            Mark {
                symbol: "BTC-USD".into(),
                open: 100.0,
                high: 101.0,
                low: 99.0,
                close: 100.5,
                origin_ns: 42
            }
        );
    }

    #[test]
    fn headers_other_than_the_codecs_are_left_to_python() {
        let c = candle();
        for origin in [
            b"".as_slice(),
            b"-5",
            b" 7",
            b"1e3",
            b"99999999999999999999",
        ] {
            let mut h = headers(b"1");
            h[2].1 = Some(origin);
            assert_eq!(mark(&c, &h), None, "{origin:?}");
        }
        let mut h = headers(b"1");
        h.swap(0, 2); // the same headers in another order
        assert_eq!(mark(&c, &h), None);
        let mut h = headers(b"1");
        h.pop(); // no encoding
        assert_eq!(mark(&c, &h), None);
        let mut h = headers(b"1");
        h.push(("origin_ns", Some(b"2".as_slice()))); // one more
        assert_eq!(mark(&c, &h), None);
        for (i, value) in [
            (0, b"kstrade.Signal".as_slice()),
            (1, b"1"),
            (4, b"json"),
            (3, b"t\xe9"),
        ] {
            let mut h = headers(b"1");
            h[i].1 = Some(value);
            assert_eq!(mark(&c, &h), None, "header {i}");
        }
        let mut h = headers(b"1");
        h[3].1 = None; // a null stage
        assert_eq!(mark(&c, &h), None);
    }

    #[test]
    fn a_candle_the_model_refuses_is_left_to_python() {
        let h = headers(b"1");
        for (old, new) in [(100.0, f64::NAN), (101.0, f64::INFINITY), (2.0, f64::NAN)] {
            let body = patched(old, new);
            assert!(read_body(&patched(old, old), &spec()).is_some());
            assert_eq!(
                read(h.iter().copied(), &body, &spec()),
                None,
                "{old} -> {new}"
            );
        }
        let bad: Vec<fn(&mut Candle)> = vec![
            |c| c.volume = -1.0,
            |c| c.low = 100.2,
            |c| c.high = 100.4,
            |c| c.symbol.clear(),
            |c| c.interval = "2m".into(),
            |c| c.minutes = Some(0),
            |c| c.minutes = Some(2),
            |c| {
                c.interval = "5m".into();
                c.minutes = Some(5); // a 5m candle may say its minutes, not an origin
            },
            |c| c.timestamp_us = -1,
        ];
        for (i, change) in bad.into_iter().enumerate() {
            let mut c = candle();
            change(&mut c);
            assert_eq!(mark(&c, &headers(b"1")), None, "case {i}");
        }
        let mut c = candle();
        c.interval = "5m".into();
        c.minutes = Some(5);
        c.origin = None;
        assert!(mark(&c, &headers(b"1")).is_some());
        assert_eq!(read(h.iter().copied(), b"\x02garbage", &spec()), None);
    }
}
