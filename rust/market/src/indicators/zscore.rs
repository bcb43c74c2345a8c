//! Volume z-score: (v - SMA(v, n)) / STDDEV(v, n), both exactly as TA-Lib computes them, and 0
//! when the deviation is 0 (a flat volume run is "normal", not infinite).

use serde::{Deserialize, Serialize};

use super::{Sma, StdDev};
use crate::error::MarketResult;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeZScore {
    mean: Sma,
    deviation: StdDev,
}

impl VolumeZScore {
    pub fn new(period: usize) -> MarketResult<Self> {
        Ok(Self {
            mean: Sma::new(period)?,
            deviation: StdDev::new(period, 1.0)?,
        })
    }

    #[inline]
    pub fn update(&mut self, volume: f64) -> Option<f64> {
        let mean = self.mean.update(volume);
        let deviation = self.deviation.update(volume);
        let (mean, deviation) = (mean?, deviation?);
        Some(if deviation > 0.0 {
            (volume - mean) / deviation
        } else {
            0.0
        })
    }
}
