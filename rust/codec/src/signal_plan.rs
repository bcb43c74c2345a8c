//! The signals stage's decision for one candle, natively: ensemble, calibration, boosters,
//! tier, stop loss and take profit from the ATR, filters, the signal id, and the three bare Avro
//! bodies (`signals.raw`, `signals.calibrated`, then `signals.filtered` or `signals.final`).
//!
//! It is `kstrade.signals.decision.plan_signals` followed by `kstrade.signals.wire.encode_plan`,
//! operation for operation (the same float operations in the same order, so the same bits), in a
//! few microseconds instead of ~50. Where the Python path would not write the bodies directly (a
//! value it cannot be sure is valid), `plan` answers `None` and the caller takes the Python path,
//! which raises or converts exactly as it always did. A property test holds the two paths equal
//! (`tests/test_signals_native_plan.py`).

use sha1::{Digest, Sha1};

use crate::avro::Writer;

/// `FilterReason`, in the order the reasons are checked (and sorted).
pub const NO_PRICE: u32 = 1 << 0;
pub const NO_FEATURES: u32 = 1 << 1;
pub const NO_ATR: u32 = 1 << 2;
pub const STALE: u32 = 1 << 3;
pub const FLAT: u32 = 1 << 4;
pub const TIER_D: u32 = 1 << 5;
pub const TF_MISALIGNED: u32 = 1 << 6;
pub const VOLATILITY_REGIME: u32 = 1 << 7;
pub const POSITION_OPEN: u32 = 1 << 8;

/// Stop distance (fraction of the entry) of a signal rejected for lack of an ATR.
const PLACEHOLDER_ATR_FRACTION: f64 = 0.001;
/// Platt keeps probabilities this far inside (0, 1) before the logit.
const EDGE: f64 = 1e-9;
/// `decision.SIGNAL_NAMESPACE`: uuid5(NAMESPACE_URL, "https://kstrade.invalid/signals").
const SIGNAL_NAMESPACE: [u8; 16] = [
    0x8e, 0x23, 0x44, 0xcf, 0x99, 0xb7, 0x58, 0x8c, 0x81, 0xe3, 0xf2, 0x98, 0xef, 0x15, 0x26, 0x2f,
];

/// PredictedDirection's schema order.
pub const DOWN: u8 = 0;
pub const UP: u8 = 2;
/// SignalStage's and SignalDirection's schema indexes.
const RAW: usize = 0;
const CALIBRATED: usize = 1;
const FILTERED: usize = 2;
const FINAL: usize = 3;
const LONG: usize = 0;
const SHORT: usize = 1;
/// Tier indexes A, B, C, D.
const TIER_NAMES: [&str; 4] = ["A", "B", "C", "D"];
const D: usize = 3;

#[derive(Debug, Clone)]
pub enum Calibrator {
    Platt { a: f64, b: f64 },
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

impl Calibrator {
    fn apply(&self, probability: f64) -> f64 {
        match self {
            Calibrator::Platt { a, b } => {
                let p = py_min(py_max(probability, EDGE), 1.0 - EDGE);
                let z = a * (p / (1.0 - p)).ln() + b;
                if z >= 0.0 {
                    1.0 / (1.0 + (-z).exp())
                } else {
                    let e = z.exp();
                    e / (1.0 + e)
                }
            }
            Calibrator::Isotonic { x, y } => {
                if probability <= x[0] {
                    return y[0];
                }
                if probability >= x[x.len() - 1] {
                    return y[y.len() - 1];
                }
                let i = x.partition_point(|v| *v <= probability); // bisect_right
                let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
                y0 + (y1 - y0) * (probability - x0) / (x1 - x0)
            }
        }
    }
}

/// `SignalSettings`, as the decision reads them.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// The configured ensemble weights, in the config's order.
    pub weights: Vec<(String, f64)>,
    /// Lower bounds of tiers A, B, C.
    pub tiers: [f64; 3],
    pub stop_loss_atr: f64,
    pub take_profit_atr: f64,
    pub ttl_seconds: i64,
    pub tf_alignment: Option<f64>,
    /// (max adjustment, SL/TP scale) when the volatility booster is on.
    pub volatility: Option<(f64, f64)>,
    pub alignment_floor: f64,
    /// Blocked regimes by index: low, medium, high, unknown.
    pub blocked: [bool; 4],
    pub one_position_per_symbol: bool,
    pub risk_per_trade: Option<f64>,
    /// Tier scale of A, B, C (None: not configured, i.e. 0).
    pub tier_size_scale: [Option<f64>; 3],
    /// Index into the features of the ATR and the alignment, and of each regime's one-hot
    /// feature, by regime name in sorted order (high, low, medium) as Python iterates them.
    pub atr: usize,
    pub alignment: usize,
    pub regimes: Vec<(usize, usize)>, // (regime index low=0 medium=1 high=2, feature index)
    /// The snapshot's feature entries, in the order Python writes them (atr, alignment, then the
    /// regime features sorted by name), as indexes into the features.
    pub snapshot: Vec<usize>,
    /// Feature names by index.
    pub names: Vec<String>,
    pub calibrators: Vec<(String, Calibrator)>,
}

/// One model's vote: model type, version, predicted direction (0 DOWN, 1 FLAT, 2 UP), raw
/// probability, the inference stage's calibrated confidence.
pub struct Vote<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub direction: u8,
    pub probability: f64,
    pub confidence: f64,
}

#[derive(Clone, Copy)]
struct Probs {
    down: f64,
    flat: f64,
    up: f64,
}

impl Probs {
    fn from_prediction(direction: u8, probability: f64) -> Probs {
        let p = clamp01(probability);
        let rest = (1.0 - p) / 2.0;
        match direction {
            UP => Probs {
                down: rest,
                flat: rest,
                up: p,
            },
            DOWN => Probs {
                down: p,
                flat: rest,
                up: rest,
            },
            _ => Probs {
                down: rest,
                flat: p,
                up: rest,
            },
        }
    }

    fn leaning(&self) -> usize {
        if self.down > self.up {
            SHORT
        } else {
            LONG
        }
    }

    fn of(&self, direction: usize) -> f64 {
        if direction == LONG {
            self.up
        } else {
            self.down
        }
    }

    fn with_side(&self, direction: usize, probability: f64) -> Probs {
        let p = clamp01(probability);
        let others = 1.0 - self.of(direction);
        let (mut a, mut b) = if direction == LONG {
            (self.down, self.flat)
        } else {
            (self.flat, self.up)
        };
        if others > 0.0 {
            a = a * (1.0 - p) / others;
            b = b * (1.0 - p) / others;
        } else {
            a = (1.0 - p) / 2.0;
            b = a;
        }
        if direction == LONG {
            Probs {
                down: a,
                flat: b,
                up: p,
            }
        } else {
            Probs {
                down: p,
                flat: a,
                up: b,
            }
        }
    }
}

fn blend(members: &[(&str, Probs)], weights: &[(String, f64)]) -> Probs {
    let (mut down, mut flat, mut up) = (0.0, 0.0, 0.0);
    for (model, probs) in members {
        let w = weights
            .iter()
            .find(|(m, _)| m == model)
            .map_or(0.0, |(_, w)| *w);
        down += w * probs.down;
        flat += w * probs.flat;
        up += w * probs.up;
    }
    let total = down + flat + up;
    if total <= 0.0 {
        Probs {
            down: 1.0 / 3.0,
            flat: 1.0 / 3.0,
            up: 1.0 / 3.0,
        }
    } else {
        Probs {
            down: down / total,
            flat: flat / total,
            up: up / total,
        }
    }
}

/// `ensemble_weights`: the configured weights renormalized over the models present, sorted by
/// model name; a configured model that did not answer keeps 0.0.
fn ensemble_weights(configured: &[(String, f64)], votes: &[Vote<'_>]) -> Vec<(String, f64)> {
    let present = |m: &str| votes.iter().any(|v| v.model == m);
    let mut total = 0.0;
    for (m, w) in configured {
        if *w > 0.0 && present(m) {
            total += w;
        }
    }
    let mut out: Vec<(String, f64)> = configured
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(m, w)| {
            let live = present(m);
            (m.clone(), if live && total > 0.0 { w / total } else { 0.0 })
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0)); // the names are a dict's keys: no two alike
    out
}

struct Levels {
    stop_loss: f64,
    take_profit: f64,
    atr: f64,
}

fn levels(
    direction: usize,
    entry: f64,
    atr_fraction: f64,
    stop_atr: f64,
    take_atr: f64,
) -> Option<Levels> {
    let atr = atr_fraction * entry;
    if !positive(atr) {
        return None;
    }
    let sign = if direction == LONG { 1.0 } else { -1.0 };
    let sl = entry - sign * stop_atr * atr;
    let tp = entry + sign * take_atr * atr;
    let ordered = if sign > 0.0 {
        sl < entry && entry < tp
    } else {
        tp < entry && entry < sl
    };
    if sl <= 0.0 || tp <= 0.0 || !ordered {
        return None;
    }
    Some(Levels {
        stop_loss: sl,
        take_profit: tp,
        atr,
    })
}

fn signed_alignment(alignment: f64, direction: usize) -> f64 {
    let a = py_min(py_max(alignment, -1.0), 1.0);
    if direction == LONG {
        a
    } else {
        -a
    }
}

/// Python's `max(a, b)`: `a` unless `b > a` (so -0.0 and NaN come out as Python's do, where
/// f64::max may differ: the bytes must be the same).
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `a` unless `b < a`.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

fn clamp01(v: f64) -> f64 {
    py_min(py_max(v, 0.0), 1.0)
}

/// `v > 0` (false for NaN, as Python's `not v > 0` is true for it).
fn positive(v: f64) -> bool {
    v > 0.0
}

fn finite(v: f64) -> bool {
    v.is_finite()
}

/// `decision.signal_id`: uuid5 over symbol, candle time and the versions of the weighted models.
pub fn signal_id(symbol: &str, micros: i64, versions: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = versions.to_vec();
    sorted.sort();
    let models: Vec<String> = sorted.iter().map(|(m, v)| format!("{m}={v}")).collect();
    let name = format!("{symbol}|{micros}|{}", models.join(","));
    let mut hasher = Sha1::new();
    hasher.update(SIGNAL_NAMESPACE);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One decision's bodies and what the stage does with them.
pub struct Plan {
    pub raw: Vec<u8>,
    pub calibrated: Vec<u8>,
    /// `signals.filtered` when `reasons` is not 0, else `signals.final`.
    pub last: Vec<u8>,
    pub reasons: u32,
    pub signal_id: String,
    pub tier: usize,
}

/// The Avro map of doubles as fastavro writes it (one block, then the end marker).
fn map(w: &mut Writer, entries: &[(&str, f64)]) {
    if !entries.is_empty() {
        w.long(entries.len() as i64);
        for (k, v) in entries {
            w.string(k);
            w.double(*v);
        }
    }
    w.long(0);
}

/// A signal's fields that differ between the raw and the calibrated signals.
struct Side<'a> {
    direction: usize,
    confidence: f64,
    tier: Option<usize>,
    stop_loss: f64,
    take_profit: f64,
    size: Option<f64>,
    snapshot: Vec<(&'a str, f64)>,
    boosters: Vec<&'static str>,
}

/// `wire._valid` on the values that differ per signal (the shared ones are checked once).
fn valid(s: &Side<'_>, entry: f64) -> bool {
    let doubles = |m: &[(&str, f64)]| m.iter().map(|(_, v)| *v).sum::<f64>().is_finite();
    let ok = finite(s.confidence)
        && (0.0..=1.0).contains(&s.confidence)
        && finite(s.stop_loss)
        && s.stop_loss > 0.0
        && finite(s.take_profit)
        && s.take_profit > 0.0
        && s.size.is_none_or(|v| finite(v) && v >= 0.0)
        && doubles(&s.snapshot);
    ok && if s.direction == LONG {
        s.stop_loss < entry && entry < s.take_profit
    } else {
        s.take_profit < entry && entry < s.stop_loss
    }
}

fn body(
    head: &[u8],
    stage: usize,
    s: &Side<'_>,
    entry: f64,
    weights: &[(&str, f64)],
    ttl: i64,
    size: bool,
) -> Vec<u8> {
    let mut w = Writer::with_capacity(head.len() + 256);
    w.buf.extend_from_slice(head);
    w.enum_index(stage);
    w.enum_index(s.direction);
    w.double(s.confidence);
    match s.tier {
        None => w.long(0),
        Some(t) => {
            w.long(1);
            w.enum_index(t);
        }
    }
    w.double(entry);
    w.double(s.stop_loss);
    w.double(s.take_profit);
    match s.size.filter(|_| size) {
        None => w.long(0),
        Some(v) => {
            w.long(1);
            w.double(v);
        }
    }
    map(&mut w, &s.snapshot);
    map(&mut w, weights);
    w.array(&s.boosters, |w, b| w.string(b));
    w.long(ttl);
    w.buf
}

/// The decision of one candle, or None where the Python path must decide (no price at all, or
/// a value `wire.encode_plan` would not write directly). `features`: None when no vector was
/// joined, else the value of each feature in `PlanSettings::names` (None: absent).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    s: &PlanSettings,
    symbol: &str,
    timestamp_us: i64,
    votes: &[Vote<'_>],
    features: Option<&[Option<f64>]>,
    close: Option<f64>,
    last_close: Option<f64>,
    now_ns: i64,
    position_open: bool,
    configured: Option<&[(String, f64)]>,
) -> Option<Plan> {
    let entry = close.or(last_close)?;
    if !positive(entry) || !finite(entry) || symbol.is_empty() {
        return None;
    }
    let weights = ensemble_weights(configured.unwrap_or(&s.weights), votes);
    let weight_of = |m: &str| {
        weights
            .iter()
            .find(|(n, _)| n == m)
            .map_or(0.0, |(_, w)| *w)
    };
    let versions: Vec<(&str, &str)> = votes
        .iter()
        .filter(|v| weight_of(v.model) > 0.0)
        .map(|v| (v.model, v.version))
        .collect();
    let sid = signal_id(symbol, timestamp_us, &versions);

    let raw_members: Vec<(&str, Probs)> = votes
        .iter()
        .map(|v| (v.model, Probs::from_prediction(v.direction, v.probability)))
        .collect();
    let raw_probs = blend(&raw_members, &weights);
    let cal_members: Vec<(&str, Probs)> = votes
        .iter()
        .map(|v| {
            let calibrator = s
                .calibrators
                .iter()
                .find(|(version, _)| version == v.version);
            let p = calibrator.map_or(v.confidence, |(_, c)| c.apply(v.probability));
            (v.model, Probs::from_prediction(v.direction, p))
        })
        .collect();
    let cal_probs = blend(&cal_members, &weights);
    let direction = cal_probs.leaning();

    let feature = |i: usize| features.and_then(|f| f[i]);
    let mut reasons = 0u32;
    if close.is_none() {
        reasons |= NO_PRICE;
    }
    let alignment = feature(s.alignment);
    let atr_fraction = feature(s.atr);
    if alignment.is_none() || atr_fraction.is_none() {
        reasons |= NO_FEATURES;
    }
    // The regime whose one-hot feature is set (above 0.5, the highest; ties: the first by name).
    let mut regime = 3usize; // unknown
    if features.is_some() {
        let mut best = 0.5;
        for (index, at) in &s.regimes {
            if let Some(v) = feature(*at) {
                if v > best {
                    regime = *index;
                    best = v;
                }
            }
        }
    }

    let mut confidence = cal_probs.of(direction);
    let mut boosters: Vec<&'static str> = Vec::new();
    let mut scale = 1.0;
    if let (Some(max), Some(a)) = (s.tf_alignment, alignment) {
        let adj = max * signed_alignment(a, direction);
        if adj != 0.0 {
            confidence = clamp01(confidence + adj);
            boosters.push("tf_alignment");
        }
    }
    if let Some((max, sl_tp_scale)) = s.volatility {
        if regime == 2 {
            confidence = clamp01(confidence + -max);
            scale = sl_tp_scale;
            boosters.push("volatility_adaptive");
        }
    }
    let boosted = cal_probs.with_side(direction, confidence);
    let tier = if confidence >= s.tiers[0] {
        0
    } else if confidence >= s.tiers[1] {
        1
    } else if confidence >= s.tiers[2] {
        2
    } else {
        D
    };

    let mut level = None;
    if let Some(fraction) = atr_fraction {
        level = levels(
            direction,
            entry,
            fraction,
            s.stop_loss_atr * scale,
            s.take_profit_atr * scale,
        );
        if level.is_none() {
            reasons |= NO_ATR;
        }
    }
    let placeholder = level.is_none();
    let level = match level {
        Some(l) => l,
        None => levels(
            direction,
            entry,
            PLACEHOLDER_ATR_FRACTION,
            s.stop_loss_atr,
            s.take_profit_atr,
        )?,
    };
    let raw_direction = raw_probs.leaning();
    let raw_level = match levels(
        raw_direction,
        entry,
        level.atr / entry,
        s.stop_loss_atr,
        s.take_profit_atr,
    ) {
        Some(l) => l,
        None => levels(
            raw_direction,
            entry,
            PLACEHOLDER_ATR_FRACTION,
            s.stop_loss_atr,
            s.take_profit_atr,
        )?,
    };

    if now_ns >= timestamp_us * 1000 + s.ttl_seconds * 1_000_000_000 {
        reasons |= STALE;
    }
    if boosted.flat > py_max(boosted.down, boosted.up) {
        reasons |= FLAT;
    }
    if tier == D {
        reasons |= TIER_D;
    }
    if let Some(a) = alignment {
        if s.alignment_floor > -1.0 && signed_alignment(a, direction) < s.alignment_floor {
            reasons |= TF_MISALIGNED;
        }
    }
    if s.blocked[regime] {
        reasons |= VOLATILITY_REGIME;
    }
    if s.one_position_per_symbol && position_open {
        reasons |= POSITION_OPEN;
    }

    let missing = weights.iter().filter(|(_, w)| *w == 0.0).count() as f64;
    let mut snapshot: Vec<(&str, f64)> = vec![
        ("p_down", boosted.down),
        ("p_flat", boosted.flat),
        ("p_up", boosted.up),
        ("models_missing", missing),
    ];
    if let Some(f) = features {
        for &i in &s.snapshot {
            if let Some(v) = f[i] {
                let name = s.names[i].as_str();
                match snapshot.iter_mut().find(|(k, _)| *k == name) {
                    Some(entry) => entry.1 = v,
                    None => snapshot.push((name, v)),
                }
            }
        }
    }
    if !placeholder {
        match snapshot.iter_mut().find(|(k, _)| *k == "atr") {
            Some(entry) => entry.1 = level.atr,
            None => snapshot.push(("atr", level.atr)),
        }
    }
    let size = match (s.risk_per_trade, tier) {
        (Some(risk), t) if t != D => {
            Some(risk * s.tier_size_scale[t].unwrap_or(0.0) / (entry - level.stop_loss).abs())
        }
        _ => None,
    };

    let raw = Side {
        direction: raw_direction,
        confidence: raw_probs.of(raw_direction),
        tier: None,
        stop_loss: raw_level.stop_loss,
        take_profit: raw_level.take_profit,
        size: None,
        snapshot: vec![
            ("p_down", raw_probs.down),
            ("p_flat", raw_probs.flat),
            ("p_up", raw_probs.up),
        ],
        boosters: Vec::new(),
    };
    let calibrated = Side {
        direction,
        confidence,
        tier: Some(tier),
        stop_loss: level.stop_loss,
        take_profit: level.take_profit,
        size,
        snapshot,
        boosters,
    };
    let weight_entries: Vec<(&str, f64)> = weights.iter().map(|(m, w)| (m.as_str(), *w)).collect();
    let ttl = s.ttl_seconds;
    let weights_ok = weight_entries
        .iter()
        .map(|(_, w)| *w)
        .sum::<f64>()
        .is_finite();
    if !(weights_ok
        && ttl > 0
        && ttl < (1 << 31)
        && valid(&raw, entry)
        && valid(&calibrated, entry))
    {
        return None;
    }
    let mut head = Writer::with_capacity(64);
    head.long(timestamp_us);
    head.string(symbol);
    head.string(&sid);
    let last = if reasons != 0 {
        body(
            &head.buf,
            FILTERED,
            &calibrated,
            entry,
            &weight_entries,
            ttl,
            false,
        )
    } else {
        body(
            &head.buf,
            FINAL,
            &calibrated,
            entry,
            &weight_entries,
            ttl,
            true,
        )
    };
    Some(Plan {
        raw: body(&head.buf, RAW, &raw, entry, &weight_entries, ttl, true),
        calibrated: body(
            &head.buf,
            CALIBRATED,
            &calibrated,
            entry,
            &weight_entries,
            ttl,
            true,
        ),
        last,
        reasons,
        signal_id: sid,
        tier,
    })
}

/// The tier's name (A-D) by index.
pub fn tier_name(tier: usize) -> &'static str {
    TIER_NAMES[tier]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_ids_are_uuid5_in_the_signals_namespace() {
        // uuid.uuid5(SIGNAL_NAMESPACE, "BTC-USD|1767571200000000|lstm=a,transformer=b") in Python.
        let id = signal_id(
            "BTC-USD",
            1_767_571_200_000_000,
            &[("transformer", "b"), ("lstm", "a")],
        );
        assert_eq!(id, "b637d1fc-0f14-5a71-9c63-1d9d7091ca9e");
    }
}
