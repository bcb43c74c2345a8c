//! Feature names and their order. The order is part of the model contract: a model's manifest
//! stores `FEATURE_VERSION` and the names, and any change to either bumps the version.

use crate::candles::Timeframe;
use crate::error::MarketResult;

pub const FEATURE_VERSION: &str = "kstrade.features.v1";

/// Per-timeframe features, all scale-free (ratios, oscillators in [0, 1], returns), so one
/// model serves symbols priced at 0.5 or 50,000.
pub const PER_TIMEFRAME: [&str; 19] = [
    "log_return",       // ln(C / C[1])
    "close_sma20",      // C / SMA(20) - 1
    "macd",             // MACD(12,26,9) line / C
    "macd_signal",      // signal / C
    "macd_hist",        // histogram / C
    "rsi14",            // RSI(14) / 100
    "bb_pctb", // (C - lower) / (upper - lower), BBANDS(20, 2, 2); 0.5 when the bands are flat
    "bb_width", // (upper - lower) / middle
    "atr14",   // ATR(14) / C
    "stoch_k", // STOCH(5,3,3) slow %K / 100
    "stoch_d", // slow %D / 100
    "adx14",   // ADX(14) / 100
    "plus_di14", // PLUS_DI(14) / 100
    "minus_di14", // MINUS_DI(14) / 100
    "obv_ratio", // OBV / cumulative volume, in [-1, 1]
    "vwap_dev", // C / VWAP(cumulative) - 1
    "session_vwap_dev", // C / VWAP(UTC day) - 1
    "realized_vol20", // STDDEV(20) of log returns
    "volume_z20", // (V - SMA(V, 20)) / STDDEV(V, 20)
];

/// Features computed across timeframes and from the clock.
pub const GLOBAL: [&str; 14] = [
    "mtf_alignment",     // mean over 1m/5m/15m/1h of sign(C / SMA20 - 1), in [-1, 1]
    "vol_ratio",         // 1m realized vol / its slow exponential mean
    "vol_regime_low",    // one-hot of the volatility regime (ratio < 0.75)
    "vol_regime_medium", // 0.75 <= ratio <= 1.5
    "vol_regime_high",   // ratio > 1.5
    "hour_sin",          // time of day (UTC) on the unit circle
    "hour_cos",
    "dow_sin", // day of week (UTC) on the unit circle
    "dow_cos",
    "ready_1m", // fraction of the timeframe's features that are warm and finite (1.0 = all)
    "ready_5m",
    "ready_15m",
    "ready_1h",
    "gap_minutes", // 1m candles missing just before this one (0 = none)
];

pub const FEATURE_COUNT: usize = PER_TIMEFRAME.len() * 4 + GLOBAL.len();

/// All names in vector order: `{tf}_{feature}` for 1m, 5m, 15m, 1h, then the global ones.
pub fn feature_names() -> Vec<String> {
    feature_names_for(Timeframe::M1).expect("1m is a base interval")
}

/// The names of an engine on `base` candles: the same values, named for its ladder. On a 1h
/// base: `1h_`, `4h_`, `8h_`, `1d_` features, `ready_1h` .. `ready_1d`, and `gap_hours` (hours
/// missing before the candle) for `gap_minutes`. A model's manifest holds these names, so a model
/// trained on one base interval is refused features of another.
pub fn feature_names_for(base: Timeframe) -> MarketResult<Vec<String>> {
    let ladder = base.ladder()?;
    let mut names = Vec::with_capacity(FEATURE_COUNT);
    for tf in ladder {
        names.extend(
            PER_TIMEFRAME
                .iter()
                .map(|f| format!("{}_{}", tf.as_str(), f)),
        );
    }
    names.extend(GLOBAL[..9].iter().map(|s| s.to_string()));
    names.extend(ladder.iter().map(|tf| format!("ready_{}", tf.as_str())));
    names.push(match base {
        Timeframe::M1 => "gap_minutes".to_string(),
        Timeframe::H1 => "gap_hours".to_string(),
        other => format!("gap_{}_bars", other.as_str()),
    });
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_50_unique_names() {
        let names = feature_names();
        assert_eq!(names.len(), FEATURE_COUNT);
        assert!(names.len() >= 50);
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn the_1m_names_are_the_template_and_the_1h_names_follow_the_ladder() {
        let minute = feature_names();
        assert_eq!(
            &minute[4 * PER_TIMEFRAME.len()..],
            &GLOBAL.map(String::from)[..]
        );
        let hour = feature_names_for(Timeframe::H1).unwrap();
        assert_eq!(hour.len(), FEATURE_COUNT);
        assert_eq!(hour[0], "1h_log_return");
        assert!(hour.contains(&"1d_rsi14".to_string()) && hour.contains(&"ready_8h".to_string()));
        assert_eq!(hour.last().unwrap(), "gap_hours");
        assert_ne!(minute, hour);
    }
}
