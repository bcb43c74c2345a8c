//! Incremental indicators that equal TA-Lib bar for bar.
//!
//! Each indicator takes one bar per `update` call in O(1) time and memory (fixed-size rings,
//! running sums, monotonic deques) and returns `None` until the bar where TA-Lib's batch
//! function gives its first value. They repeat TA-Lib's arithmetic in TA-Lib's order (running
//! sums, `(x - prev) * k + prev`, Wilder's `prev * (n - 1) + x) / n`, the zero tests), so the
//! results are the same doubles or within rounding of them (TA-Lib's C library now fuses some
//! multiply-adds): models are trained on history
//! computed by TA-Lib and must see the same numbers live.

mod adx;
mod atr;
pub mod batch;
mod bbands;
mod ema;
mod macd;
mod obv;
mod returns;
mod rsi;
mod sma;
mod stddev;
mod stoch;
mod vwap;
mod window;
mod zscore;

pub use adx::{DirectionalMovement, DirectionalOutput};
pub use atr::Atr;
pub use bbands::{BollingerBands, BollingerOutput};
pub use ema::Ema;
pub use macd::{Macd, MacdOutput};
pub use obv::Obv;
pub use returns::{LogReturn, Rocp};
pub use rsi::Rsi;
pub use sma::Sma;
pub use stddev::{RollingVariance, StdDev};
pub use stoch::{Stochastic, StochasticOutput};
pub use vwap::{SessionVwap, Vwap};
pub use window::{Ring, SlidingExtreme};
pub use zscore::VolumeZScore;

use crate::error::{MarketError, MarketResult};

/// TA-Lib's zero test for a denominator (RSI's gain + loss, ADX's TR and DI sum). TA-Lib up
/// to 0.6 used an absolute `|v| < 1e-8`, which made RSI/ADX depend on the price scale (a coin
/// priced at 1e-6 had RSI 0); the C library bundled with ta-lib 0.8 is scale-free and only an
/// exact 0 (a flat window) counts.
#[inline]
pub(crate) fn ta_is_zero(v: f64) -> bool {
    v == 0.0
}

/// TA-Lib's `PER_TO_K`: the EMA smoothing factor 2 / (n + 1).
#[inline]
pub(crate) fn per_to_k(period: usize) -> f64 {
    2.0 / ((period + 1) as f64)
}

/// TA-Lib's true range with yesterday's close: max(H - L, |H - Cy|, |L - Cy|).
#[inline]
pub(crate) fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    let mut out = high - low;
    let up = (high - prev_close).abs();
    if up > out {
        out = up;
    }
    let down = (low - prev_close).abs();
    if down > out {
        out = down;
    }
    out
}

/// Periods follow TA-Lib's accepted ranges (most are 2..=100000).
pub(crate) fn check_period(name: &str, value: usize, min: usize) -> MarketResult<()> {
    if value < min || value > 100_000 {
        return Err(MarketError::InvalidParameter(format!(
            "{name} must be in {min}..=100000, got {value}"
        )));
    }
    Ok(())
}

pub(crate) fn check_factor(name: &str, value: f64) -> MarketResult<()> {
    if !value.is_finite() {
        return Err(MarketError::InvalidParameter(format!(
            "{name} must be finite, got {value}"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    /// A deterministic wavy price series with flat runs, for unit tests that check structure
    /// (first-output bar, O(1) state); TA-Lib equality is tested from Python against TA-Lib.
    pub fn series(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let x = i as f64;
                if i % 17 < 3 {
                    100.0
                } else {
                    100.0 + (x * 0.37).sin() * 3.0 + (x * 0.05).cos() * 5.0
                }
            })
            .collect()
    }
}
