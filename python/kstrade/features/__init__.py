"""The features stage's pure logic: closed 1m candles in, a named, versioned multi-timeframe
feature vector out, from the native engine (`kstrade._native.FeatureEngine`).

    from kstrade.features import Candle, FeatureEngine
    engine = FeatureEngine()
    vector = engine.update(Candle(open_time_ms, open, high, low, close, volume))
    if vector is not None and vector.ready:          # None: a duplicate, ignored
        model_input = dict(zip(vector.names, vector.values))

    training = FeatureEngine().update_frame(candles_df)   # polars in, polars out, same code

`FeatureEngine("1h")` runs on hourly candles instead, with 4h, 8h and 1d above them
(`feature_names_for("1h")`). Higher timeframes contribute only their last closed bar; values
still warming up are NaN and flagged (`ready`, `ready_{tf}`); `snapshot()` / `restore()` carry the whole state as bytes.
"""

from kstrade._native import FEATURE_COUNT, FEATURE_VERSION, Candle, CandleAggregator, ClosedBar, FeatureVector
from kstrade.features.engine import (
    BASE_INTERVAL_MS,
    FEATURE_NAMES,
    FeatureEngine,
    feature_names_for,
    features_from_frame,
)

__all__ = [
    "BASE_INTERVAL_MS",
    "FEATURE_COUNT",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "Candle",
    "CandleAggregator",
    "ClosedBar",
    "FeatureEngine",
    "FeatureVector",
    "feature_names_for",
    "features_from_frame",
]
