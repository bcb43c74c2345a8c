//! Stochastic oscillator, TA-Lib `STOCH` with SMA smoothing (matype 0): fast %K =
//! (C - LL) / ((HH - LL) / 100) over `fastk` bars (0 when HH == LL), slow %K = SMA of fast
//! %K, slow %D = SMA of slow %K. First output at bar fastk + slowk + slowd - 3 (8 for 5/3/3).

use serde::{Deserialize, Serialize};

use super::{check_period, SlidingExtreme, Sma};
use crate::error::MarketResult;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochasticOutput {
    pub slowk: f64,
    pub slowd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stochastic {
    fastk_period: usize,
    bar: usize,
    highest: SlidingExtreme,
    lowest: SlidingExtreme,
    slowk: Sma,
    slowd: Sma,
}

impl Stochastic {
    pub fn new(fastk: usize, slowk: usize, slowd: usize) -> MarketResult<Self> {
        check_period("fastk_period", fastk, 1)?;
        check_period("slowk_period", slowk, 1)?;
        check_period("slowd_period", slowd, 1)?;
        Ok(Self {
            fastk_period: fastk,
            bar: 0,
            highest: SlidingExtreme::highest(fastk),
            lowest: SlidingExtreme::lowest(fastk),
            slowk: Sma::new(slowk)?,
            slowd: Sma::new(slowd)?,
        })
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<StochasticOutput> {
        let hh = self.highest.push(high);
        let ll = self.lowest.push(low);
        self.bar += 1;
        if self.bar < self.fastk_period {
            return None;
        }
        let diff = (hh - ll) / 100.0;
        let fastk = if diff != 0.0 {
            (close - ll) / diff
        } else {
            0.0
        };
        let slowk = self.slowk.update(fastk)?;
        let slowd = self.slowd.update(slowk)?;
        Some(StochasticOutput { slowk, slowd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_output_at_bar_8() {
        let data = crate::indicators::testutil::series(30);
        let mut st = Stochastic::new(5, 3, 3).unwrap();
        let first = data
            .iter()
            .position(|&c| st.update(c + 1.0, c - 1.0, c).is_some())
            .unwrap();
        assert_eq!(first, 8);
    }
}
