//! The per-symbol feature engine: closed 1m candles in, one feature vector out per accepted
//! candle.
//!
//! - The base interval is 1m by default, or 1h ([`FeatureEngine::with_base`]: 4h/8h/1d above
//!   it, [`Timeframe::ladder`]); "1m" and "5m/15m/1h" below stand for the base and its ladder.
//! - 1m indicators update with every candle; 5m/15m/1h indicators update only when the
//!   [`CandleAggregator`] closes a bar, so a higher timeframe always contributes its last
//!   CLOSED bar (no look-ahead: a 5m bar is used from the candle that completes it on).
//! - Values that are still warming up are NaN, and never silently: `ready` is false until every
//!   value is finite, and `ready_{tf}` features say how warm each timeframe is.
//! - [`FeatureEngine::snapshot`] / [`FeatureEngine::restore`] carry the whole state (aggregator
//!   and indicators) as bytes, so a restarted service continues bit for bit.
//! - The batch path ([`FeatureEngine::update_batch`]) is a loop over [`FeatureEngine::update`]:
//!   training data and live data come from the same code.
//! - A higher bar built from fewer 1m candles than its interval (minutes without a candle) is
//!   fed to the indicators as built, never dropped or filled in (the rule and its reasons are in
//!   `kstrade.features.stage`); [`FeatureEngine::incomplete_bars`] counts them.

use serde::{Deserialize, Serialize};

use super::names::{FEATURE_COUNT, FEATURE_VERSION, GLOBAL, PER_TIMEFRAME};
use super::timeframe::{TimeframeFeatures, N};
use crate::candles::{Candle, CandleAggregator, Ladder, PushOutcome, Timeframe};
use crate::error::{MarketError, MarketResult};

const VOL_LOW: f64 = 0.75;
const VOL_HIGH: f64 = 1.5;
const SNAPSHOT_FORMAT: u32 = 1;
const DAY_MS: i64 = 86_400_000;

struct ClockTable {
    minutes: [(f64, f64); 1440],
    days: [(f64, f64); 7],
}

fn clock_table() -> &'static ClockTable {
    static TABLE: std::sync::OnceLock<ClockTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let point = |i: usize, n: usize| {
            let angle = std::f64::consts::TAU * i as f64 / n as f64;
            (angle.sin(), angle.cos())
        };
        ClockTable {
            minutes: std::array::from_fn(|i| point(i, 1440)),
            days: std::array::from_fn(|i| point(i, 7)),
        }
    })
}

/// One feature vector, in the order of [`super::feature_names`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    /// Open time (UTC epoch ms) of the 1m candle that produced it.
    pub open_time_ms: i64,
    pub values: Vec<f64>,
    /// True when every value is finite (all timeframes warm).
    pub ready: bool,
    /// Higher bars that closed with this candle (for publishing `market.candles.*`).
    pub closed: Vec<crate::candles::ClosedBar>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureEngine {
    aggregator: CandleAggregator,
    timeframes: [TimeframeFeatures; 4],
    vol_mean: Option<f64>,
    candles: u64,
    /// 5m, 15m and 1h bars (the ladder's higher timeframes) fed to the indicators with fewer 1m
    /// candles than their interval, since this engine was created: a count for the stage's
    /// metrics, not state (a restored engine counts from zero).
    #[serde(skip)]
    incomplete_bars: [u64; 3],
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    feature_version: String,
    engine: FeatureEngine,
}

impl FeatureEngine {
    /// An engine on 1m candles (5m, 15m and 1h built from them).
    pub fn new() -> Self {
        let tf = || TimeframeFeatures::new().expect("fixed periods are valid");
        Self {
            aggregator: CandleAggregator::new(),
            timeframes: [tf(), tf(), tf(), tf()],
            vol_mean: None,
            candles: 0,
            incomplete_bars: [0; 3],
        }
    }

    /// An engine on `base` candles, with the higher timeframes of `base.ladder()`.
    pub fn with_base(base: Timeframe) -> MarketResult<Self> {
        Ok(Self {
            aggregator: CandleAggregator::with_base(base)?,
            ..Self::new()
        })
    }

    /// The base interval, then the timeframes built from it.
    pub fn ladder(&self) -> Ladder {
        self.aggregator.ladder()
    }

    /// The names of this engine's values, in order ([`super::feature_names_for`]).
    pub fn names(&self) -> Vec<String> {
        super::feature_names_for(self.ladder()[0]).expect("an engine's base has a ladder")
    }

    /// Smoothing of the slow mean of the base timeframe's realized volatility: about a day of
    /// base candles (2 / 1441 on 1m candles).
    #[inline]
    fn vol_mean_alpha(&self) -> f64 {
        match self.ladder()[0] {
            Timeframe::M1 => 2.0 / 1441.0,
            base => 2.0 / ((DAY_MS / base.millis()) as f64 + 1.0),
        }
    }

    /// How many higher bars (5m, 15m and 1h on a 1m base) the indicators were fed with fewer
    /// base candles than their interval (used as built: see the module doc), since this engine
    /// was created.
    pub fn incomplete_bars(&self) -> [(Timeframe, u64); 3] {
        let [_, higher @ ..] = self.ladder();
        let [a, b, c] = self.incomplete_bars;
        [(higher[0], a), (higher[1], b), (higher[2], c)]
    }

    /// 1m candles accepted so far.
    pub fn candles(&self) -> u64 {
        self.candles
    }

    /// Push one closed 1m candle. `Ok(None)` means a duplicate that was ignored; errors are
    /// invalid, late or conflicting candles (see [`CandleAggregator`]), and leave the state as
    /// it was.
    pub fn update(&mut self, candle: Candle) -> MarketResult<Option<FeatureVector>> {
        let mut row = [0.0; FEATURE_COUNT];
        Ok(self
            .update_row(candle, &mut row)?
            .map(|accepted| FeatureVector {
                open_time_ms: candle.open_time_ms,
                values: row.to_vec(),
                ready: accepted.ready,
                closed: accepted.closed,
            }))
    }

    /// Like [`update`](Self::update), appending the values to `out` (no allocation when `out`
    /// has room). Returns `(ready, closed higher bars)`.
    pub fn update_into(
        &mut self,
        candle: Candle,
        out: &mut Vec<f64>,
    ) -> MarketResult<Option<(bool, Vec<crate::candles::ClosedBar>)>> {
        let mut row = [0.0; FEATURE_COUNT];
        let accepted = self.update_row(candle, &mut row)?;
        if accepted.is_some() {
            out.extend_from_slice(&row);
        }
        Ok(accepted.map(|a| (a.ready, a.closed)))
    }

    /// Like [`update`](Self::update), writing the values into a row the caller owns: the
    /// allocation-free core that the other entry points (and the Python binding, which writes
    /// straight into the vector it returns) share. `row` is left as it was for a duplicate or
    /// an error.
    pub fn update_row(
        &mut self,
        candle: Candle,
        row: &mut [f64; FEATURE_COUNT],
    ) -> MarketResult<Option<RowUpdate>> {
        candle.validate(self.ladder()[0])?;
        self.update_row_validated(candle, row)
    }

    /// [`update_row`](Self::update_row) for a candle already validated as 1m (see
    /// [`CandleAggregator::push_validated`]).
    pub fn update_row_validated(
        &mut self,
        candle: Candle,
        row: &mut [f64; FEATURE_COUNT],
    ) -> MarketResult<Option<RowUpdate>> {
        let accepted = match self.aggregator.push_validated(candle)? {
            PushOutcome::Duplicate => return Ok(None),
            PushOutcome::Accepted(a) => a,
        };
        self.candles += 1;
        self.timeframes[0].update(&candle);
        let ladder = self.ladder();
        for bar in &accepted.closed {
            let index = ladder
                .iter()
                .position(|&tf| tf == bar.timeframe)
                .unwrap_or(0);
            // An incomplete bar updates the indicators as built (kstrade.features.stage).
            if !bar.complete() {
                if let Some(n) = index
                    .checked_sub(1)
                    .and_then(|i| self.incomplete_bars.get_mut(i))
                {
                    *n += 1;
                }
            }
            self.timeframes[index].update(&bar.candle);
        }

        let (per_timeframe, global) = row.split_at_mut(4 * N);
        for (slots, tf) in per_timeframe.chunks_exact_mut(N).zip(&self.timeframes) {
            slots.copy_from_slice(&tf.latest);
        }
        let global: &mut [f64; GLOBAL.len()] = global
            .try_into()
            .expect("GLOBAL features follow the per-timeframe ones");

        // Multi-timeframe alignment: do the timeframes agree on the side of their SMA20?
        let close_sma = |tf: &TimeframeFeatures| tf.get(1);
        global[0] = if self.timeframes.iter().all(|tf| close_sma(tf).is_some()) {
            let sum: f64 = self
                .timeframes
                .iter()
                .map(|tf| sign(close_sma(tf).unwrap_or(0.0)))
                .sum();
            sum / 4.0
        } else {
            f64::NAN
        };

        // Volatility regime: 1m realized vol against its slow mean.
        let realized = self.timeframes[0].get(N - 2);
        let ratio = match realized {
            Some(vol) => {
                let mean = match self.vol_mean {
                    Some(m) => m + self.vol_mean_alpha() * (vol - m),
                    None => vol,
                };
                self.vol_mean = Some(mean);
                if mean > 0.0 {
                    vol / mean
                } else {
                    1.0
                }
            }
            None => f64::NAN,
        };
        global[1] = ratio;
        global[2..5].copy_from_slice(&if ratio.is_nan() {
            [f64::NAN; 3]
        } else {
            [
                f64::from(u8::from(ratio < VOL_LOW)),
                f64::from(u8::from((VOL_LOW..=VOL_HIGH).contains(&ratio))),
                f64::from(u8::from(ratio > VOL_HIGH)),
            ]
        });

        // Clock features (UTC), from the candle's open time; the unit-circle points of the
        // 1440 minutes and 7 days are computed once (sin/cos was a fifth of the update).
        let (minute_sin, minute_cos) =
            clock_table().minutes[(candle.open_time_ms.rem_euclid(DAY_MS) / 60_000) as usize];
        // 1970-01-01 was a Thursday; Monday = 0.
        let (day_sin, day_cos) =
            clock_table().days[(candle.open_time_ms.div_euclid(DAY_MS) + 3).rem_euclid(7) as usize];
        global[5..9].copy_from_slice(&[minute_sin, minute_cos, day_sin, day_cos]);
        for (slot, tf) in global[9..13].iter_mut().zip(&self.timeframes) {
            *slot = tf.ready_fraction();
        }
        global[13] = f64::from(accepted.missing_before);
        debug_assert_eq!(GLOBAL.len() + 4 * PER_TIMEFRAME.len(), FEATURE_COUNT);

        // Each timeframe counted its finite values when it last updated, so only the global
        // features are checked here (reading the whole row back was a twentieth of an update).
        // Finite means |v| < inf (NaN compares false).
        let ready = self.timeframes.iter().all(TimeframeFeatures::is_ready)
            && global.iter().all(|v| v.abs() < f64::INFINITY);
        Ok(Some(RowUpdate {
            ready,
            closed: accepted.closed,
        }))
    }

    /// Run [`update`](Self::update) over many candles: the training-data path. Returns the
    /// values of accepted candles feature by feature (each feature's rows contiguous, the
    /// layout of a columnar table), their open times and ready flags, and, for each candle
    /// that was not accepted, its index and the error (duplicates are not errors and produce
    /// no row).
    pub fn update_batch(&mut self, candles: &[Candle]) -> BatchOutput {
        // Rows go through a small row-major block that is then written out column by column:
        // both stay in cache, and the large output is written once, sequentially.
        const BLOCK: usize = 256;
        let capacity = candles.len();
        let mut out = BatchOutput {
            columns: vec![0.0; capacity * FEATURE_COUNT],
            ..BatchOutput::default()
        };
        let mut block: Vec<f64> = Vec::with_capacity(BLOCK * FEATURE_COUNT);
        let mut flushed = 0;
        let flush = |block: &mut Vec<f64>, columns: &mut [f64], flushed: &mut usize| {
            let rows = block.len() / FEATURE_COUNT;
            for j in 0..FEATURE_COUNT {
                let column = &mut columns[j * capacity + *flushed..j * capacity + *flushed + rows];
                for (i, slot) in column.iter_mut().enumerate() {
                    *slot = block[i * FEATURE_COUNT + j];
                }
            }
            *flushed += rows;
            block.clear();
        };
        for (i, &candle) in candles.iter().enumerate() {
            match self.update_into(candle, &mut block) {
                Ok(Some((ready, _))) => {
                    out.open_time_ms.push(candle.open_time_ms);
                    out.ready.push(ready);
                    if block.len() == BLOCK * FEATURE_COUNT {
                        flush(&mut block, &mut out.columns, &mut flushed);
                    }
                }
                Ok(None) => {}
                Err(e) => out.rejected.push((i, e)),
            }
        }
        flush(&mut block, &mut out.columns, &mut flushed);
        let rows = out.open_time_ms.len();
        if rows < capacity {
            // Some candles gave no row: close the gaps between the columns.
            for j in 1..FEATURE_COUNT {
                out.columns
                    .copy_within(j * capacity..j * capacity + rows, j * rows);
            }
            out.columns.truncate(rows * FEATURE_COUNT);
        }
        out
    }

    /// The feature vectors of a batch, one `Vec` per accepted candle (for tests and tools).
    pub fn rows(out: &BatchOutput) -> Vec<Vec<f64>> {
        let rows = out.open_time_ms.len();
        (0..rows)
            .map(|i| {
                (0..FEATURE_COUNT)
                    .map(|j| out.columns[j * rows + i])
                    .collect()
            })
            .collect()
    }

    /// The whole state as bytes (self-describing, versioned).
    pub fn snapshot(&self) -> MarketResult<Vec<u8>> {
        let snap = Snapshot {
            format: SNAPSHOT_FORMAT,
            feature_version: FEATURE_VERSION.to_string(),
            engine: self.clone(),
        };
        serde_json::to_vec(&snap).map_err(|e| MarketError::Snapshot(e.to_string()))
    }

    pub fn restore(bytes: &[u8]) -> MarketResult<Self> {
        let snap: Snapshot =
            serde_json::from_slice(bytes).map_err(|e| MarketError::Snapshot(e.to_string()))?;
        if snap.format != SNAPSHOT_FORMAT || snap.feature_version != FEATURE_VERSION {
            return Err(MarketError::Snapshot(format!(
                "snapshot is format {} / {}, this engine is format {} / {}",
                snap.format, snap.feature_version, SNAPSHOT_FORMAT, FEATURE_VERSION
            )));
        }
        Ok(snap.engine)
    }
}

impl Default for FeatureEngine {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`FeatureEngine::update_row`] reports besides the values.
#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    /// True when every value is finite (all timeframes warm).
    pub ready: bool,
    /// Higher bars that closed with this candle.
    pub closed: Vec<crate::candles::ClosedBar>,
}

#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Feature-major: `FEATURE_COUNT` columns of one value per accepted candle.
    pub columns: Vec<f64>,
    pub open_time_ms: Vec<i64>,
    pub ready: Vec<bool>,
    pub rejected: Vec<(usize, MarketError)>,
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candles::MINUTE_MS;

    fn candles(n: usize) -> Vec<Candle> {
        crate::indicators::testutil::series(n)
            .into_iter()
            .enumerate()
            .map(|(i, c)| Candle {
                open_time_ms: i as i64 * MINUTE_MS,
                open: c,
                high: c + 0.5,
                low: c - 0.5,
                close: c,
                volume: 1.0 + (i % 7) as f64,
            })
            .collect()
    }

    #[test]
    fn batch_skips_rejected_and_duplicate_rows() {
        let mut data = candles(600);
        data.insert(300, data[299]); // duplicate
        data[100].low = -1.0; // invalid
        let out = FeatureEngine::new().update_batch(&data);
        assert_eq!(out.open_time_ms.len(), 599);
        assert_eq!(out.columns.len(), 599 * FEATURE_COUNT);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].0, 100);
        let mut streamed = FeatureEngine::new();
        let want: Vec<Vec<f64>> = data
            .iter()
            .filter_map(|&x| streamed.update(x).ok().flatten())
            .map(|v| v.values)
            .collect();
        let got = FeatureEngine::rows(&out);
        for (x, y) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!(x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()));
        }
    }

    /// At a price level where a feature overflows (the Bollinger bands at 1e300), the vector is
    /// not ready and each timeframe's ready fraction says which share of it is usable.
    #[test]
    fn an_overflowing_value_is_not_ready() {
        let mut engine = FeatureEngine::new();
        let mut last = None;
        for (i, c) in candles(3000).into_iter().enumerate() {
            let scale = 1e300 * (1.0 + (i % 2) as f64);
            let big = Candle {
                open: c.open * scale / 100.0,
                high: c.high * scale / 100.0,
                low: c.low * scale / 100.0,
                close: c.close * scale / 100.0,
                ..c
            };
            last = engine.update(big).unwrap();
        }
        let v = last.unwrap();
        assert!(!v.ready);
        let names = crate::features::feature_names();
        for (k, tf) in ["1m", "5m", "15m", "1h"].iter().enumerate() {
            let values = &v.values[k * N..(k + 1) * N];
            let finite = values.iter().filter(|x| x.is_finite()).count();
            let ready = names
                .iter()
                .position(|n| *n == format!("ready_{tf}"))
                .unwrap();
            assert_eq!(v.values[ready], finite as f64 / N as f64, "{tf}");
        }
        // 3000 candles warm every timeframe (see the next test): what is not finite overflowed.
        assert!(
            v.values[..4 * N].iter().any(|x| !x.is_finite()),
            "nothing overflowed: {:?}",
            v.values
        );
    }

    /// The rule for an incomplete higher bar: it is fed to the indicators as built (its close is
    /// the last minute that came), and counted.
    #[test]
    fn an_incomplete_bar_updates_the_indicators_as_built_and_is_counted() {
        let log_return_5m = crate::features::feature_names()
            .iter()
            .position(|n| n == "5m_log_return")
            .unwrap();
        let mut engine = FeatureEngine::new();
        let mut last = None;
        // Minute 3 of the first 5m bar never comes; minutes 5..=9 make a complete bar.
        for (i, c) in candles(10).into_iter().enumerate() {
            if i != 3 {
                last = Some(engine.update(c).unwrap().unwrap());
            }
        }
        let v = last.unwrap();
        let closes: Vec<f64> = candles(10).iter().map(|c| c.close).collect();
        assert_eq!(
            v.values[log_return_5m].to_bits(),
            (closes[9] / closes[4]).ln().to_bits()
        );
        let counts = engine.incomplete_bars();
        assert_eq!(
            counts,
            [(Timeframe::M5, 1), (Timeframe::M15, 0), (Timeframe::H1, 0)]
        );
        // Not state: a restored engine counts from zero.
        let restored = FeatureEngine::restore(&engine.snapshot().unwrap()).unwrap();
        assert_eq!(restored.incomplete_bars()[0], (Timeframe::M5, 0));
    }

    #[test]
    fn an_hourly_engine_warms_up_on_its_ladder_and_streams_like_its_batch() {
        let hours: Vec<Candle> = candles(24 * 60)
            .into_iter()
            .map(|c| Candle {
                open_time_ms: c.open_time_ms * 60,
                ..c
            })
            .collect();
        let mut engine = FeatureEngine::with_base(Timeframe::H1).unwrap();
        assert_eq!(
            engine.update(candles(2)[1]).unwrap_err().code(),
            "MISALIGNED_TIME"
        );
        let batch = engine.update_batch(&hours);
        assert!(batch.rejected.is_empty());
        assert!(
            *batch.ready.last().unwrap(),
            "60 days warm the daily timeframe"
        );
        let first_ready = batch.ready.iter().position(|&r| r).unwrap();
        assert!(
            first_ready > 24 * 30,
            "ready after {first_ready} hours: the 1d indicators need ~34 days"
        );
        let mut streamed = FeatureEngine::with_base(Timeframe::H1).unwrap();
        let last = hours
            .iter()
            .map(|&c| streamed.update(c).unwrap().unwrap())
            .last()
            .unwrap();
        let rows = FeatureEngine::rows(&batch);
        assert_eq!(rows.last().unwrap(), &last.values);
        assert_eq!(engine.names()[FEATURE_COUNT - 1], "gap_hours");
        let restored = FeatureEngine::restore(&engine.snapshot().unwrap()).unwrap();
        assert_eq!(restored.ladder()[3], Timeframe::D1);
    }

    #[test]
    fn warms_up_then_is_ready_and_finite() {
        let mut engine = FeatureEngine::new();
        let mut last = None;
        for c in candles(3000) {
            last = engine.update(c).unwrap();
        }
        let v = last.unwrap();
        assert_eq!(v.values.len(), FEATURE_COUNT);
        assert!(v.ready, "{:?}", v.values);
    }

    #[test]
    fn snapshot_restore_continues_bit_for_bit() {
        let data = candles(2500);
        let mut whole = FeatureEngine::new();
        let a = FeatureEngine::rows(&whole.update_batch(&data));
        let mut first = FeatureEngine::new();
        first.update_batch(&data[..1234]);
        let mut second = FeatureEngine::restore(&first.snapshot().unwrap()).unwrap();
        let b = FeatureEngine::rows(&second.update_batch(&data[1234..]));
        let mut streamed = FeatureEngine::new();
        let c: Vec<Vec<f64>> = data
            .iter()
            .map(|&x| streamed.update(x).unwrap().unwrap().values)
            .collect();
        let same = |x: &f64, y: &f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        assert_eq!(a.len(), c.len());
        for (x, y) in a.iter().flatten().zip(c.iter().flatten()) {
            assert!(same(x, y), "batch != stream");
        }
        assert_eq!(a[1234..].len(), b.len());
        for (x, y) in a[1234..].iter().flatten().zip(b.iter().flatten()) {
            assert!(same(x, y), "restored != uninterrupted");
        }
    }
}
