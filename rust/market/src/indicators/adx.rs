//! Directional movement, TA-Lib `PLUS_DI`, `MINUS_DI` and `ADX` from one shared state.
//!
//! +DM is the up-move when it beats the down-move and is positive (mirror for -DM; a tie gives
//! neither). Wilder running sums of DM and TR are seeded with the sum over bars 1..n-1, then
//! `s - s/n + x`. +DI/-DI start at bar n; ADX at bar 2n-1 as the mean of the first n DX, then
//! Wilder smoothing. TA-Lib's zero tests decide when DI is 0 and when DX is skipped.

use serde::{Deserialize, Serialize};

use super::{check_period, ta_is_zero, true_range};
use crate::error::MarketResult;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DirectionalOutput {
    /// `PLUS_DI` (None before bar n).
    pub plus_di: Option<f64>,
    /// `MINUS_DI` (None before bar n).
    pub minus_di: Option<f64>,
    /// `ADX` (None before bar 2n-1).
    pub adx: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectionalMovement {
    period: usize,
    bar: usize,
    prev: Option<(f64, f64, f64)>,
    plus_dm: f64,
    minus_dm: f64,
    tr: f64,
    sum_dx: f64,
    adx: Option<f64>,
}

impl DirectionalMovement {
    pub fn new(period: usize) -> MarketResult<Self> {
        check_period("timeperiod", period, 2)?;
        Ok(Self {
            period,
            bar: 0,
            prev: None,
            plus_dm: 0.0,
            minus_dm: 0.0,
            tr: 0.0,
            sum_dx: 0.0,
            adx: None,
        })
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> DirectionalOutput {
        let bar = self.bar;
        self.bar += 1;
        let Some((prev_high, prev_low, prev_close)) = self.prev.replace((high, low, close)) else {
            return DirectionalOutput::default();
        };
        let n = self.period as f64;
        let up = high - prev_high;
        let down = prev_low - low;
        // At most one of the two is non-zero. Two independent selects rather than an if/else
        // chain: the comparison of up- and down-move is a coin flip on real prices, and a
        // mispredicted branch costs more than both selects.
        let minus = if down > 0.0 && up < down { down } else { 0.0 };
        let plus = if up > 0.0 && up > down { up } else { 0.0 };
        let tr = true_range(high, low, prev_close);
        if bar < self.period {
            // Seeding: plain sums over bars 1..n-1.
            self.plus_dm += plus;
            self.minus_dm += minus;
            self.tr += tr;
            return DirectionalOutput::default();
        }
        self.plus_dm = self.plus_dm - (self.plus_dm / n) + plus;
        self.minus_dm = self.minus_dm - (self.minus_dm / n) + minus;
        self.tr = self.tr - (self.tr / n) + tr;

        let (plus_di, minus_di, dx) = if ta_is_zero(self.tr) {
            (0.0, 0.0, None)
        } else {
            let plus_di = 100.0 * (self.plus_dm / self.tr);
            let minus_di = 100.0 * (self.minus_dm / self.tr);
            let sum = minus_di + plus_di;
            let dx = (!ta_is_zero(sum)).then(|| 100.0 * ((minus_di - plus_di).abs() / sum));
            (plus_di, minus_di, dx)
        };
        let first_adx_bar = 2 * self.period - 1;
        if bar < first_adx_bar {
            self.sum_dx += dx.unwrap_or(0.0);
        } else if bar == first_adx_bar {
            self.sum_dx += dx.unwrap_or(0.0);
            self.adx = Some(self.sum_dx / n);
        } else if let (Some(prev), Some(dx)) = (self.adx, dx) {
            self.adx = Some(((prev * (n - 1.0)) + dx) / n);
        }
        DirectionalOutput {
            plus_di: Some(plus_di),
            minus_di: Some(minus_di),
            adx: self.adx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn di_at_bar_n_and_adx_at_bar_2n_minus_1() {
        let data = crate::indicators::testutil::series(80);
        let mut dm = DirectionalMovement::new(14).unwrap();
        let outs: Vec<_> = data
            .iter()
            .map(|&c| dm.update(c + 1.0, c - 1.0, c))
            .collect();
        assert_eq!(outs.iter().position(|o| o.plus_di.is_some()), Some(14));
        assert_eq!(outs.iter().position(|o| o.adx.is_some()), Some(27));
    }
}
