"""Signal aggregation latency: one candle through the signals stage, from the records of its
candle, feature vector and two predictions to its three signals (raw, calibrated, final or
filtered), decode and encode included. The design document's target is < 10 ms per signal.

    python -m pytest bench/bench_signals.py -q

There is no off-the-shelf tool that does this job, so the anchor is the design target; the
pure decision (`decide`, no bus, no codec) is shown beside it to say where the time goes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from figures import record
from kstrade.bus import Bus, Record
from kstrade.bus.topics import PREDICTIONS_TRANSFORMER, candles, features_aggregated, predictions_lstm
from kstrade.config import SignalSettings
from kstrade.schemas import Candle, Codec, FeatureVector, Prediction
from kstrade.schemas.models import ModelType, PredictedDirection, PredictionOutput
from kstrade.signals import Platt, SignalAggregator
from kstrade.signals.decision import CandleContext, ModelVote, decide, epoch_ns

T0 = datetime(2026, 1, 5, tzinfo=UTC)
SYMBOL = "BTC-USD"
ROUNDS = 2000
TARGET_MS = 10.0
FEATURES = {"5m_atr14": 0.01, "mtf_alignment": 0.5, "vol_regime_medium": 1.0}
CALIBRATORS = {"lstm-a1": Platt(0.8, 0.0), "trf-b2": Platt(0.9, 0.1)}


def _candle_records(count: int) -> list[list[Record]]:
    """The four input records of each of `count` candles, as the stage would poll them."""
    bus = Bus.memory()
    topics = [candles(SYMBOL, "1m"), features_aggregated(SYMBOL), predictions_lstm(SYMBOL), PREDICTIONS_TRANSFORMER]
    bus.admin().create_topics([(t, 1, 1, {}) for t in topics])
    producer = bus.producer()
    codecs = {m: Codec(m) for m in (Candle, FeatureVector, Prediction)}
    for i in range(count):
        t = T0 + timedelta(minutes=i)
        origin = epoch_ns(t) + 60 * 10**9
        messages = [
            Candle(timestamp=t, symbol=SYMBOL, interval="1m", open=100.0, high=101.0, low=99.0, close=100.5,
                   volume=3.0, source="bench"),
            FeatureVector(timestamp=t, symbol=SYMBOL, version="bench", names=list(FEATURES),
                          values=list(FEATURES.values())),
            *(Prediction(timestamp=t, symbol=SYMBOL, model_type=ModelType(m), model_version=v,
                         prediction=PredictionOutput(direction=PredictedDirection.UP, probability=0.7, confidence=0.7),
                         inference_time_ms=0.3)
              for m, v in (("lstm", "lstm-a1"), ("transformer", "trf-b2"))),
        ]  # fmt: skip
        for topic, message in zip(topics, messages, strict=True):
            codec = codecs[type(message)]
            producer.send(topic, codec.encode(message), key=SYMBOL.encode(), headers=codec.headers(origin, "bench"))
    producer.flush()
    consumer = bus.consumer("bench")
    consumer.subscribe(topics)
    by_topic: dict[str, list[Record]] = {t: [] for t in topics}
    while polled := consumer.poll(max_records=10_000, timeout=0.0):
        for r in polled:
            by_topic[r.topic].append(r)
    return [[by_topic[t][i] for t in topics] for i in range(count)]


def _record(group: str, benchmark: Any) -> None:
    if benchmark.stats is not None:
        record(group, "kstrade", benchmark.stats.stats.median * 1e6, "us", False)


def test_one_candle_through_the_stage(benchmark: Any) -> None:
    stage = SignalAggregator([SYMBOL], SignalSettings(), CALIBRATORS)
    groups = iter(_candle_records(ROUNDS + 10))
    produced: list[int] = []

    def one_candle() -> None:
        outs = 0
        for r in next(groups):
            outs += len(list(stage.handle(r)))
        produced.append(outs)

    benchmark.pedantic(one_candle, rounds=ROUNDS, iterations=1, warmup_rounds=5)
    assert set(produced) == {3}  # every candle decided at once: raw, calibrated, final/filtered
    _record("signal aggregation per candle (median)", benchmark)  # stage: decode + join + decide + encode
    if benchmark.stats is not None:
        assert benchmark.stats.stats.median * 1e3 < TARGET_MS


def test_the_decision_alone(benchmark: Any) -> None:
    votes = {
        m: ModelVote(m, v, PredictedDirection.UP, 0.7, 0.7) for m, v in (("lstm", "lstm-a1"), ("transformer", "trf-b2"))
    }
    context = CandleContext(SYMBOL, T0, votes, FEATURES, 100.5, None)
    settings = SignalSettings()
    now = epoch_ns(T0) + 61 * 10**9
    decision = benchmark(lambda: decide(context, settings, CALIBRATORS, now_ns=now, position_open=False))
    assert decision is not None and decision.final is not None
    _record("signal decision alone, per candle (median, decide(): pure logic)", benchmark)
