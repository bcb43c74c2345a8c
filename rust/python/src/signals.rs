//! The signals stage's native decision (`kstrade_codec::signal_plan`): settings converted once,
//! then one call per candle that returns the three signal bodies.

use kstrade_codec::signal_plan::{self, Calibrator, PlanSettings, Vote};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// One decision: (raw body, calibrated body, filtered-or-final body, reasons as a bit set in
/// `FilterReason` order, signal id, tier name).
type PlanTuple = (
    Py<PyBytes>,
    Py<PyBytes>,
    Py<PyBytes>,
    u32,
    String,
    &'static str,
);
/// A vote: (model type, model version, direction index DOWN/FLAT/UP, probability, confidence).
type VoteTuple = (String, String, u8, f64, f64);
/// A calibrator: (model version, "platt" | "isotonic", a, b, x, y).
type CalibratorTuple = (String, String, f64, f64, Vec<f64>, Vec<f64>);

#[pyclass(module = "kstrade._native", name = "SignalPlanner", frozen)]
pub struct SignalPlanner {
    pub(crate) settings: PlanSettings,
}

#[pymethods]
impl SignalPlanner {
    /// Built by `kstrade.signals.native.planner` from a `SignalSettings` and the calibrators:
    /// `features` are the names `plan` gets values for, `atr` / `alignment` / `snapshot` /
    /// `regimes` index into them, `calibrators` are (version, "platt" | "isotonic", a, b, x, y).
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (*, weights, tiers, stop_loss_atr, take_profit_atr, ttl_seconds, tf_alignment, volatility,
                        alignment_floor, blocked, one_position_per_symbol, risk_per_trade, tier_size_scale,
                        features, atr, alignment, regimes, snapshot, calibrators))]
    fn new(
        weights: Vec<(String, f64)>,
        tiers: [f64; 3],
        stop_loss_atr: f64,
        take_profit_atr: f64,
        ttl_seconds: i64,
        tf_alignment: Option<f64>,
        volatility: Option<(f64, f64)>,
        alignment_floor: f64,
        blocked: [bool; 4],
        one_position_per_symbol: bool,
        risk_per_trade: Option<f64>,
        tier_size_scale: [Option<f64>; 3],
        features: Vec<String>,
        atr: usize,
        alignment: usize,
        regimes: Vec<(usize, usize)>,
        snapshot: Vec<usize>,
        calibrators: Vec<CalibratorTuple>,
    ) -> PyResult<Self> {
        let n = features.len();
        if atr >= n
            || alignment >= n
            || snapshot.iter().any(|i| *i >= n)
            || regimes.iter().any(|(r, i)| *r > 2 || *i >= n)
        {
            return Err(PyValueError::new_err(
                "SignalPlanner: a feature index out of range",
            ));
        }
        let mut built = Vec::with_capacity(calibrators.len());
        for (version, method, a, b, x, y) in calibrators {
            let c = match method.as_str() {
                "platt" => Calibrator::Platt { a, b },
                "isotonic" if !x.is_empty() && x.len() == y.len() => Calibrator::Isotonic { x, y },
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "SignalPlanner: calibrator {version}: bad {method}"
                    )))
                }
            };
            built.push((version, c));
        }
        Ok(Self {
            settings: PlanSettings {
                weights,
                tiers,
                stop_loss_atr,
                take_profit_atr,
                ttl_seconds,
                tf_alignment,
                volatility,
                alignment_floor,
                blocked,
                one_position_per_symbol,
                risk_per_trade,
                tier_size_scale,
                atr,
                alignment,
                regimes,
                snapshot,
                names: features,
                calibrators: built,
            },
        })
    }

    /// The decision of one candle (see `kstrade_codec::signal_plan::plan`), or None: decide it
    /// on the Python path. `features`: None (no vector joined) or one value (or None) per name.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (symbol, timestamp_us, votes, features, close, last_close, now_ns, position_open, weights=None))]
    fn plan(
        &self,
        py: Python<'_>,
        symbol: &str,
        timestamp_us: i64,
        votes: Vec<VoteTuple>,
        features: Option<Vec<Option<f64>>>,
        close: Option<f64>,
        last_close: Option<f64>,
        now_ns: i64,
        position_open: bool,
        weights: Option<Vec<(String, f64)>>,
    ) -> PyResult<Option<PlanTuple>> {
        if features
            .as_ref()
            .is_some_and(|f| f.len() != self.settings.names.len())
        {
            return Err(PyValueError::new_err(
                "SignalPlanner.plan: one value per feature name expected",
            ));
        }
        let votes: Vec<Vote<'_>> = votes
            .iter()
            .map(
                |(model, version, direction, probability, confidence)| Vote {
                    model,
                    version,
                    direction: *direction,
                    probability: *probability,
                    confidence: *confidence,
                },
            )
            .collect();
        let plan = signal_plan::plan(
            &self.settings,
            symbol,
            timestamp_us,
            &votes,
            features.as_deref(),
            close,
            last_close,
            now_ns,
            position_open,
            weights.as_deref(),
        );
        Ok(plan.map(|p| {
            (
                PyBytes::new(py, &p.raw).unbind(),
                PyBytes::new(py, &p.calibrated).unbind(),
                PyBytes::new(py, &p.last).unbind(),
                p.reasons,
                p.signal_id,
                signal_plan::tier_name(p.tier),
            )
        }))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SignalPlanner>()
}
