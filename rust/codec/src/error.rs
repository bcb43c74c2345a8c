//! Codec errors with stable codes. Every error says where it happened: the schema, the field,
//! and (when the caller gave them) the topic and offset of the message, so a dead letter can be
//! traced without re-running anything.

use std::fmt;

use thiserror::Error;

pub type CodecResult<T> = Result<T, CodecError>;

/// Where in which message a codec error happened.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Location {
    /// Full Avro name of the record, e.g. `kstrade.Candle`.
    pub schema: &'static str,
    /// Dotted field path, e.g. `prediction.direction` or `values[3]`; empty for the whole record.
    pub field: String,
    pub topic: Option<String>,
    pub offset: Option<i64>,
}

impl Location {
    pub fn new(schema: &'static str, field: impl Into<String>) -> Self {
        Self {
            schema,
            field: field.into(),
            topic: None,
            offset: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.schema)?;
        } else {
            write!(f, "field '{}' of {}", self.field, self.schema)?;
        }
        match (&self.topic, self.offset) {
            (Some(t), Some(o)) => write!(f, " (topic '{t}', offset {o})"),
            (Some(t), None) => write!(f, " (topic '{t}')"),
            (None, Some(o)) => write!(f, " (offset {o})"),
            (None, None) => Ok(()),
        }
    }
}

/// Message context a caller may attach to a decode: where the bytes came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    pub topic: Option<String>,
    pub offset: Option<i64>,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CodecError {
    #[error("truncated record at {at}: needed {needed} more byte(s), {available} left")]
    Truncated {
        at: Location,
        needed: usize,
        available: usize,
    },
    #[error("malformed record at {at}: {reason}")]
    Malformed { at: Location, reason: String },
    #[error("non-finite value {value} at {at}: the schema allows finite doubles only")]
    NonFinite { at: Location, value: f64 },
    #[error("invalid record at {at}: {reason}")]
    Invalid { at: Location, reason: String },
    #[error("{count} trailing byte(s) after the record at {at}")]
    TrailingBytes { at: Location, count: usize },
    #[error("unknown schema version {version} at {at}: this build reads version(s) {known}")]
    UnknownVersion {
        at: Location,
        version: u32,
        known: String,
    },
}

impl CodecError {
    /// A stable, machine-readable code (never reworded; DLQ headers and tests use it).
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::Truncated { .. } => "TRUNCATED",
            CodecError::Malformed { .. } => "MALFORMED",
            CodecError::NonFinite { .. } => "NON_FINITE",
            CodecError::Invalid { .. } => "INVALID",
            CodecError::TrailingBytes { .. } => "TRAILING_BYTES",
            CodecError::UnknownVersion { .. } => "UNKNOWN_SCHEMA_VERSION",
        }
    }

    pub fn location(&self) -> &Location {
        match self {
            CodecError::Truncated { at, .. }
            | CodecError::Malformed { at, .. }
            | CodecError::NonFinite { at, .. }
            | CodecError::Invalid { at, .. }
            | CodecError::TrailingBytes { at, .. }
            | CodecError::UnknownVersion { at, .. } => at,
        }
    }

    fn location_mut(&mut self) -> &mut Location {
        match self {
            CodecError::Truncated { at, .. }
            | CodecError::Malformed { at, .. }
            | CodecError::NonFinite { at, .. }
            | CodecError::Invalid { at, .. }
            | CodecError::TrailingBytes { at, .. }
            | CodecError::UnknownVersion { at, .. } => at,
        }
    }

    /// Attach the topic and offset of the message being decoded.
    pub fn with_context(mut self, ctx: &Context) -> Self {
        let at = self.location_mut();
        at.topic.clone_from(&ctx.topic);
        at.offset = ctx.offset;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_topic_offset_and_field() {
        let e = CodecError::Truncated {
            at: Location::new("kstrade.Candle", "close"),
            needed: 8,
            available: 3,
        }
        .with_context(&Context {
            topic: Some("market.candles.BTC-USD.1m".into()),
            offset: Some(42),
        });
        let msg = e.to_string();
        assert!(msg.contains("'close'"), "{msg}");
        assert!(msg.contains("market.candles.BTC-USD.1m"), "{msg}");
        assert!(msg.contains("offset 42"), "{msg}");
        assert_eq!(e.code(), "TRUNCATED");
    }
}
