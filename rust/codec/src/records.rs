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
    /// A guess of the encoded size, to allocate once.
    fn size_hint(&self) -> usize;
    fn write(&self, w: &mut Writer) -> CodecResult<()>;
    fn read(r: &mut Reader<'_>) -> CodecResult<Self>;
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

/// A closed OHLCV candle (`market.candles.{symbol}.{interval}`).
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
}

impl AvroRecord for Candle {
    const SCHEMA: &'static str = "kstrade.Candle";
    const VERSION: u32 = 1;
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
    ];

    fn size_hint(&self) -> usize {
        10 + 5 * 8 + 3 * 2 + self.symbol.len() + self.interval.len() + self.source.len()
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
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> CodecResult<Self> {
        Ok(Self {
            timestamp_us: r.long("timestamp")?,
            symbol: r.string("symbol")?,
            interval: r.string("interval")?,
            open: r.finite("open")?,
            high: r.finite("high")?,
            low: r.finite("low")?,
            close: r.finite("close")?,
            volume: r.finite("volume")?,
            source: r.string("source")?,
        })
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
    }
}
