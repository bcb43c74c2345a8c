//! Candles: the validated [`Candle`] every stage trusts, the [`Timeframe`]s kstrade trades,
//! and the [`CandleAggregator`] that turns closed 1m candles into closed 5m/15m/1h bars.

mod aggregator;
mod candle;

pub use aggregator::{Accepted, CandleAggregator, ClosedBar, PushOutcome};
pub use candle::{Candle, Ladder, Timeframe, MINUTE_MS};
