//! Average true range, TA-Lib `ATR`: the true range needs yesterday's close, so it starts at
//! bar 1; the first ATR (bar n) is the mean of TR[1..=n], then Wilder's
//! `(prev * (n-1) + tr) / n`.

use serde::{Deserialize, Serialize};

use super::{check_period, true_range};
use crate::error::MarketResult;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Atr {
    period: usize,
    prev_close: Option<f64>,
    ranges: usize,
    sum: f64,
    value: Option<f64>,
}

impl Atr {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self {
            period,
            prev_close: None,
            ranges: 0,
            sum: 0.0,
            value: None,
        })
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        let prev_close = self.prev_close.replace(close)?;
        let tr = true_range(high, low, prev_close);
        let n = self.period as f64;
        self.value = match self.value {
            Some(prev) => Some(((prev * (n - 1.0)) + tr) / n),
            None => {
                self.sum += tr;
                self.ranges += 1;
                (self.ranges == self.period).then(|| self.sum / n)
            }
        };
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_at_bar_n() {
        let mut atr = Atr::new(2).unwrap();
        assert_eq!(atr.update(2.0, 1.0, 1.5), None);
        assert_eq!(atr.update(3.0, 2.0, 2.5), None);
        // TR = max(3 - 2, |3 - 1.5|, |2 - 1.5|) = 1.5, then max(0.5, |3 - 2.5|, 0) = 0.5
        assert_eq!(atr.update(3.0, 2.5, 2.7), Some(1.0));
    }
}
