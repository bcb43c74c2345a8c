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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_volume_is_zero_and_a_spike_is_positive() {
        let mut z = VolumeZScore::new(3).unwrap();
        assert_eq!(z.update(5.0), None);
        assert_eq!(z.update(5.0), None);
        assert_eq!(z.update(5.0), Some(0.0));
        // window 5, 5, 11: mean 7, population deviation sqrt(8) -> (11 - 7) / sqrt(8)
        let spike = z.update(11.0).unwrap();
        assert!((spike - 4.0 / 8f64.sqrt()).abs() < 1e-12, "{spike}");
    }
}
