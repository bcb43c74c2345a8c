//! The fields of a `Signal` (`signals.*`) that the metrics collector keeps, read straight from a
//! bare Avro v1 body. Signals are written in Python (`kstrade.signals.wire`, fastavro's layout);
//! the collector reads every one of them, so this reader walks the body once, checks what
//! `Codec(Signal).decode` checks (every double finite, the maps and the boosters included, the
//! ranges and the order of the levels), and keeps only the stored fields.

use crate::avro::Reader;
use crate::error::{CodecError, CodecResult};

pub const SCHEMA: &str = "kstrade.Signal";
/// Symbols of the schema's enums (schemas/signal.avsc): stage, direction, tier.
pub const STAGES: usize = 4;
pub const DIRECTIONS: usize = 2;
pub const TIERS: usize = 4;
/// `SignalDirection.LONG`'s index: its stop is below the entry, its target above.
const LONG: usize = 0;

/// What the collector stores of a signal; the enums as their schema indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalFields {
    pub timestamp_us: i64,
    pub symbol: String,
    /// As written; the caller parses it as a UUID (and refuses what does not parse).
    pub signal_id: String,
    pub stage: usize,
    pub direction: usize,
    pub confidence: f64,
    pub tier: Option<usize>,
    pub entry_price: f64,
    pub stop_loss: f64,
    pub take_profit: f64,
    pub position_size: Option<f64>,
    pub ttl_seconds: i64,
}

fn invalid(r: &Reader<'_>, field: &str, reason: impl Into<String>) -> CodecError {
    CodecError::Invalid {
        at: r.at(field),
        reason: reason.into(),
    }
}

/// A union of null and one branch: the branch's index, checked.
fn union(r: &mut Reader<'_>, field: &str) -> CodecResult<bool> {
    match r.long(field)? {
        0 => Ok(false),
        1 => Ok(true),
        i => Err(invalid(r, field, format!("union index {i} out of range"))),
    }
}

/// Walk a map of finite doubles (`doubles`) or an array of strings, checking each item.
fn skip(r: &mut Reader<'_>, field: &str, doubles: bool) -> CodecResult<()> {
    let least = if doubles { 9 } else { 1 }; // a key's length byte (+ its double)
    r.array(field, least, |r, _| {
        r.str(field)?;
        if doubles {
            r.finite(field)?;
        }
        Ok(())
    })
    .map(drop)
}

/// The stored fields of a bare Avro `Signal` v1 body, or the error `Codec(Signal).decode` would
/// also end in (its kind may differ: this reader does not build what it skips).
pub fn read_signal_fields(body: &[u8]) -> CodecResult<SignalFields> {
    let mut r = Reader::new(body, SCHEMA);
    let timestamp_us = r.long("timestamp")?;
    let symbol = r.string("symbol")?;
    let signal_id = r.string("signal_id")?;
    let stage = r.enum_index("stage", STAGES)?;
    let direction = r.enum_index("direction", DIRECTIONS)?;
    let confidence = r.finite("confidence")?;
    let tier = if union(&mut r, "tier")? {
        Some(r.enum_index("tier", TIERS)?)
    } else {
        None
    };
    let entry_price = r.finite("entry_price")?;
    let stop_loss = r.finite("stop_loss")?;
    let take_profit = r.finite("take_profit")?;
    let position_size = if union(&mut r, "position_size")? {
        Some(r.finite("position_size")?)
    } else {
        None
    };
    skip(&mut r, "features_snapshot", true)?;
    skip(&mut r, "ensemble_weights", true)?;
    skip(&mut r, "boosters_applied", false)?;
    let ttl_seconds = r.long("ttl_seconds")?;
    r.finish()?;
    if symbol.is_empty() {
        return Err(invalid(&r, "symbol", "a signal without a symbol"));
    }
    if !(0.0..=1.0).contains(&confidence) {
        return Err(invalid(
            &r,
            "confidence",
            format!("{confidence} is outside [0, 1]"),
        ));
    }
    if !(entry_price > 0.0 && stop_loss > 0.0 && take_profit > 0.0) {
        return Err(invalid(&r, "entry_price", "a price that is not positive"));
    }
    if !(0 < ttl_seconds && ttl_seconds < 1 << 31) {
        return Err(invalid(
            &r,
            "ttl_seconds",
            format!("{ttl_seconds} is out of range"),
        ));
    }
    if position_size.is_some_and(|s| s < 0.0) {
        return Err(invalid(&r, "position_size", "a negative position_size"));
    }
    let ordered = if direction == LONG {
        stop_loss < entry_price && entry_price < take_profit
    } else {
        take_profit < entry_price && entry_price < stop_loss
    };
    if !ordered {
        return Err(invalid(
            &r,
            "stop_loss",
            "stop_loss / entry_price / take_profit out of order",
        ));
    }
    Ok(SignalFields {
        timestamp_us,
        symbol,
        signal_id,
        stage,
        direction,
        confidence,
        tier,
        entry_price,
        stop_loss,
        take_profit,
        position_size,
        ttl_seconds,
    })
}
