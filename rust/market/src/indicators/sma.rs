//! Simple moving average, TA-Lib `SMA`: first value at bar n-1. The running sum adds the new
//! value, divides, then drops the trailing value, in that order, as TA-Lib does, so the
//! rounding of the running sum is the same.

use serde::{Deserialize, Serialize};

use super::{check_period, Ring};
use crate::error::MarketResult;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sma {
    period: usize,
    window: Ring,
    sum: f64,
}

impl Sma {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self {
            period,
            window: Ring::new(period),
            sum: 0.0,
        })
    }

    #[inline]
    pub fn update(&mut self, value: f64) -> Option<f64> {
        self.sum += value;
        self.window.push(value);
        if !self.window.is_full() {
            return None;
        }
        let out = self.sum / self.period as f64;
        // The trailing value leaves the sum now; the ring drops it on the next push.
        self.sum -= self.window.oldest().unwrap_or(0.0);
        Some(out)
    }

    pub fn period(&self) -> usize {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_at_bar_n_minus_1_is_the_plain_mean() {
        let mut sma = Sma::new(3).unwrap();
        assert_eq!(sma.update(1.0), None);
        assert_eq!(sma.update(2.0), None);
        assert_eq!(sma.update(6.0), Some(3.0));
        assert_eq!(sma.update(7.0), Some(5.0));
    }

    #[test]
    fn rejects_a_zero_period() {
        assert_eq!(Sma::new(0).unwrap_err().code(), "INVALID_PARAMETER");
    }
}
