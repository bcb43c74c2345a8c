//! Relative strength index, TA-Lib `RSI`: first value at bar n from the plain mean of the first
//! n changes, then Wilder's smoothing `(prev * (n-1) + x) / n`. When gains + losses is 0 the
//! RSI is 0, so a flat series gives 0 (talipp gives 100).

use serde::{Deserialize, Serialize};

use super::{check_period, ta_is_zero};
use crate::error::MarketResult;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rsi {
    period: usize,
    changes: usize,
    prev: Option<f64>,
    gain: f64,
    loss: f64,
}

impl Rsi {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self {
            period,
            changes: 0,
            prev: None,
            gain: 0.0,
            loss: 0.0,
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        let change = x - prev;
        let n = self.period as f64;
        self.changes += 1;
        // A loss, or else a gain (a zero change counts as a gain of 0, as in TA-Lib). Written
        // as two selects and an addition of 0 to the other side, which is exact: the sign of
        // a price change is a coin flip, so a branch here is mispredicted half the time.
        let (gain, loss) = if change < 0.0 {
            (0.0, -change)
        } else {
            (change, 0.0)
        };
        if self.changes <= self.period {
            self.loss += loss;
            self.gain += gain;
            if self.changes < self.period {
                return None;
            }
            self.loss /= n;
            self.gain /= n;
        } else {
            self.loss *= n - 1.0;
            self.gain *= n - 1.0;
            self.loss += loss;
            self.gain += gain;
            self.loss /= n;
            self.gain /= n;
        }
        let total = self.gain + self.loss;
        Some(if ta_is_zero(total) {
            0.0
        } else {
            100.0 * (self.gain / total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_at_bar_n_and_flat_is_zero() {
        let mut rsi = Rsi::new(3).unwrap();
        for _ in 0..3 {
            assert_eq!(rsi.update(5.0), None);
        }
        assert_eq!(rsi.update(5.0), Some(0.0));
    }

    #[test]
    fn only_gains_is_100() {
        let mut rsi = Rsi::new(2).unwrap();
        rsi.update(1.0);
        rsi.update(2.0);
        assert_eq!(rsi.update(3.0), Some(100.0));
    }
}
