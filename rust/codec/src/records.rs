//! The hot message types and their Avro layouts. Field order here IS the wire format: it must
//! follow `schemas/*.avsc` exactly (a test compares the two), and doubles must be finite.

use crate::avro::{Reader, Writer};
use crate::error::{CodecError, CodecResult, Location};

/// A record with a hand-written Avro layout for one schema version.
pub trait AvroRecord: Sized {
    /// Full Avro name, as in the `.avsc` (`namespace.name`).
    const SCHEMA: &'static str;
    /// The schema version this layout implements (the `version` attribute of the `.avsc`).
    const VERSION: u32;
    /// Top-level field names in wire order (checked against the `.avsc` in tests).
    const FIELDS: &'static [&'static str];
    /// Older writer versions this layout also reads natively: versions whose fields are a
    /// prefix of this one's (fields only added at the end, with a default), read by
    /// [`read_version`](Self::read_version). Any other older version goes through fastavro's
    /// schema resolution on the Python side.
    const OLDER_VERSIONS: &'static [u32] = &[];
    /// A guess of the encoded size, to allocate once.
    fn size_hint(&self) -> usize;
    fn write(&self, w: &mut Writer) -> CodecResult<()>;
    /// Reads a body written with this layout's [`VERSION`](Self::VERSION).
    fn read(r: &mut Reader<'_>) -> CodecResult<Self>;
    /// Reads a body written with `version`: [`VERSION`](Self::VERSION) or one of
    /// [`OLDER_VERSIONS`](Self::OLDER_VERSIONS) (checked by the caller).
    fn read_version(r: &mut Reader<'_>, version: u32) -> CodecResult<Self> {
        debug_assert_eq!(version, Self::VERSION);
        Self::read(r)
    }
}

fn finite(schema: &'static str, field: &str, v: f64) -> CodecResult<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(CodecError::NonFinite {
            at: Location::new(schema, field),
            value: v,
        })
    }
}

/// An Avro enum as a Rust enum whose variants are declared in schema order: `index` is the
/// Avro ordinal, `symbol` / `from_symbol` convert to and from the schema's symbols.
macro_rules! avro_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $symbol:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const SYMBOLS: [&'static str; [$($symbol),+].len()] = [$($symbol),+];
            const ALL: [$name; [$($symbol),+].len()] = [$($name::$variant),+];

            pub fn index(self) -> usize {
                self as usize
            }

            pub fn symbol(self) -> &'static str {
                Self::SYMBOLS[self.index()]
            }

            pub fn from_symbol(s: &str) -> Option<Self> {
                Self::SYMBOLS
                    .iter()
                    .position(|x| *x == s)
                    .map(|i| Self::ALL[i])
            }
        }
    };
}

avro_enum! {
    /// Where a 1m candle came from (Avro enum `CandleOrigin`, symbols in schema order).
    CandleOrigin { Trades => "TRADES", Rest => "REST" }
}

/// A closed OHLCV candle (`market.candles.{symbol}.{interval}`), schema v2. A v1 body is the
/// same up to `source` (v2 added `minutes` and `origin` at the end, both optional), so this
/// layout reads v1 natively too, with both left None.
#[derive(Debug, Clone, PartialEq)]
pub struct Candle {
    /// Open time, microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub symbol: String,
    pub interval: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub source: String,
    /// How many 1m candles the candle was built from (1 for a 1m candle); None: not stated.
    pub minutes: Option<i32>,
    /// Where a 1m candle came from; None: not stated (higher bars, replays, v1 writers).
    pub origin: Option<CandleOrigin>,
}

impl AvroRecord for Candle {
    const SCHEMA: &'static str = "kstrade.Candle";
    const VERSION: u32 = 2;
    const OLDER_VERSIONS: &'static [u32] = &[1];
    const FIELDS: &'static [&'static str] = &[
        "timestamp",
        "symbol",
        "interval",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "source",
        "minutes",
        "origin",
    ];

    fn size_hint(&self) -> usize {
        10 + 5 * 8 + 3 * 2 + self.symbol.len() + self.interval.len() + self.source.len() + 7
    }

    fn write(&self, w: &mut Writer) -> CodecResult<()> {
        w.long(self.timestamp_us);
        w.string(&self.symbol);
        w.string(&self.interval);
        for (field, v) in [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
            ("volume", self.volume),
        ] {
            w.double(finite(Self::SCHEMA, field, v)?);
        }
        w.string(&self.source);
        w.optional(self.minutes, |w, m| w.long(i64::from(m)));
        w.optional(self.origin, |w, o| w.enum_index(o.index()));
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> CodecResult<Self> {
        Self::read_version(r, Self::VERSION)
    }

    fn read_version(r: &mut Reader<'_>, version: u32) -> CodecResult<Self> {
        let mut candle = Self {
            timestamp_us: r.long("timestamp")?,
            symbol: r.string("symbol")?,
            interval: r.string("interval")?,
            open: r.finite("open")?,
            high: r.finite("high")?,
            low: r.finite("low")?,
            close: r.finite("close")?,
            volume: r.finite("volume")?,
            source: r.string("source")?,
            minutes: None,
            origin: None,
        };
        if version >= 2 {
            candle.minutes = r.optional("minutes", |r| r.int("minutes"))?;
            candle.origin = r.optional("origin", |r| {
                let i = r.enum_index("origin", CandleOrigin::SYMBOLS.len())?;
                Ok(CandleOrigin::ALL[i])
            })?;
        }
        Ok(candle)
    }
}

/// A named, versioned feature list (`features.*.{symbol}`): `names[i]` labels `values[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    pub timestamp_us: i64,
    pub symbol: String,
    /// Version of the feature set, e.g. `v2.1`.
    pub version: String,
    pub names: Vec<String>,
    pub values: Vec<f64>,
}

impl FeatureVector {
    fn check_shape(&self) -> CodecResult<()> {
        if self.names.len() != self.values.len() {
            return Err(CodecError::Invalid {
                at: Location::new(Self::SCHEMA, "values"),
                reason: format!(
                    "{} values for {} names",
                    self.values.len(),
                    self.names.len()
                ),
            });
        }
        // Duplicate names would make the JSON object form ambiguous; vectors are short, so a
        // quadratic scan beats hashing.
        for (i, n) in self.names.iter().enumerate() {
            if self.names[..i].contains(n) {
                return Err(CodecError::Invalid {
                    at: Location::new(Self::SCHEMA, format!("names[{i}]")),
                    reason: format!("duplicate feature name '{n}'"),
                });
            }
        }
        Ok(())
    }
}

impl AvroRecord for FeatureVector {
    const SCHEMA: &'static str = "kstrade.FeatureVector";
    const VERSION: u32 = 1;
    const FIELDS: &'static [&'static str] = &["timestamp", "symbol", "version", "names", "values"];

    fn size_hint(&self) -> usize {
        32 + self.symbol.len()
            + self.version.len()
            + self.names.iter().map(|n| n.len() + 2).sum::<usize>()
            + 8 * self.values.len()
    }

    fn write(&self, w: &mut Writer) -> CodecResult<()> {
        self.check_shape()?;
        for (i, v) in self.values.iter().enumerate() {
            if !v.is_finite() {
                return Err(CodecError::NonFinite {
                    at: Location::new(Self::SCHEMA, format!("values[{i}]")),
                    value: *v,
                });
            }
        }
        w.long(self.timestamp_us);
        w.string(&self.symbol);
        w.string(&self.version);
        w.array(&self.names, |w, n| w.string(n));
        w.array(&self.values, |w, v| w.double(*v));
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> CodecResult<Self> {
        let fv = Self {
            timestamp_us: r.long("timestamp")?,
            symbol: r.string("symbol")?,
            version: r.string("version")?,
            names: r.array("names", 1, |r, i| r.string(&format!("names[{i}]")))?,
            values: r.array("values", 8, |r, i| {
                let v = r.double("values")?;
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(CodecError::NonFinite {
                        at: r.at(&format!("values[{i}]")),
                        value: v,
                    })
                }
            })?,
        };
        fv.check_shape()?;
        Ok(fv)
    }
}

avro_enum! {
    /// The model that produced a prediction (Avro enum `ModelType`, symbols in schema order).
    ModelType { Lstm => "lstm", Transformer => "transformer", Ensemble => "ensemble" }
}

avro_enum! {
    /// Predicted price direction (Avro enum `PredictedDirection`: DOWN, FLAT, UP = -1, 0, 1).
    Direction { Down => "DOWN", Flat => "FLAT", Up => "UP" }
}

impl Direction {
    /// The design document's numeric form.
    pub fn sign(self) -> i8 {
        self.index() as i8 - 1
    }

    pub fn from_sign(v: i64) -> Option<Self> {
        match v {
            -1 => Some(Direction::Down),
            0 => Some(Direction::Flat),
            1 => Some(Direction::Up),
            _ => None,
        }
    }
}

/// One model's prediction for one symbol (`predictions.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub timestamp_us: i64,
    pub symbol: String,
    pub model_type: ModelType,
    pub model_version: String,
    pub direction: Direction,
    /// Raw model output in [0, 1].
    pub probability: f64,
    /// Calibrated confidence in [0, 1].
    pub confidence: f64,
    pub inference_time_ms: f64,
}

impl Prediction {
    fn check_unit(field: &str, v: f64) -> CodecResult<f64> {
        let v = finite(Self::SCHEMA, field, v)?;
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(CodecError::Invalid {
                at: Location::new(Self::SCHEMA, field),
                reason: format!("{v} is outside [0, 1]"),
            })
        }
    }
}

impl AvroRecord for Prediction {
    const SCHEMA: &'static str = "kstrade.Prediction";
    const VERSION: u32 = 1;
    const FIELDS: &'static [&'static str] = &[
        "timestamp",
        "symbol",
        "model_type",
        "model_version",
        "prediction",
        "inference_time_ms",
    ];

    fn size_hint(&self) -> usize {
        10 + 2 + 1 + 3 * 8 + 2 + self.symbol.len() + self.model_version.len()
    }

    fn write(&self, w: &mut Writer) -> CodecResult<()> {
        let probability = Self::check_unit("prediction.probability", self.probability)?;
        let confidence = Self::check_unit("prediction.confidence", self.confidence)?;
        let inference = finite(Self::SCHEMA, "inference_time_ms", self.inference_time_ms)?;
        w.long(self.timestamp_us);
        w.string(&self.symbol);
        w.enum_index(self.model_type.index());
        w.string(&self.model_version);
        w.enum_index(self.direction.index());
        w.double(probability);
        w.double(confidence);
        w.double(inference);
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> CodecResult<Self> {
        let timestamp_us = r.long("timestamp")?;
        let symbol = r.string("symbol")?;
        let model_type = ModelType::ALL[r.enum_index("model_type", ModelType::SYMBOLS.len())?];
        let model_version = r.string("model_version")?;
        let direction =
            Direction::ALL[r.enum_index("prediction.direction", Direction::SYMBOLS.len())?];
        let probability = Self::check_unit(
            "prediction.probability",
            r.finite("prediction.probability")?,
        )?;
        let confidence =
            Self::check_unit("prediction.confidence", r.finite("prediction.confidence")?)?;
        let inference_time_ms = r.finite("inference_time_ms")?;
        Ok(Self {
            timestamp_us,
            symbol,
            model_type,
            model_version,
            direction,
            probability,
            confidence,
            inference_time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avro_enums_follow_schema_order_and_round_trip_their_symbols() {
        assert_eq!(ModelType::SYMBOLS, ["lstm", "transformer", "ensemble"]);
        assert_eq!(ModelType::Ensemble.index(), 2);
        assert_eq!(Direction::Down.index(), 0);
        for symbol in Direction::SYMBOLS {
            assert_eq!(
                Direction::from_symbol(symbol).map(Direction::symbol),
                Some(symbol)
            );
        }
        for symbol in ModelType::SYMBOLS {
            assert_eq!(
                ModelType::from_symbol(symbol).map(ModelType::symbol),
                Some(symbol)
            );
        }
        assert_eq!(ModelType::from_symbol("LSTM"), None);
        assert_eq!(CandleOrigin::SYMBOLS, ["TRADES", "REST"]);
        assert_eq!(CandleOrigin::from_symbol("REST"), Some(CandleOrigin::Rest));
    }
}
