//! On-balance volume, TA-Lib `OBV`: starts at bar 0 with that bar's volume, then adds the
//! volume on an up close and subtracts it on a down close.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Obv {
    state: Option<(f64, f64)>,
}

impl Obv {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn update(&mut self, close: f64, volume: f64) -> f64 {
        let obv = match self.state {
            None => volume,
            Some((prev_close, obv)) => {
                // +volume on an up bar, -volume on a down bar, 0 on a flat one: two selects
                // instead of a branch on the direction of the close, a coin flip on real prices.
                let up = if close > prev_close { volume } else { 0.0 };
                let down = if close < prev_close { volume } else { 0.0 };
                obv + (up - down)
            }
        };
        self.state = Some((close, obv));
        obv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_subtracts_volume() {
        let mut obv = Obv::new();
        assert_eq!(obv.update(1.0, 5.0), 5.0);
        assert_eq!(obv.update(2.0, 3.0), 8.0);
        assert_eq!(obv.update(2.0, 9.0), 8.0);
        assert_eq!(obv.update(1.0, 2.0), 6.0);
    }
}
