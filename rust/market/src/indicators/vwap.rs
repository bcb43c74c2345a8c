//! Volume-weighted average price with the typical price (H + L + C) / 3.
//! - [`Vwap`]: TA-Lib 0.8.1+ `VWAP`, cumulative from the first bar, never reset; 0 while the
//!   cumulative volume is 0.
//! - [`SessionVwap`]: the same, restarted whenever the session key changes (kstrade uses the
//!   UTC day), which is what intraday traders read; its oracle is TA-Lib's VWAP run on each
//!   session separately.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Vwap {
    price_volume: f64,
    volume: f64,
}

impl Vwap {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64, volume: f64) -> f64 {
        let typical = (high + low + close) / 3.0;
        self.price_volume += typical * volume;
        self.volume += volume;
        if self.volume != 0.0 {
            self.price_volume / self.volume
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SessionVwap {
    session: Option<i64>,
    vwap: Vwap,
}

impl SessionVwap {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn update(&mut self, session: i64, high: f64, low: f64, close: f64, volume: f64) -> f64 {
        if self.session != Some(session) {
            self.session = Some(session);
            self.vwap = Vwap::new();
        }
        self.vwap.update(high, low, close, volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_vwap_restarts() {
        let mut v = SessionVwap::new();
        assert_eq!(v.update(1, 3.0, 3.0, 3.0, 1.0), 3.0);
        assert_eq!(v.update(1, 6.0, 6.0, 6.0, 2.0), 5.0);
        assert_eq!(v.update(2, 9.0, 9.0, 9.0, 1.0), 9.0);
    }
}
