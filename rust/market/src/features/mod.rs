//! The model input: a named, versioned feature vector per symbol, emitted on every closed 1m
//! candle. See [`names`] for the order and [`engine`] for how each value is made.

mod engine;
mod names;
mod timeframe;

pub use engine::{FeatureEngine, FeatureVector, RowUpdate};
pub use names::{feature_names, feature_names_for, FEATURE_COUNT, FEATURE_VERSION, PER_TIMEFRAME};
