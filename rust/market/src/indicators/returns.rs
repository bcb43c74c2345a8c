//! Returns. [`Rocp`] is TA-Lib `ROCP` ((x - x[n]) / x[n], 0 when x[n] is 0), first value at
//! bar n. [`LogReturn`] is ln(x / x[1]) for the feature vector, where log returns add up
//! across timeframes and their standard deviation is the realized volatility.

use serde::{Deserialize, Serialize};

use super::{check_period, Ring};
use crate::error::MarketResult;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rocp {
    window: Ring,
}

impl Rocp {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self {
            window: Ring::new(period + 1),
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.window.push(x);
        if !self.window.is_full() {
            return None;
        }
        let base = self.window.oldest().unwrap_or(0.0);
        Some(if base != 0.0 { (x - base) / base } else { 0.0 })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct LogReturn {
    prev: Option<f64>,
}

impl LogReturn {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        Some((x / prev).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocp_first_value_at_bar_n() {
        let mut r = Rocp::new(2).unwrap();
        assert_eq!(r.update(1.0), None);
        assert_eq!(r.update(5.0), None);
        assert_eq!(r.update(3.0), Some(2.0));
    }
}
