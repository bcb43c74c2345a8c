//! Time the Rust feature engine alone (no Python): `cargo run --release -p kstrade-market
//! --example engine_speed`. SYNTHETIC candles (seeded random walk). The Python-facing figure
//! is in bench/bench_features.py; this one shows how much of it is the engine itself.

use std::time::Instant;

use kstrade_market::candles::Candle;
use kstrade_market::features::FeatureEngine;

fn synthetic(n: usize) -> Vec<Candle> {
    // xorshift64* and a Box-Muller step: deterministic, no dependencies.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut uniform = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u, v) = (uniform().max(1e-300), uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut close = 30_000.0_f64;
    (0..n)
        .map(|i| {
            let open = close;
            close *= (0.001 * normal()).exp();
            let high = open.max(close) * (1.0 + (0.0005 * normal()).abs());
            let low = open.min(close) * (1.0 - (0.0005 * normal()).abs());
            Candle {
                open_time_ms: 1_700_006_400_000 + i as i64 * 60_000,
                open,
                high,
                low,
                close,
                volume: 1.0 + 10.0 * normal().abs(),
            }
        })
        .collect()
}

fn main() {
    const WARMUP: usize = 2 * 1440;
    const TIMED: usize = 200_000;
    let candles = synthetic(WARMUP + TIMED);
    let mut best = f64::INFINITY;
    let mut checksum = 0.0;
    for _ in 0..15 {
        let mut engine = FeatureEngine::new();
        let mut row = [0.0; kstrade_market::features::FEATURE_COUNT];
        for &c in &candles[..WARMUP] {
            engine.update_row(c, &mut row).expect("valid");
        }
        let start = Instant::now();
        for &c in &candles[WARMUP..] {
            engine.update_row(c, &mut row).expect("valid");
            checksum += row[0];
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "FeatureEngine::update_row: {:.1} ns per candle (best of 15, {TIMED} SYNTHETIC candles; checksum {checksum:.3})",
        best / TIMED as f64 * 1e9
    );
}
