//! Rolling population variance and standard deviation, TA-Lib `VAR` / `STDDEV`.
//!
//! TA-Lib up to 0.6 used running sums of x and x^2 (E[x^2] - E[x]^2), which cancels
//! catastrophically when the price level is large against the spread. The TA-Lib C library
//! bundled with ta-lib-python 0.8 (C "0.8.1") made VAR cancellation-free: sums of deviations
//! from an anchor that is re-seeded at the window mean, and a relative dead zone
//! (variance < 1e-12 x mean squared deviation counts as 0) instead of the old absolute 1e-8
//! cut-off. We do the same: deviations from an anchor, the anchor re-seeded at the window mean
//! once per `period` bars (O(n) every n bars, so O(1) amortised), and the same relative dead
//! zone. Results agree with TA-Lib to rounding, not bit for bit (see tests/test_indicators.py
//! for the tolerance and why).

use serde::{Deserialize, Serialize};

use super::{check_factor, check_period, Ring};
use crate::error::MarketResult;

/// Rolling population variance of the last `period` values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RollingVariance {
    period: usize,
    window: Ring,
    anchor: Option<f64>,
    /// Sum of (x - anchor) and of (x - anchor)^2 over the window.
    sum: f64,
    sum_sq: f64,
    bars_since_anchor: usize,
}

impl RollingVariance {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self {
            period,
            window: Ring::new(period),
            anchor: None,
            sum: 0.0,
            sum_sq: 0.0,
            bars_since_anchor: period,
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let anchor = *self.anchor.get_or_insert(x);
        let d = x - anchor;
        self.sum += d;
        self.sum_sq += d * d;
        if let Some(old) = self.window.push(x) {
            let e = old - anchor;
            self.sum -= e;
            self.sum_sq -= e * e;
        }
        if !self.window.is_full() {
            return None;
        }
        self.bars_since_anchor += 1;
        if self.bars_since_anchor >= self.period {
            self.reanchor();
        }
        let mut variance = self.variance();
        // A window that has gone (almost) flat far from a stale anchor: its variance is below
        // the rounding of the anchor offset. Re-seed at the mean and look again, so a tiny real
        // deviation is not lost in the dead zone. This happens at most once per `period` bars
        // (the window must be replaced by new, nearly flat values), so it stays O(1) amortised.
        let n = self.period as f64;
        let offset = self.sum / n;
        let anchor = self.anchor.unwrap_or(0.0);
        if self.bars_since_anchor > 0
            && variance < 1e-12 * (self.sum_sq / n)
            && offset.abs() > 1e-9 * anchor.abs()
        {
            self.reanchor();
            variance = self.variance();
        }
        Some(variance)
    }

    fn variance(&self) -> f64 {
        let n = self.period as f64;
        let mean = self.sum / n;
        let mean_sq = self.sum_sq / n;
        let variance = mean_sq - mean * mean;
        // Relative dead zone: what is left is rounding of the anchor offset, not volatility.
        if variance < 1e-12 * mean_sq || variance < 0.0 {
            0.0
        } else {
            variance
        }
    }

    /// Move the anchor to the window mean and recompute the sums from the window.
    fn reanchor(&mut self) {
        let n = self.window.len() as f64;
        let anchor = self.window.iter().sum::<f64>() / n;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for x in self.window.iter() {
            let d = x - anchor;
            sum += d;
            sum_sq += d * d;
        }
        self.anchor = Some(anchor);
        self.sum = sum;
        self.sum_sq = sum_sq;
        self.bars_since_anchor = 0;
    }
}

/// TA-Lib `STDDEV`: sqrt of the rolling variance, times `nbdev`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StdDev {
    nbdev: f64,
    variance: RollingVariance,
}

impl StdDev {
    pub fn new(period: usize, nbdev: f64) -> MarketResult<Self> {
        check_period("timeperiod", period, 2)?;
        check_factor("nbdev", nbdev)?;
        Ok(Self {
            nbdev,
            variance: RollingVariance::new(period)?,
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let deviation = self.variance.update(x)?.sqrt();
        Some(if self.nbdev != 1.0 {
            deviation * self.nbdev
        } else {
            deviation
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_blip_after_a_jump_is_not_lost_in_the_dead_zone() {
        // Flat at 100, jump to 200, then flat with one blip of 1e-5: the anchor was seeded
        // around 150 and is stale when the window is all near 200.
        let period = 20;
        let mut values = vec![100.0; 30];
        values.extend(std::iter::repeat_n(200.0, 25));
        values.push(200.00001);
        let mut var = RollingVariance::new(period).unwrap();
        let mut last = None;
        for &x in &values {
            last = var.update(x);
        }
        let window = &values[values.len() - period..];
        let mean = window.iter().sum::<f64>() / period as f64;
        let exact = window.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / period as f64;
        let got = last.unwrap();
        assert!((got - exact).abs() <= 1e-6 * exact, "{got} vs {exact}");
    }

    #[test]
    fn population_deviation() {
        let mut sd = StdDev::new(2, 1.0).unwrap();
        assert_eq!(sd.update(1.0), None);
        assert_eq!(sd.update(3.0), Some(1.0));
        assert_eq!(sd.update(3.0), Some(0.0));
    }

    #[test]
    fn no_cancellation_at_a_high_level() {
        // E[x^2] - E[x]^2 gives garbage here; deviations from an anchor do not.
        let mut var = RollingVariance::new(2).unwrap();
        var.update(1e8);
        assert_eq!(var.update(1e8 + 1.0), Some(0.25));
        for x in [1e8 + 3.0, 1e8 + 2.0, 1e8 + 7.0] {
            var.update(x);
        }
        assert_eq!(var.update(1e8 + 7.0), Some(0.0));
    }
}
