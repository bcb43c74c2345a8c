//! Bollinger Bands, TA-Lib `BBANDS` with the SMA middle band (matype 0): middle = SMA, bands
//! = middle +/- nbdev x the population standard deviation of the window, computed without
//! cancellation as in TA-Lib's `VAR` (see [`super::stddev`]).

use serde::{Deserialize, Serialize};

use super::stddev::RollingVariance;
use super::{check_factor, check_period, Sma};
use crate::error::MarketResult;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BollingerOutput {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BollingerBands {
    nbdev_up: f64,
    nbdev_down: f64,
    middle: Sma,
    variance: RollingVariance,
}

impl BollingerBands {
    pub fn new(period: usize, nbdev_up: f64, nbdev_down: f64) -> MarketResult<Self> {
        check_period("timeperiod", period, 2)?;
        check_factor("nbdevup", nbdev_up)?;
        check_factor("nbdevdn", nbdev_down)?;
        Ok(Self {
            nbdev_up,
            nbdev_down,
            middle: Sma::new(period)?,
            variance: RollingVariance::new(period)?,
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<BollingerOutput> {
        let middle = self.middle.update(x);
        let variance = self.variance.update(x);
        let (middle, deviation) = (middle?, variance?.sqrt());
        let (upper, lower) = if self.nbdev_up == self.nbdev_down {
            if self.nbdev_up == 1.0 {
                (middle + deviation, middle - deviation)
            } else {
                let width = deviation * self.nbdev_up;
                (middle + width, middle - width)
            }
        } else {
            (
                middle + deviation * self.nbdev_up,
                middle - deviation * self.nbdev_down,
            )
        };
        Some(BollingerOutput {
            upper,
            middle,
            lower,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_series_has_zero_width() {
        let mut bb = BollingerBands::new(3, 2.0, 2.0).unwrap();
        bb.update(4.0);
        bb.update(4.0);
        let out = bb.update(4.0).unwrap();
        assert_eq!((out.upper, out.middle, out.lower), (4.0, 4.0, 4.0));
    }
}
