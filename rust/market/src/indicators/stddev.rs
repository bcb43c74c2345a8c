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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "VarianceState", into = "VarianceState")]
pub struct RollingVariance {
    period: usize,
    window: Ring,
    anchor: Option<f64>,
    /// Sum of (x - anchor) and of (x - anchor)^2 over the window.
    sum: f64,
    sum_sq: f64,
    bars_since_anchor: usize,
    /// How many of the newest values are equal (capped at `period`): a flat window has
    /// variance exactly 0, as TA-Lib says, where the running sums would leave rounding residue
    /// of the larger deviations they held earlier.
    equal_run: usize,
}

/// How a rolling variance is written in snapshots (the fields they have always had; the run of
/// equal values is read back from the window).
#[derive(Serialize, Deserialize)]
struct VarianceState {
    period: usize,
    window: Ring,
    anchor: Option<f64>,
    sum: f64,
    sum_sq: f64,
    bars_since_anchor: usize,
}

impl From<VarianceState> for RollingVariance {
    fn from(s: VarianceState) -> Self {
        let values: Vec<f64> = s.window.iter().collect();
        let equal_run = values.last().map_or(0, |&newest| {
            values.iter().rev().take_while(|&&x| x == newest).count()
        });
        Self {
            period: s.period,
            window: s.window,
            anchor: s.anchor,
            sum: s.sum,
            sum_sq: s.sum_sq,
            bars_since_anchor: s.bars_since_anchor,
            equal_run,
        }
    }
}

impl From<RollingVariance> for VarianceState {
    fn from(v: RollingVariance) -> Self {
        Self {
            period: v.period,
            window: v.window,
            anchor: v.anchor,
            sum: v.sum,
            sum_sq: v.sum_sq,
            bars_since_anchor: v.bars_since_anchor,
        }
    }
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
            equal_run: 0,
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let same = self.window.newest() == Some(x);
        self.equal_run = if same {
            (self.equal_run + 1).min(self.period)
        } else {
            1
        };
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
        if self.equal_run == self.period {
            // Every value of the window is x: anchor there, where every deviation is exactly
            // 0, so the sums are exact again when the window moves on.
            self.anchor = Some(x);
            self.sum = 0.0;
            self.sum_sq = 0.0;
            self.bars_since_anchor = 0;
            return Some(0.0);
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

    /// A window that has gone flat has variance exactly 0 (TA-Lib's answer), whatever the
    /// sums held before. This series (ticks of 1/8, found by a soak run of the TA-Lib property
    /// test) gave 2.4e-8 at bar 28, the first bar whose window is flat.
    #[test]
    fn a_flat_window_is_exactly_zero() {
        let period = 20;
        let mut ticks = vec![4558, 4541, 4557, 4557, 4575, 4575, 4580, 4580, 4561];
        ticks.extend(std::iter::repeat_n(4565, 40));
        let values: Vec<f64> = ticks.iter().map(|&t| f64::from(t) * 0.125).collect();
        let mut sd = StdDev::new(period, 1.0).unwrap();
        let out: Vec<Option<f64>> = values.iter().map(|&x| sd.update(x)).collect();
        assert!(
            out[28..].iter().all(|&v| v == Some(0.0)),
            "{:?}",
            &out[28..]
        );
        // Snapshot inside the flat run: the restored run of equal values is the same, and so
        // is everything after.
        let mut a = RollingVariance::new(period).unwrap();
        for &x in &values[..25] {
            a.update(x);
        }
        let mut b: RollingVariance =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, b);
        for &x in &values[25..] {
            assert_eq!(a.update(x), b.update(x));
        }
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
