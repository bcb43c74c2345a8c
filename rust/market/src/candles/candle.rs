//! A candle is validated once, at the edge: finite numbers, positive prices, a high at or above
//! the body, a low at or below it, non-negative volume, an open time on its interval's UTC
//! boundary. Everything downstream can then do arithmetic without checks.

use serde::{Deserialize, Serialize};

use crate::error::{MarketError, MarketResult};

pub const MINUTE_MS: i64 = 60_000;
const MAX_TIME_MS: u64 = 1 << 53;

/// The timeframes of the pipeline (`market.candles.{symbol}.{interval}`): the 1m ladder
/// (1m, 5m, 15m, 1h) by default, the 1h ladder (1h, 4h, 8h, 1d) for hourly data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Timeframe {
    M1,
    M5,
    M15,
    H1,
    H4,
    H8,
    D1,
}

/// Base interval, then the three higher timeframes built from it (see [`Timeframe::ladder`]).
pub type Ladder = [Timeframe; 4];

impl Timeframe {
    /// The default ladder: 1m candles, with 5m, 15m and 1h built from them.
    pub const ALL: Ladder = [Timeframe::M1, Timeframe::M5, Timeframe::M15, Timeframe::H1];
    /// The timeframes built from 1m candles.
    pub const HIGHER: [Timeframe; 3] = [Timeframe::M5, Timeframe::M15, Timeframe::H1];
    /// Every timeframe a candle may have.
    pub const KNOWN: [Timeframe; 7] = [
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::H1,
        Timeframe::H4,
        Timeframe::H8,
        Timeframe::D1,
    ];

    /// The timeframes a pipeline on this base interval computes features on: 1m -> 5m/15m/1h,
    /// 1h -> 4h/8h/1d. Not 1w above 1h: the indicators need about 34 bars to warm up, and 34
    /// weeks is most of a year of hourly history (the bundled EURUSD file holds one).
    pub fn ladder(self) -> MarketResult<Ladder> {
        match self {
            Timeframe::M1 => Ok(Self::ALL),
            Timeframe::H1 => Ok([Timeframe::H1, Timeframe::H4, Timeframe::H8, Timeframe::D1]),
            other => Err(MarketError::InvalidParameter(format!(
                "base interval {}: features are built on 1m or 1h candles",
                other.as_str()
            ))),
        }
    }

    pub fn minutes(self) -> i64 {
        match self {
            Timeframe::M1 => 1,
            Timeframe::M5 => 5,
            Timeframe::M15 => 15,
            Timeframe::H1 => 60,
            Timeframe::H4 => 240,
            Timeframe::H8 => 480,
            Timeframe::D1 => 1440,
        }
    }

    pub fn millis(self) -> i64 {
        self.minutes() * MINUTE_MS
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::H1 => "1h",
            Timeframe::H4 => "4h",
            Timeframe::H8 => "8h",
            Timeframe::D1 => "1d",
        }
    }

    pub fn parse(s: &str) -> MarketResult<Self> {
        match s {
            "1m" => Ok(Timeframe::M1),
            "5m" => Ok(Timeframe::M5),
            "15m" => Ok(Timeframe::M15),
            "1h" => Ok(Timeframe::H1),
            "4h" => Ok(Timeframe::H4),
            "8h" => Ok(Timeframe::H8),
            "1d" => Ok(Timeframe::D1),
            other => Err(MarketError::UnknownInterval(other.to_string())),
        }
    }

    /// The open time of the bar of this timeframe that contains `time_ms` (UTC epoch ms).
    #[inline]
    pub fn bucket(self, time_ms: i64) -> i64 {
        time_ms - self.offset(time_ms)
    }

    /// Whether `time_ms` is the open time of a bar of this timeframe.
    #[inline]
    pub fn is_boundary(self, time_ms: i64) -> bool {
        self.offset(time_ms) == 0
    }

    /// How far into its bar `time_ms` lies. One constant divisor per arm, which the compiler
    /// turns into a multiplication: a 64-bit division by a run-time value costs tens of
    /// cycles, and every 1m candle needs several of these.
    #[inline]
    fn offset(self, time_ms: i64) -> i64 {
        match self {
            Timeframe::M1 => time_ms.rem_euclid(MINUTE_MS),
            Timeframe::M5 => time_ms.rem_euclid(5 * MINUTE_MS),
            Timeframe::M15 => time_ms.rem_euclid(15 * MINUTE_MS),
            Timeframe::H1 => time_ms.rem_euclid(60 * MINUTE_MS),
            Timeframe::H4 => time_ms.rem_euclid(240 * MINUTE_MS),
            Timeframe::H8 => time_ms.rem_euclid(480 * MINUTE_MS),
            Timeframe::D1 => time_ms.rem_euclid(1440 * MINUTE_MS),
        }
    }
}

/// One OHLCV bar. `open_time_ms` is the UTC epoch time at which the bar opens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    pub open_time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Candle {
    /// A validated candle of `interval`; the error says exactly what is wrong.
    pub fn new(
        interval: Timeframe,
        open_time_ms: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
    ) -> MarketResult<Self> {
        let candle = Self {
            open_time_ms,
            open,
            high,
            low,
            close,
            volume,
        };
        candle.validate(interval)?;
        Ok(candle)
    }

    pub fn validate(&self, interval: Timeframe) -> MarketResult<()> {
        if self.is_valid(interval) {
            return Ok(());
        }
        self.first_problem(interval)
    }

    /// Every rule of [`validate`](Self::validate) in one expression without a branch per rule:
    /// the path every good candle takes, twice per candle in the feature engine (NaN fails
    /// every comparison, so it lands in the detailed checks).
    #[inline]
    fn is_valid(&self, interval: Timeframe) -> bool {
        let (o, h, l, c, v) = (self.open, self.high, self.low, self.close, self.volume);
        let finite = o.is_finite() & h.is_finite() & l.is_finite() & c.is_finite() & v.is_finite();
        let positive = (o > 0.0) & (h > 0.0) & (l > 0.0) & (c > 0.0);
        let shape = (h >= o.max(c)) & (l <= o.min(c)) & (v >= 0.0);
        let time = (self.open_time_ms.unsigned_abs() <= MAX_TIME_MS)
            & interval.is_boundary(self.open_time_ms);
        finite & positive & shape & time
    }

    /// The first rule a candle breaks, in the order the errors are documented.
    fn first_problem(&self, interval: Timeframe) -> MarketResult<()> {
        for (field, value) in [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
            ("volume", self.volume),
        ] {
            if !value.is_finite() {
                return Err(MarketError::NonFinite { field });
            }
        }
        for (field, value) in [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
        ] {
            if value <= 0.0 {
                return Err(MarketError::NonPositivePrice { field, value });
            }
        }
        let body_top = self.open.max(self.close);
        if self.high < body_top {
            return Err(MarketError::HighBelowBody {
                high: self.high,
                body_top,
            });
        }
        let body_bottom = self.open.min(self.close);
        if self.low > body_bottom {
            return Err(MarketError::LowAboveBody {
                low: self.low,
                body_bottom,
            });
        }
        if self.volume < 0.0 {
            return Err(MarketError::NegativeVolume(self.volume));
        }
        // Keeps time arithmetic (bar ends, gaps) far from i64 overflow.
        if self.open_time_ms.unsigned_abs() > MAX_TIME_MS {
            return Err(MarketError::TimeOutOfRange(self.open_time_ms));
        }
        if !interval.is_boundary(self.open_time_ms) {
            return Err(MarketError::Misaligned {
                open_time_ms: self.open_time_ms,
                interval: interval.as_str(),
            });
        }
        Ok(())
    }

    /// The time the bar closes (exclusive end), for a candle of `interval`.
    pub fn close_time_ms(&self, interval: Timeframe) -> i64 {
        self.open_time_ms + interval.millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: MarketResult<Candle>) -> &'static str {
        r.unwrap_err().code()
    }

    #[test]
    fn buckets_floor_to_utc_boundaries_before_and_after_the_epoch() {
        for tf in Timeframe::KNOWN {
            let width = tf.millis();
            for t in [
                -width - 1,
                -width,
                -1,
                0,
                1,
                width - 1,
                width,
                1_700_006_460_000,
            ] {
                assert_eq!(tf.bucket(t), t.div_euclid(width) * width, "{tf:?} {t}");
                assert_eq!(tf.is_boundary(t), t.rem_euclid(width) == 0, "{tf:?} {t}");
            }
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_candle_with_its_code() {
        let m = Timeframe::M1;
        assert!(Candle::new(m, 0, 1.0, 2.0, 0.5, 1.5, 3.0).is_ok());
        assert_eq!(
            code(Candle::new(m, 0, 1.0, 1.2, 0.5, 1.5, 3.0)),
            "HIGH_BELOW_BODY"
        );
        assert_eq!(
            code(Candle::new(m, 0, 1.0, 2.0, 1.1, 1.5, 3.0)),
            "LOW_ABOVE_BODY"
        );
        assert_eq!(
            code(Candle::new(m, 0, 1.0, 2.0, 0.5, 1.5, -1.0)),
            "NEGATIVE_VOLUME"
        );
        assert_eq!(
            code(Candle::new(m, 0, f64::NAN, 2.0, 0.5, 1.5, 1.0)),
            "NON_FINITE"
        );
        assert_eq!(
            code(Candle::new(m, 0, 1.0, f64::INFINITY, 0.5, 1.5, 1.0)),
            "NON_FINITE"
        );
        assert_eq!(
            code(Candle::new(m, 0, 1.0, 2.0, -0.5, 1.5, 1.0)),
            "NON_POSITIVE_PRICE"
        );
        assert_eq!(
            code(Candle::new(m, 1, 1.0, 2.0, 0.5, 1.5, 1.0)),
            "MISALIGNED_TIME"
        );
        assert_eq!(
            code(Candle::new(m, i64::MAX - 7, 1.0, 2.0, 0.5, 1.5, 1.0)),
            "TIME_OUT_OF_RANGE"
        );
        assert_eq!(
            Timeframe::parse("2m").unwrap_err().code(),
            "UNKNOWN_INTERVAL"
        );
    }

    #[test]
    fn ladders_start_at_their_base_and_divide_evenly() {
        for base in Timeframe::KNOWN {
            let Ok(ladder) = base.ladder() else {
                assert!(![Timeframe::M1, Timeframe::H1].contains(&base));
                continue;
            };
            assert_eq!(ladder[0], base);
            for pair in ladder.windows(2) {
                assert_eq!(pair[1].minutes() % pair[0].minutes(), 0, "{pair:?}");
            }
            for tf in ladder {
                assert_eq!(Timeframe::parse(tf.as_str()).unwrap(), tf);
            }
        }
        assert_eq!(
            Timeframe::M5.ladder().unwrap_err().code(),
            "INVALID_PARAMETER"
        );
    }
}
