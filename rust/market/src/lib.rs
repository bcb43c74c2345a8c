//! The kstrade market engine: what turns a stream of 1m candles into model inputs.
//!
//! - [`candles`]: validated [`Candle`]s and the [`CandleAggregator`] that builds closed
//!   5m/15m/1h bars from 1m bars on UTC boundaries, reporting gaps, duplicates and late data
//!   instead of silently merging them.
//! - [`indicators`]: incremental indicators, O(1) time and memory per bar, that reproduce
//!   TA-Lib's output bar for bar (same first-output bar, same seeding quirks), because models
//!   are trained on TA-Lib-computed history and must see the same numbers live.
//! - [`features`]: the per-symbol [`FeatureEngine`] that emits a named, versioned feature
//!   vector on every closed 1m candle, using only closed higher-timeframe bars (no look-ahead),
//!   and that snapshots to bytes so a restarted service continues exactly where it stopped.

pub mod candles;
pub mod error;
pub mod features;
pub mod indicators;

pub use candles::{Candle, CandleAggregator, ClosedBar, PushOutcome, Timeframe};
pub use error::{MarketError, MarketResult};
pub use features::{FeatureEngine, FeatureVector, FEATURE_VERSION};
