"""Drift: PSI against a training reference (a shifted feature alerts, the reference does not),
Page-Hinkley on the error stream, and rolling accuracy against realized direction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import METRICS_ALERTS, METRICS_DRIFT, candles, features_aggregated, predictions_lstm
from kstrade.config import MetricsSettings
from kstrade.metrics import DriftReference, FeatureReference, MetricsCollector, load_reference
from kstrade.metrics.drift import DirectionAccuracy, PageHinkley, psi
from kstrade.schemas import Alert, Candle, Codec, FeatureVector, ModelDrift, Prediction
from kstrade.schemas.models import ModelType, PredictionOutput

from .conftest import drain

T0 = datetime(2026, 3, 2, tzinfo=UTC)
NS = 1_000_000_000
MINUTE = 60 * NS


def test_psi_matches_the_textbook_formula() -> None:
    expected = [0.25, 0.25, 0.25, 0.25]
    actual = [0.10, 0.20, 0.30, 0.40]
    by_hand = sum((a - e) * __import__("math").log(a / e) for e, a in zip(expected, actual, strict=True))
    assert psi(expected, actual) == pytest.approx(by_hand)
    assert psi(expected, expected) == 0.0
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) > 0  # an empty reference bin is floored, not infinite


def test_reference_format_is_validated() -> None:
    with pytest.raises(ValueError, match="proportions"):
        FeatureReference(edges=[0.0, 1.0], proportions=[0.5, 0.5])
    with pytest.raises(ValueError, match="ascending"):
        FeatureReference(edges=[1.0, 0.0], proportions=[0.3, 0.3, 0.4])
    ref = FeatureReference.from_sample([float(i) for i in range(100)], bins=4)
    assert ref.edges == [25.0, 50.0, 75.0] and ref.proportions == [0.25, 0.25, 0.25, 0.25]


def _reference(rng: random.Random) -> DriftReference:
    train = {"rsi_14": [rng.gauss(50, 10) for _ in range(5000)], "ret_1m": [rng.gauss(0, 1) for _ in range(5000)]}
    return DriftReference(
        model_type="lstm",
        model_version="7",
        features={name: FeatureReference.from_sample(values, bins=10) for name, values in train.items()},
    )


def test_a_shifted_feature_raises_a_drift_alert_and_the_reference_does_not() -> None:
    rng = random.Random(11)
    reference = _reference(rng)
    bus = Bus.memory()
    topics = [features_aggregated(s) for s in ("BTC-USD", "ETH-USD")]
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    codec = Codec(FeatureVector)
    producer = bus.producer()
    for i in range(600):
        origin = i * MINUTE
        for symbol, shift in (("BTC-USD", 0.0), ("ETH-USD", 0.5)):  # ETH's returns drift by half a sigma
            vector = FeatureVector(
                timestamp=T0 + timedelta(minutes=i), symbol=symbol, version="1", names=["rsi_14", "ret_1m", "new"],
                values=[rng.gauss(50, 10), rng.gauss(shift, 1), 1.0],
            )  # fmt: skip
            producer.send(features_aggregated(symbol), codec.encode(vector), headers=codec.headers(origin, "features"))
    producer.flush()
    collector = MetricsCollector(MetricsSettings(psi_window=500, psi_min_samples=200), reference=reference)
    consumer = bus.consumer("metrics")
    consumer.subscribe(topics)
    for r in drain(consumer, 1200):
        collector.handle(r)
    collector.on_time(0)
    outs = list(collector.on_time(10 * NS))
    drift = [Codec(ModelDrift).decode(o.value) for o in outs if o.topic == METRICS_DRIFT]
    by_key = {(d.symbol, d.metric): d for d in drift if isinstance(d, ModelDrift)}
    features = ("rsi_14", "ret_1m")
    symbols = ("BTC-USD", "ETH-USD")
    assert set(by_key) == {(s, f"{m}:{f}") for s in symbols for f in features for m in ("psi", "ks")}
    assert by_key[("ETH-USD", "ks:ret_1m")].drifted and not by_key[("BTC-USD", "ks:ret_1m")].drifted
    assert by_key[("ETH-USD", "ks:ret_1m")].threshold == pytest.approx(1.628 / 500**0.5)
    assert by_key[("ETH-USD", "psi:ret_1m")].drifted and by_key[("ETH-USD", "psi:ret_1m")].value >= 0.2
    for key in (("BTC-USD", "psi:ret_1m"), ("BTC-USD", "psi:rsi_14"), ("ETH-USD", "psi:rsi_14")):
        assert not by_key[key].drifted and by_key[key].value < 0.1, key
    alerts = [Codec(Alert).decode(o.value) for o in outs if o.topic == METRICS_ALERTS]
    assert [(a.code, "ETH-USD ret_1m" in a.message) for a in alerts if isinstance(a, Alert)] == [
        ("FEATURE_DRIFT_SIGNIFICANT", True)
    ]
    # still drifted ten seconds later: not announced again
    assert [o for o in collector.on_time(20 * NS) if o.topic == METRICS_ALERTS] == []


def test_page_hinkley_is_quiet_on_a_stable_error_rate_and_fires_when_it_rises() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        ph = PageHinkley()
        assert not any(ph.update(float(rng.random() < 0.45)) for _ in range(3000)), seed
        fired_after = next((i for i in range(1000) if ph.update(float(rng.random() < 0.70))), None)
        assert fired_after is not None and fired_after < 500, (seed, fired_after)


def test_accuracy_scores_each_prediction_against_the_next_close() -> None:
    acc = DirectionAccuracy(bar_ns=MINUTE, flat_band=1e-4)
    closes = [100.0, 101.0, 100.5, 100.5, 102.0]
    calls = [1, -1, 0, 1]  # right, right, right (flat within the band), right
    for i, close in enumerate(closes):
        acc.candle(i * MINUTE, close)
        if i < len(calls):
            acc.prediction(i * MINUTE, calls[i])
    assert acc.accuracy == 1.0 and len(acc.hits) == 4
    acc.prediction(4 * MINUTE, -1)
    acc.candle(5 * MINUTE, 103.0)  # up: wrong
    assert acc.accuracy == pytest.approx(0.8)
    acc.prediction(3 * MINUTE + 500 * MINUTE, 1)  # its candles never come: given up, not kept forever
    acc.candle(3000 * MINUTE, 1.0)
    assert len(acc._pending) == 0


def test_collector_reports_accuracy_and_error_drift_per_model_and_symbol() -> None:
    bus = Bus.memory()
    topics = [candles("SOL-USD", "1m"), predictions_lstm("SOL-USD")]
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    producer = bus.producer()
    cc, pc = Codec(Candle), Codec(Prediction)
    rng = random.Random(3)
    price, n = 100.0, 1200
    for i in range(n):
        origin = (i + 1) * MINUTE
        price *= 1.001 if rng.random() < 0.5 else 0.999
        candle = Candle(timestamp=T0 + timedelta(minutes=i), symbol="SOL-USD", interval="1m", open=price,
                        high=price, low=price, close=price, volume=1.0, source="test")  # fmt: skip
        producer.send(topics[0], cc.encode(candle), headers=cc.headers(origin, "ingest"))
        # a model that always calls UP, on a market that flips a coin
        p = Prediction(timestamp=candle.timestamp, symbol="SOL-USD", model_type=ModelType.LSTM, model_version="7",
                       prediction=PredictionOutput(direction="UP", probability=0.6, confidence=0.2),
                       inference_time_ms=1.0)  # fmt: skip
        producer.send(topics[1], pc.encode(p), headers=pc.headers(origin, "inference"))
    producer.flush()
    collector = MetricsCollector(MetricsSettings(accuracy_window=200))
    consumer = bus.consumer("metrics")
    consumer.subscribe(topics)
    for r in drain(consumer, 2 * n):
        collector.handle(r)
    accuracy, hits, _ = collector.accuracy()[("lstm", "SOL-USD")]
    assert hits == 200
    assert 0.35 < (accuracy or 0) < 0.65  # always UP on a coin-flip market
    collector.on_time(0)
    outs = list(collector.on_time(10 * NS))
    drift = {d.metric: d for d in (Codec(ModelDrift).decode(o.value) for o in outs if o.topic == METRICS_DRIFT)}
    assert isinstance(drift["accuracy"], ModelDrift) and drift["accuracy"].value == accuracy
    assert drift["page_hinkley"].threshold == 50.0


def test_a_model_gone_stale_raises_an_error_drift_alert() -> None:
    collector = MetricsCollector(MetricsSettings())
    bus = Bus.memory()
    topics = [candles("BTC-USD", "1m"), predictions_lstm("BTC-USD")]
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    producer = bus.producer()
    cc, pc = Codec(Candle), Codec(Prediction)
    price = 100.0
    for i in range(900):
        origin = (i + 1) * MINUTE
        price *= 1.001 if i < 450 else 0.999  # the model's "always UP" is right, then always wrong
        candle = Candle(timestamp=T0 + timedelta(minutes=i), symbol="BTC-USD", interval="1m", open=price,
                        high=price, low=price, close=price, volume=1.0, source="test")  # fmt: skip
        p = Prediction(timestamp=candle.timestamp, symbol="BTC-USD", model_type=ModelType.LSTM, model_version="7",
                       prediction=PredictionOutput(direction="UP", probability=0.6, confidence=0.2),
                       inference_time_ms=1.0)  # fmt: skip
        producer.send(topics[0], cc.encode(candle), headers=cc.headers(origin, "ingest"))
        producer.send(topics[1], pc.encode(p), headers=pc.headers(origin, "inference"))
    producer.flush()
    consumer = bus.consumer("metrics")
    consumer.subscribe(topics)
    for r in drain(consumer, 1800):
        collector.handle(r)
    collector.on_time(0)
    outs = list(collector.on_time(10 * NS))
    alerts = [a for a in (Codec(Alert).decode(o.value) for o in outs if o.topic == METRICS_ALERTS)]
    assert [a.code for a in alerts if isinstance(a, Alert)] == ["MODEL_ERROR_DRIFT"]
    drift = {d.metric: d for d in (Codec(ModelDrift).decode(o.value) for o in outs if o.topic == METRICS_DRIFT)}
    assert drift["page_hinkley"].drifted


def test_the_documented_reference_file_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "README.md").read_text()
    example = readme.split("```json\n", 1)[1].split("```", 1)[0]
    (tmp_path / "ref.json").write_text(example)
    ref = load_reference(tmp_path / "ref.json")
    assert ref.model_type == "lstm" and ref.features["rsi_14"].edges == [30.0, 50.0, 70.0]


def test_ks_distance_at_the_bin_edges() -> None:
    from kstrade.metrics.drift import FeatureWindow

    ref = FeatureReference(edges=[1.0, 2.0, 3.0], proportions=[0.25, 0.25, 0.25, 0.25])
    w = FeatureWindow(ref, size=8)
    for v in (0.5, 1.5, 2.5, 3.5) * 2:
        w.observe(v)
    assert w.ks() == 0.0 and w.psi() == 0.0
    for _ in range(8):
        w.observe(0.0)  # the window now holds only the lowest bin
    assert w.ks() == pytest.approx(0.75)  # all of it below the first edge, where the reference has 25 %
