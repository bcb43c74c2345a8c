//! Exponential moving average, TA-Lib `EMA` (default compatibility): seeded with the simple
//! mean of the first n values at bar n-1, then `prev = (x - prev) * k + prev`, k = 2/(n+1).

use serde::{Deserialize, Serialize};

use super::{check_period, per_to_k};
use crate::error::MarketResult;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ema {
    period: usize,
    k: f64,
    seen: usize,
    seed_sum: f64,
    value: Option<f64>,
}

impl Ema {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 1)?;
        Ok(Self::with_k(period, per_to_k(period)))
    }

    pub(crate) fn with_k(period: usize, k: f64) -> Self {
        Self {
            period,
            k,
            seen: 0,
            seed_sum: 0.0,
            value: None,
        }
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        match self.value {
            Some(prev) => {
                let next = ((x - prev) * self.k) + prev;
                self.value = Some(next);
            }
            None => {
                self.seed_sum += x;
                self.seen += 1;
                if self.seen == self.period {
                    self.value = Some(self.seed_sum / self.period as f64);
                }
            }
        }
        self.value
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_with_the_mean_then_smooths() {
        let mut ema = Ema::new(3).unwrap();
        assert_eq!(ema.update(1.0), None);
        assert_eq!(ema.update(2.0), None);
        assert_eq!(ema.update(3.0), Some(2.0));
        assert_eq!(ema.update(6.0), Some((6.0 - 2.0) * 0.5 + 2.0));
    }
}
