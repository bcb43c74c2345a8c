//! A few named values of a `FeatureVector` (`features.aggregated.*`), read straight from a bare
//! Avro v1 body. The signals stage reads every vector but uses about five of its ~90 values (the
//! ATR, the timeframe alignment, the volatility regime); decoding the whole vector into Python
//! names and values cost more than the decision itself.
//!
//! The reader accepts exactly what `Codec(FeatureVector).decode` accepts for the fields it
//! checks (non-empty symbol and version, names unique, as many finite values as names, nothing
//! after the record); on anything else it returns the error, and the caller takes the full
//! decode, which judges the record as it always did. Vectors of one stream repeat one list of
//! names: the reader keeps the last list's bytes, and a body whose names are those same bytes
//! reuses the positions found for them (no string is compared or built).

use std::collections::HashSet;

use crate::avro::Reader;
use crate::error::{CodecError, CodecResult};

pub const SCHEMA: &str = "kstrade.FeatureVector";

/// What a pick gives: the vector's time and symbol, and per wanted name its value (None: the
/// vector has no such feature).
#[derive(Debug, Clone, PartialEq)]
pub struct Picked {
    pub timestamp_us: i64,
    pub symbol: String,
    pub values: Vec<Option<f64>>,
}

/// Picks the values of `wanted` names from feature vector bodies.
#[derive(Debug, Clone)]
pub struct FeaturePick {
    wanted: Vec<String>,
    /// The encoded names array of the last well-formed vector (its terminating 0 included),
    /// the number of names in it, and where each wanted name sits in it.
    last_names: Vec<u8>,
    last_count: usize,
    positions: Vec<Option<usize>>,
}

fn invalid(r: &Reader<'_>, field: &str, reason: impl Into<String>) -> CodecError {
    CodecError::Invalid {
        at: r.at(field),
        reason: reason.into(),
    }
}

impl FeaturePick {
    pub fn new(wanted: Vec<String>) -> Self {
        let positions = vec![None; wanted.len()];
        Self {
            wanted,
            last_names: Vec::new(),
            last_count: 0,
            positions,
        }
    }

    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    /// The wanted values of one bare Avro `FeatureVector` v1 body, or the reason it is not one
    /// this reader accepts.
    pub fn read(&mut self, body: &[u8]) -> CodecResult<Picked> {
        let mut r = Reader::new(body, SCHEMA);
        let timestamp_us = r.long("timestamp")?;
        let symbol = r.string("symbol")?;
        let version = r.str("version")?;
        if symbol.is_empty() {
            return Err(invalid(&r, "symbol", "a feature vector without a symbol"));
        }
        if version.is_empty() {
            return Err(invalid(&r, "version", "a feature vector without a version"));
        }
        let names_at = r.position();
        let rest = &body[names_at..];
        let count = if !self.last_names.is_empty() && rest.starts_with(&self.last_names) {
            r.skip(self.last_names.len(), "names")?;
            self.last_count
        } else {
            let names = r.array("names", 1, |r, _| r.str("names"))?;
            let mut seen = HashSet::with_capacity(names.len());
            if !names.iter().all(|n| seen.insert(*n)) {
                return Err(invalid(&r, "names", "names are not unique"));
            }
            let positions = self
                .wanted
                .iter()
                .map(|w| names.iter().position(|n| n == w))
                .collect();
            let count = names.len();
            self.last_names = body[names_at..r.position()].to_vec();
            self.last_count = count;
            self.positions = positions;
            count
        };
        let values = r.array("values", 8, |r, _| r.finite("values"))?;
        r.finish()?;
        if values.len() != count {
            return Err(invalid(
                &r,
                "values",
                format!("{} values for {count} names", values.len()),
            ));
        }
        Ok(Picked {
            timestamp_us,
            symbol,
            values: self
                .positions
                .iter()
                .map(|p| p.map(|i| values[i]))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Writer;

    /// A body written field by field (the encoder would refuse the bad ones).
    fn raw(symbol: &str, names: &[&str], values: &[f64]) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.long(1_700_000_000_000_000);
        w.string(symbol);
        w.string("v1");
        w.array(names, |w, n| w.string(n));
        w.array(values, |w, v| w.double(*v));
        w.buf
    }

    fn body(names: &[&str], values: &[f64]) -> Vec<u8> {
        raw("BTC-USD", names, values)
    }

    #[test]
    fn picks_the_wanted_values_and_reuses_a_repeated_name_list() {
        let mut pick = FeaturePick::new(vec!["c".into(), "zz".into(), "a".into()]);
        for round in 0..3 {
            let v = round as f64;
            let got = pick.read(&body(&["a", "b", "c"], &[v, 2.0, 3.0])).unwrap();
            assert_eq!(got.symbol, "BTC-USD");
            assert_eq!(got.timestamp_us, 1_700_000_000_000_000);
            assert_eq!(got.values, vec![Some(3.0), None, Some(v)]);
        }
        // another list of names: positions found again
        let got = pick.read(&body(&["c", "a"], &[5.0, 6.0])).unwrap();
        assert_eq!(got.values, vec![Some(5.0), None, Some(6.0)]);
    }

    #[test]
    fn refuses_what_the_full_decode_refuses() {
        let mut pick = FeaturePick::new(vec!["a".into()]);
        assert!(pick.read(&body(&["a", "a"], &[1.0, 2.0])).is_err()); // names not unique
        assert!(pick.read(&body(&["a", "b"], &[1.0])).is_err()); // lengths differ
        assert!(pick.read(&body(&["a", "b"], &[1.0, f64::NAN])).is_err()); // not finite
        let good = body(&["a", "b"], &[1.0, 2.0]);
        assert!(pick.read(&good).is_ok());
        assert!(pick.read(&good[..good.len() - 3]).is_err()); // truncated
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(pick.read(&trailing).is_err());
        // the cached names do not let a bad value through
        assert!(pick
            .read(&body(&["a", "b"], &[1.0, f64::INFINITY]))
            .is_err());
        assert!(pick.read(&body(&["a", "b"], &[1.0, 2.0, 3.0])).is_err());
        let no_symbol = raw("", &["a"], &[1.0]);
        assert!(pick.read(&no_symbol).is_err());
    }
}
