//! Market-engine errors with stable codes: ingest branches on the code (and writes it into
//! the dead-letter headers), people read the message. Codes are never reworded.

use thiserror::Error;

pub type MarketResult<T> = Result<T, MarketError>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum MarketError {
    #[error("unknown interval '{0}' (expected one of 1m, 5m, 15m, 1h)")]
    UnknownInterval(String),
    #[error("candle field '{field}' is not a finite number")]
    NonFinite { field: &'static str },
    #[error("candle price field '{field}' is {value}, prices must be > 0")]
    NonPositivePrice { field: &'static str, value: f64 },
    #[error("high {high} is below max(open, close) = {body_top}")]
    HighBelowBody { high: f64, body_top: f64 },
    #[error("low {low} is above min(open, close) = {body_bottom}")]
    LowAboveBody { low: f64, body_bottom: f64 },
    #[error("volume {0} is negative")]
    NegativeVolume(f64),
    #[error("open time {open_time_ms} ms is not aligned to the {interval} boundary")]
    Misaligned {
        open_time_ms: i64,
        interval: &'static str,
    },
    #[error("open time {0} ms is outside the supported range (+/- 2^53 ms around 1970)")]
    TimeOutOfRange(i64),
    #[error("expected a {expected} candle, got {got}")]
    WrongInterval {
        expected: &'static str,
        got: &'static str,
    },
    #[error(
        "late 1m candle at {open_time_ms} ms: the engine is already at {last_open_time_ms} ms \
         and these bars are closed: {closed}"
    )]
    LateCandle {
        open_time_ms: i64,
        last_open_time_ms: i64,
        closed: String,
    },
    #[error(
        "1m candle at {open_time_ms} ms repeats a minute already accepted, with different values"
    )]
    ConflictingDuplicate { open_time_ms: i64 },
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("input arrays have different lengths: {0}")]
    LengthMismatch(String),
    #[error("snapshot cannot be restored: {0}")]
    Snapshot(String),
}

impl MarketError {
    /// A stable, machine-readable code (tests and dead-letter headers rely on it).
    pub fn code(&self) -> &'static str {
        match self {
            MarketError::UnknownInterval(_) => "UNKNOWN_INTERVAL",
            MarketError::NonFinite { .. } => "NON_FINITE",
            MarketError::NonPositivePrice { .. } => "NON_POSITIVE_PRICE",
            MarketError::HighBelowBody { .. } => "HIGH_BELOW_BODY",
            MarketError::LowAboveBody { .. } => "LOW_ABOVE_BODY",
            MarketError::NegativeVolume(_) => "NEGATIVE_VOLUME",
            MarketError::Misaligned { .. } => "MISALIGNED_TIME",
            MarketError::TimeOutOfRange(_) => "TIME_OUT_OF_RANGE",
            MarketError::WrongInterval { .. } => "WRONG_INTERVAL",
            MarketError::LateCandle { .. } => "LATE_CANDLE",
            MarketError::ConflictingDuplicate { .. } => "CONFLICTING_DUPLICATE",
            MarketError::InvalidParameter(_) => "INVALID_PARAMETER",
            MarketError::LengthMismatch(_) => "LENGTH_MISMATCH",
            MarketError::Snapshot(_) => "BAD_SNAPSHOT",
        }
    }
}
