//! Whole-array versions with TA-Lib's output shape: one value per input bar, NaN before the
//! first output bar. Each is a loop over the incremental indicator, so streaming and batch
//! cannot disagree.

use super::{
    Atr, BollingerBands, DirectionalMovement, Ema, LogReturn, Macd, Obv, Rocp, Rsi, SessionVwap,
    Sma, StdDev, Stochastic, VolumeZScore, Vwap,
};
use crate::error::{MarketError, MarketResult};

fn same_length(name: &str, lens: &[usize]) -> MarketResult<()> {
    if lens.windows(2).any(|w| w[0] != w[1]) {
        return Err(MarketError::LengthMismatch(format!("{name}: {lens:?}")));
    }
    Ok(())
}

fn map1(x: &[f64], mut f: impl FnMut(f64) -> Option<f64>) -> Vec<f64> {
    x.iter().map(|&v| f(v).unwrap_or(f64::NAN)).collect()
}

pub fn sma(real: &[f64], period: usize) -> MarketResult<Vec<f64>> {
    let mut ind = Sma::new(period)?;
    Ok(map1(real, |x| ind.update(x)))
}

pub fn ema(real: &[f64], period: usize) -> MarketResult<Vec<f64>> {
    let mut ind = Ema::new(period)?;
    Ok(map1(real, |x| ind.update(x)))
}

pub fn rsi(real: &[f64], period: usize) -> MarketResult<Vec<f64>> {
    let mut ind = Rsi::new(period)?;
    Ok(map1(real, |x| ind.update(x)))
}

pub fn stddev(real: &[f64], period: usize, nbdev: f64) -> MarketResult<Vec<f64>> {
    let mut ind = StdDev::new(period, nbdev)?;
    Ok(map1(real, |x| ind.update(x)))
}

pub fn rocp(real: &[f64], period: usize) -> MarketResult<Vec<f64>> {
    let mut ind = Rocp::new(period)?;
    Ok(map1(real, |x| ind.update(x)))
}

pub fn log_return(real: &[f64]) -> Vec<f64> {
    let mut ind = LogReturn::new();
    map1(real, |x| ind.update(x))
}

pub fn volume_zscore(volume: &[f64], period: usize) -> MarketResult<Vec<f64>> {
    let mut ind = VolumeZScore::new(period)?;
    Ok(map1(volume, |x| ind.update(x)))
}

pub fn macd(real: &[f64], fast: usize, slow: usize, signal: usize) -> MarketResult<[Vec<f64>; 3]> {
    let mut ind = Macd::new(fast, slow, signal)?;
    let mut out = [
        vec![f64::NAN; real.len()],
        vec![f64::NAN; real.len()],
        vec![f64::NAN; real.len()],
    ];
    for (i, &x) in real.iter().enumerate() {
        if let Some(m) = ind.update(x) {
            out[0][i] = m.macd;
            out[1][i] = m.signal;
            out[2][i] = m.hist;
        }
    }
    Ok(out)
}

pub fn bbands(real: &[f64], period: usize, up: f64, down: f64) -> MarketResult<[Vec<f64>; 3]> {
    let mut ind = BollingerBands::new(period, up, down)?;
    let mut out = [
        vec![f64::NAN; real.len()],
        vec![f64::NAN; real.len()],
        vec![f64::NAN; real.len()],
    ];
    for (i, &x) in real.iter().enumerate() {
        if let Some(b) = ind.update(x) {
            out[0][i] = b.upper;
            out[1][i] = b.middle;
            out[2][i] = b.lower;
        }
    }
    Ok(out)
}

pub fn atr(high: &[f64], low: &[f64], close: &[f64], period: usize) -> MarketResult<Vec<f64>> {
    same_length("ATR", &[high.len(), low.len(), close.len()])?;
    let mut ind = Atr::new(period)?;
    Ok((0..close.len())
        .map(|i| ind.update(high[i], low[i], close[i]).unwrap_or(f64::NAN))
        .collect())
}

pub fn stoch(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    fastk: usize,
    slowk: usize,
    slowd: usize,
) -> MarketResult<[Vec<f64>; 2]> {
    same_length("STOCH", &[high.len(), low.len(), close.len()])?;
    let mut ind = Stochastic::new(fastk, slowk, slowd)?;
    let mut out = [vec![f64::NAN; close.len()], vec![f64::NAN; close.len()]];
    for i in 0..close.len() {
        if let Some(s) = ind.update(high[i], low[i], close[i]) {
            out[0][i] = s.slowk;
            out[1][i] = s.slowd;
        }
    }
    Ok(out)
}

/// `[PLUS_DI, MINUS_DI, ADX]` in one pass.
pub fn directional(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
) -> MarketResult<[Vec<f64>; 3]> {
    same_length("ADX", &[high.len(), low.len(), close.len()])?;
    let mut ind = DirectionalMovement::new(period)?;
    let mut out = [
        vec![f64::NAN; close.len()],
        vec![f64::NAN; close.len()],
        vec![f64::NAN; close.len()],
    ];
    for i in 0..close.len() {
        let d = ind.update(high[i], low[i], close[i]);
        out[0][i] = d.plus_di.unwrap_or(f64::NAN);
        out[1][i] = d.minus_di.unwrap_or(f64::NAN);
        out[2][i] = d.adx.unwrap_or(f64::NAN);
    }
    Ok(out)
}

pub fn obv(close: &[f64], volume: &[f64]) -> MarketResult<Vec<f64>> {
    same_length("OBV", &[close.len(), volume.len()])?;
    let mut ind = Obv::new();
    Ok(close
        .iter()
        .zip(volume)
        .map(|(&c, &v)| ind.update(c, v))
        .collect())
}

pub fn vwap(high: &[f64], low: &[f64], close: &[f64], volume: &[f64]) -> MarketResult<Vec<f64>> {
    same_length("VWAP", &[high.len(), low.len(), close.len(), volume.len()])?;
    let mut ind = Vwap::new();
    Ok((0..close.len())
        .map(|i| ind.update(high[i], low[i], close[i], volume[i]))
        .collect())
}

pub fn session_vwap(
    session: &[i64],
    high: &[f64],
    low: &[f64],
    close: &[f64],
    volume: &[f64],
) -> MarketResult<Vec<f64>> {
    same_length(
        "SESSION_VWAP",
        &[
            session.len(),
            high.len(),
            low.len(),
            close.len(),
            volume.len(),
        ],
    )?;
    let mut ind = SessionVwap::new();
    Ok((0..close.len())
        .map(|i| ind.update(session[i], high[i], low[i], close[i], volume[i]))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn length_mismatch_is_an_error() {
        let err = super::obv(&[1.0, 2.0], &[1.0]).unwrap_err();
        assert_eq!(err.code(), "LENGTH_MISMATCH");
    }
}
