//! Builds closed 5m/15m/1h bars from closed 1m candles (or 4h/8h/1d bars from 1h candles: the
//! base interval's [`Timeframe::ladder`]), aligned to UTC boundaries. The docs below say "1m" and
//! "minute" for the base interval's candles, the default.
//!
//! Policies (kept simple so that the higher bars are exactly the aggregate of the 1m stream the
//! indicators saw, live and in replay):
//! - A 1m candle is closed when it arrives and indicators consume it at once, so it is never
//!   rewritten. A repeat of the newest minute with the same values, or of any minute of the
//!   current hour already seen, is a [`PushOutcome::Duplicate`] and is ignored. A repeat of
//!   the newest minute with different values is rejected as `CONFLICTING_DUPLICATE` (a
//!   correction after the fact: ingest sends it to the dead-letter topic for a human).
//! - A 1m candle older than the newest accepted minute (and not a known duplicate) is rejected
//!   as `LATE_CANDLE`, naming the bars it would have belonged to that are already closed.
//!   It is never merged.
//! - Missing minutes are never filled with a made-up price: [`Accepted::missing_before`] says
//!   how many minutes were skipped, and each [`ClosedBar`] carries how many 1m candles it was
//!   built from (`minutes`) against the `expected` count, so an incomplete bar is visible.
//!   A bucket with no 1m candle at all yields no bar.
//! - A higher bar closes as soon as its last minute arrives (no waiting for the next bar), or,
//!   when that minute is missing, when the first minute of a later bucket arrives.

use serde::{Deserialize, Serialize};

use super::candle::{Candle, Ladder, Timeframe, MINUTE_MS};
use crate::error::{MarketError, MarketResult};

/// A closed bar of a higher timeframe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClosedBar {
    pub timeframe: Timeframe,
    pub candle: Candle,
    /// How many base-interval candles (1m by default) it was built from.
    pub minutes: u32,
    /// The base interval it was built from.
    #[serde(default = "minute")]
    pub base: Timeframe,
}

fn minute() -> Timeframe {
    Timeframe::M1
}

fn minute_ladder() -> Ladder {
    Timeframe::ALL
}

impl ClosedBar {
    /// How many base-interval candles a complete bar holds.
    pub fn expected(&self) -> u32 {
        (self.timeframe.minutes() / self.base.minutes()) as u32
    }

    /// Whether every minute of the bar was present.
    pub fn complete(&self) -> bool {
        self.minutes == self.expected()
    }
}

/// What a pushed 1m candle produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub candle: Candle,
    /// Minutes missing between the previous accepted candle and this one.
    pub missing_before: u32,
    /// Higher bars that closed with this candle, shortest timeframe first.
    pub closed: Vec<ClosedBar>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    Accepted(Accepted),
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct OpenBar {
    candle: Candle,
    minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandleAggregator {
    /// The base interval and the timeframes built from it (snapshots from before there was a
    /// choice are the 1m ladder).
    #[serde(default = "minute_ladder")]
    ladder: Ladder,
    last: Option<Candle>,
    /// Open higher bars (index as in `ladder[1..]`).
    open: [Option<OpenBar>; 3],
    /// Base candles of the current span (`seen_span`: the hour of a 1m base, the day of a 1h
    /// base) already accepted (bit i = the span's i-th candle), to recognise redelivered ones.
    seen_in_hour: u64,
}

impl Default for CandleAggregator {
    fn default() -> Self {
        Self {
            ladder: Timeframe::ALL,
            last: None,
            open: [None; 3],
            seen_in_hour: 0,
        }
    }
}

impl CandleAggregator {
    /// Builds 5m/15m/1h bars from 1m candles.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the higher timeframes of `base`'s ladder from `base` candles.
    pub fn with_base(base: Timeframe) -> MarketResult<Self> {
        Ok(Self {
            ladder: base.ladder()?,
            ..Self::default()
        })
    }

    /// The base interval and the timeframes built from it.
    pub fn ladder(&self) -> Ladder {
        self.ladder
    }

    /// The longest timeframe of the ladder that holds at most 64 base candles: the span whose
    /// candles `seen_in_hour` remembers.
    fn seen_span(&self) -> Timeframe {
        let base = self.ladder[0].minutes();
        let fits = |tf: &&Timeframe| tf.minutes() / base <= 64;
        *self
            .ladder
            .iter()
            .rev()
            .find(fits)
            .unwrap_or(&self.ladder[0])
    }

    /// Base candles from `earlier` to `later` (both open times on the base's boundaries).
    #[inline]
    fn bars_between(&self, earlier: i64, later: i64) -> i64 {
        match self.ladder[0] {
            // A constant divisor on the default path (see `Timeframe::offset`).
            Timeframe::M1 => (later - earlier) / MINUTE_MS,
            base => (later - earlier) / base.millis(),
        }
    }

    fn seen_bit(&self, span: Timeframe, t: i64) -> u64 {
        1u64 << self.bars_between(span.bucket(t), t)
    }

    /// The newest accepted 1m candle.
    pub fn last(&self) -> Option<&Candle> {
        self.last.as_ref()
    }

    pub fn push(&mut self, candle: Candle) -> MarketResult<PushOutcome> {
        candle.validate(self.ladder[0])?;
        self.push_validated(candle)
    }

    /// [`push`](Self::push) for a candle the caller has already validated as 1m (built by
    /// `Candle::new(Timeframe::M1, ..)`, as the Python `Candle` is): validation is a measurable
    /// share of a feature update, and doing it twice buys nothing. An unvalidated candle here
    /// would reach the indicators unchecked.
    pub fn push_validated(&mut self, candle: Candle) -> MarketResult<PushOutcome> {
        debug_assert!(candle.validate(self.ladder[0]).is_ok());
        let t = candle.open_time_ms;
        let span = self.seen_span();
        let mut missing_before = 0;
        if let Some(last) = self.last {
            let hour = span.bucket(last.open_time_ms);
            if t == last.open_time_ms {
                return if candle == last {
                    Ok(PushOutcome::Duplicate)
                } else {
                    Err(MarketError::ConflictingDuplicate { open_time_ms: t })
                };
            }
            if t < last.open_time_ms {
                if span.bucket(t) == hour && self.seen_in_hour & self.seen_bit(span, t) != 0 {
                    return Ok(PushOutcome::Duplicate);
                }
                return Err(self.late(t, last.open_time_ms));
            }
            missing_before =
                (self.bars_between(last.open_time_ms, t) - 1).min(i64::from(u32::MAX)) as u32;
            if span.bucket(t) != hour {
                self.seen_in_hour = 0;
            }
        }
        self.seen_in_hour |= self.seen_bit(span, t);
        self.last = Some(candle);

        let [base, higher @ ..] = self.ladder;
        let base_ms = base.millis();
        let mut closed = Vec::new();
        for (slot, tf) in self.open.iter_mut().zip(higher) {
            let bucket = tf.bucket(t);
            if let Some(bar) = slot.take_if(|bar| bar.candle.open_time_ms != bucket) {
                // Its last minute never came: close it now, incomplete.
                closed.push(ClosedBar {
                    timeframe: tf,
                    candle: bar.candle,
                    minutes: bar.minutes,
                    base,
                });
            }
            let bar = slot.get_or_insert(OpenBar {
                candle: Candle {
                    open_time_ms: bucket,
                    ..candle
                },
                minutes: 0,
            });
            if bar.minutes > 0 {
                bar.candle.high = bar.candle.high.max(candle.high);
                bar.candle.low = bar.candle.low.min(candle.low);
                bar.candle.close = candle.close;
                bar.candle.volume += candle.volume;
            }
            bar.minutes += 1;
            if t + base_ms == bucket + tf.millis() {
                let bar = slot.take().expect("bar inserted above");
                closed.push(ClosedBar {
                    timeframe: tf,
                    candle: bar.candle,
                    minutes: bar.minutes,
                    base,
                });
            }
        }
        // In (timeframe, open time) order already: timeframes are visited in order, and a
        // bar left incomplete is older than the one this minute completes.
        debug_assert!(closed.is_sorted_by_key(|b| (b.timeframe, b.candle.open_time_ms)));
        Ok(PushOutcome::Accepted(Accepted {
            candle,
            missing_before,
            closed,
        }))
    }

    fn late(&self, t: i64, last_t: i64) -> MarketError {
        let [base, higher @ ..] = self.ladder;
        let mut closed = vec![base.as_str().to_string()];
        for (slot, tf) in self.open.iter().zip(higher) {
            let still_open = slot
                .as_ref()
                .is_some_and(|b| b.candle.open_time_ms == tf.bucket(t));
            if !still_open {
                closed.push(format!("{}@{}", tf.as_str(), tf.bucket(t)));
            }
        }
        MarketError::LateCandle {
            open_time_ms: t,
            last_open_time_ms: last_t,
            closed: closed.join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(minute: i64, close: f64) -> Candle {
        Candle {
            open_time_ms: minute * MINUTE_MS,
            open: close,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 1.0,
        }
    }

    fn accepted(o: PushOutcome) -> Accepted {
        match o {
            PushOutcome::Accepted(a) => a,
            PushOutcome::Duplicate => panic!("unexpected duplicate"),
        }
    }

    #[test]
    fn five_minute_bar_closes_on_its_last_minute() {
        let mut agg = CandleAggregator::new();
        for m in 0..4 {
            assert!(accepted(agg.push(c(m, 10.0 + m as f64)).unwrap())
                .closed
                .is_empty());
        }
        let a = accepted(agg.push(c(4, 9.0)).unwrap());
        assert_eq!(a.closed.len(), 1);
        let bar = a.closed[0];
        assert_eq!(bar.timeframe, Timeframe::M5);
        assert_eq!(
            (
                bar.candle.open,
                bar.candle.high,
                bar.candle.low,
                bar.candle.close
            ),
            (10.0, 14.0, 8.0, 9.0)
        );
        assert_eq!(bar.candle.volume, 5.0);
        assert!(bar.complete());
    }

    #[test]
    fn duplicates_corrections_and_late_candles() {
        let mut agg = CandleAggregator::new();
        agg.push(c(0, 10.0)).unwrap();
        agg.push(c(1, 11.0)).unwrap();
        assert_eq!(agg.push(c(1, 11.0)).unwrap(), PushOutcome::Duplicate);
        assert_eq!(agg.push(c(0, 10.0)).unwrap(), PushOutcome::Duplicate);
        assert_eq!(
            agg.push(c(1, 12.0)).unwrap_err().code(),
            "CONFLICTING_DUPLICATE"
        );
        // Jump to minute 7: minutes 2..6 are missing, the 0..5 bar closes incomplete.
        let a = accepted(agg.push(c(7, 12.0)).unwrap());
        assert_eq!(a.missing_before, 5);
        assert_eq!(a.closed.len(), 1);
        assert_eq!(a.closed[0].minutes, 2);
        assert!(!a.closed[0].complete());
        let err = agg.push(c(3, 12.0)).unwrap_err();
        assert_eq!(err.code(), "LATE_CANDLE");
        assert!(err.to_string().contains("5m@0"));
    }

    fn hour(h: i64, close: f64) -> Candle {
        Candle {
            open_time_ms: h * 60 * MINUTE_MS,
            ..c(0, close)
        }
    }

    #[test]
    fn an_hourly_base_builds_4h_8h_and_daily_bars() {
        let mut agg = CandleAggregator::with_base(Timeframe::H1).unwrap();
        assert_eq!(agg.push(c(1, 10.0)).unwrap_err().code(), "MISALIGNED_TIME");
        let mut closed = Vec::new();
        for h in 0..24 {
            closed.extend(accepted(agg.push(hour(h, 10.0 + h as f64)).unwrap()).closed);
        }
        let count = |tf| closed.iter().filter(|b| b.timeframe == tf).count();
        assert_eq!(
            (
                count(Timeframe::H4),
                count(Timeframe::H8),
                count(Timeframe::D1)
            ),
            (6, 3, 1)
        );
        let day = closed
            .iter()
            .find(|b| b.timeframe == Timeframe::D1)
            .unwrap();
        assert_eq!(
            (day.candle.open, day.candle.close, day.candle.high),
            (10.0, 33.0, 34.0)
        );
        assert_eq!((day.minutes, day.expected()), (24, 24));
        assert_eq!(agg.push(hour(23, 33.0)).unwrap(), PushOutcome::Duplicate);
        assert_eq!(agg.push(hour(5, 15.0)).unwrap(), PushOutcome::Duplicate);
        // Hours 24..=26 missing: the next 4h bar (24..28) closes with one hour of four.
        let a = accepted(agg.push(hour(27, 5.0)).unwrap());
        assert_eq!(a.missing_before, 3);
        assert_eq!(a.closed.len(), 1);
        assert_eq!((a.closed[0].minutes, a.closed[0].expected()), (1, 4));
        assert!(CandleAggregator::with_base(Timeframe::M5).is_err());
    }
}
