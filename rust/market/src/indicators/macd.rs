//! MACD, TA-Lib `MACD`: line, signal and histogram all start at bar slow + signal - 2 (33 for
//! 12/26/9). TA-Lib seeds both EMAs at bar slow-1: the slow one with the mean of bars
//! 0..slow-1 and, a quirk we must repeat, the fast one with the mean of the last `fast` bars
//! before it (bars 14..25), not the first `fast` bars. The signal EMA is seeded with the mean
//! of the first `signal` MACD values.

use serde::{Deserialize, Serialize};

use super::{check_period, per_to_k, Ema};
use crate::error::MarketResult;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdOutput {
    pub macd: f64,
    pub signal: f64,
    pub hist: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Macd {
    fast_period: usize,
    slow_period: usize,
    bar: usize,
    fast_seed: f64,
    slow_seed: f64,
    fast: Option<f64>,
    slow: Option<f64>,
    k_fast: f64,
    k_slow: f64,
    signal: Ema,
}

impl Macd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> MarketResult<Self> {
        check_period("fastperiod", fast, 2)?;
        check_period("slowperiod", slow, 2)?;
        check_period("signalperiod", signal, 1)?;
        // TA-Lib swaps the periods when slow < fast.
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        Ok(Self {
            fast_period: fast,
            slow_period: slow,
            bar: 0,
            fast_seed: 0.0,
            slow_seed: 0.0,
            fast: None,
            slow: None,
            k_fast: per_to_k(fast),
            k_slow: per_to_k(slow),
            signal: Ema::with_k(signal, per_to_k(signal)),
        })
    }

    #[inline]
    pub fn update(&mut self, x: f64) -> Option<MacdOutput> {
        let bar = self.bar;
        self.bar += 1;
        let (fast, slow) = match (self.fast, self.slow) {
            (Some(f), Some(s)) => (((x - f) * self.k_fast) + f, ((x - s) * self.k_slow) + s),
            _ => {
                self.slow_seed += x;
                if bar + self.fast_period >= self.slow_period {
                    self.fast_seed += x;
                }
                if bar + 1 < self.slow_period {
                    return None;
                }
                (
                    self.fast_seed / self.fast_period as f64,
                    self.slow_seed / self.slow_period as f64,
                )
            }
        };
        self.fast = Some(fast);
        self.slow = Some(slow);
        let macd = fast - slow;
        let signal = self.signal.update(macd)?;
        Some(MacdOutput {
            macd,
            signal,
            hist: macd - signal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_output_at_bar_33_for_12_26_9() {
        let data = crate::indicators::testutil::series(60);
        let mut macd = Macd::new(12, 26, 9).unwrap();
        let first = data.iter().position(|&x| macd.update(x).is_some()).unwrap();
        assert_eq!(first, 33);
    }
}
