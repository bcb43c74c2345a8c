//! The indicator set of one timeframe and its scale-free features. It is updated only with
//! closed bars of its timeframe, so its values always describe the last closed bar.

use serde::{Deserialize, Serialize};

use super::names::PER_TIMEFRAME;
use crate::candles::Candle;
use crate::error::MarketResult;
use crate::indicators::{
    Atr, BollingerBands, DirectionalMovement, LogReturn, Macd, Obv, Rsi, SessionVwap, Sma, StdDev,
    Stochastic, VolumeZScore, Vwap,
};

const DAY_MS: i64 = 86_400_000;
pub(crate) const N: usize = PER_TIMEFRAME.len();

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TimeframeFeatures {
    log_return: LogReturn,
    sma: Sma,
    macd: Macd,
    rsi: Rsi,
    bbands: BollingerBands,
    atr: Atr,
    stoch: Stochastic,
    directional: DirectionalMovement,
    obv: Obv,
    cumulative_volume: f64,
    vwap: Vwap,
    session_vwap: SessionVwap,
    realized_vol: StdDev,
    volume_z: VolumeZScore,
    /// Features of the last closed bar; NaN while warming up (kept as plain f64 so the
    /// engine copies them out in one go; snapshots write NaN as null).
    #[serde(with = "nan_as_null")]
    pub(crate) latest: [f64; N],
    /// How many of `latest` are warm (finite).
    ready: usize,
}

/// JSON has no NaN: write warming-up values as null and read them back as NaN.
mod nan_as_null {
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    use super::N;

    pub fn serialize<S: Serializer>(values: &[f64; N], s: S) -> Result<S::Ok, S::Error> {
        let options: Vec<Option<f64>> =
            values.iter().map(|v| (!v.is_nan()).then_some(*v)).collect();
        options.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[f64; N], D::Error> {
        let options = Vec::<Option<f64>>::deserialize(d)?;
        if options.len() != N {
            return Err(D::Error::invalid_length(
                options.len(),
                &"one value per timeframe feature",
            ));
        }
        let mut values = [f64::NAN; N];
        for (slot, v) in values.iter_mut().zip(options) {
            *slot = v.unwrap_or(f64::NAN);
        }
        Ok(values)
    }
}

impl TimeframeFeatures {
    pub(crate) fn new() -> MarketResult<Self> {
        Ok(Self {
            log_return: LogReturn::new(),
            sma: Sma::new(20)?,
            macd: Macd::new(12, 26, 9)?,
            rsi: Rsi::new(14)?,
            bbands: BollingerBands::new(20, 2.0, 2.0)?,
            atr: Atr::new(14)?,
            stoch: Stochastic::new(5, 3, 3)?,
            directional: DirectionalMovement::new(14)?,
            obv: Obv::new(),
            cumulative_volume: 0.0,
            vwap: Vwap::new(),
            session_vwap: SessionVwap::new(),
            realized_vol: StdDev::new(20, 1.0)?,
            volume_z: VolumeZScore::new(20)?,
            latest: [f64::NAN; N],
            ready: 0,
        })
    }

    pub(crate) fn update(&mut self, bar: &Candle) {
        let (h, l, c, v) = (bar.high, bar.low, bar.close, bar.volume);
        let log_return = self.log_return.update(c);
        let sma = self.sma.update(c);
        let macd = self.macd.update(c);
        let rsi = self.rsi.update(c);
        let bb = self.bbands.update(c);
        let atr = self.atr.update(h, l, c);
        let stoch = self.stoch.update(h, l, c);
        let dm = self.directional.update(h, l, c);
        let obv = self.obv.update(c, v);
        self.cumulative_volume += v;
        let vwap = self.vwap.update(h, l, c, v);
        let session_vwap =
            self.session_vwap
                .update(bar.open_time_ms.div_euclid(DAY_MS), h, l, c, v);
        let realized_vol = log_return.and_then(|r| self.realized_vol.update(r));
        let volume_z = self.volume_z.update(v);

        let ratio = |x: f64| (x > 0.0).then(|| c / x - 1.0);
        let latest: [Option<f64>; N] = [
            log_return,
            sma.and_then(ratio),
            macd.map(|m| m.macd / c),
            macd.map(|m| m.signal / c),
            macd.map(|m| m.hist / c),
            rsi.map(|r| r / 100.0),
            bb.map(|b| {
                let width = b.upper - b.lower;
                if width > 0.0 {
                    (c - b.lower) / width
                } else {
                    0.5
                }
            }),
            bb.map(|b| (b.upper - b.lower) / b.middle),
            atr.map(|a| a / c),
            stoch.map(|s| s.slowk / 100.0),
            stoch.map(|s| s.slowd / 100.0),
            dm.adx.map(|a| a / 100.0),
            dm.plus_di.map(|d| d / 100.0),
            dm.minus_di.map(|d| d / 100.0),
            Some(if self.cumulative_volume > 0.0 {
                obv / self.cumulative_volume
            } else {
                0.0
            }),
            // 0 until some volume has traded (VWAP is 0 then): no deviation is known yet.
            Some(if vwap > 0.0 { c / vwap - 1.0 } else { 0.0 }),
            Some(if session_vwap > 0.0 {
                c / session_vwap - 1.0
            } else {
                0.0
            }),
            realized_vol,
            volume_z,
        ];
        let mut ready = 0;
        for (slot, v) in self.latest.iter_mut().zip(latest) {
            let v = v.unwrap_or(f64::NAN);
            // Finite means |v| < inf (NaN compares false): a value that overflowed is not
            // ready either.
            ready += usize::from(v.abs() < f64::INFINITY);
            *slot = v;
        }
        self.ready = ready;
    }

    /// Every value of the last closed bar is finite.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready == N
    }

    pub(crate) fn ready_fraction(&self) -> f64 {
        self.ready as f64 / N as f64
    }

    /// The value of feature `index`, None while warming up.
    pub(crate) fn get(&self, index: usize) -> Option<f64> {
        let v = self.latest[index];
        (!v.is_nan()).then_some(v)
    }
}
