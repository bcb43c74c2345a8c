"""Ensemble weights from realized outcomes: by hand, and in a replay where one model is always
right and the other always wrong."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from kstrade.bus import Bus
from kstrade.bus.topics import catalogue, create_all, signals
from kstrade.config import OutcomeReweighting, SignalSettings
from kstrade.schemas.models import PredictedDirection
from kstrade.signals import SignalAggregator
from kstrade.signals.ensemble import ClassProbabilities
from kstrade.signals.reweighting import OutcomeWeights, log_loss, realized_direction
from kstrade.stage import Pipeline

from .test_signals_stage import Feed, Replay, decode, minute

T0 = datetime(2026, 1, 5, tzinfo=UTC)
RIGHT = ClassProbabilities(0.1, 0.1, 0.8)  # says UP
WRONG = ClassProbabilities(0.8, 0.1, 0.1)  # says DOWN


def test_realized_direction_and_loss_by_hand() -> None:
    assert realized_direction(100.0, 100.04, 0.0005) is PredictedDirection.FLAT
    assert realized_direction(100.0, 100.06, 0.0005) is PredictedDirection.UP
    assert realized_direction(100.0, 99.9, 0.0005) is PredictedDirection.DOWN
    assert log_loss(RIGHT, PredictedDirection.UP) == pytest.approx(-math.log(0.8))
    assert log_loss(ClassProbabilities(0.0, 0.0, 1.0), PredictedDirection.DOWN) == pytest.approx(-math.log(1e-6))


def test_a_model_that_keeps_losing_loses_weight_after_enough_outcomes() -> None:
    weights = OutcomeWeights({"lstm": 0.5, "transformer": 0.5, "rl": 0.0}, OutcomeReweighting(min_outcomes=3))
    for m in range(4):
        t = T0 + timedelta(minutes=m)
        weights.predicted("BTC-USD", t, 100.0, {"lstm": RIGHT, "transformer": WRONG})
        weights.close("BTC-USD", t + timedelta(minutes=5), 101.0)  # up 1%: UP
        if m < 2:
            assert weights.weights() == {"lstm": 0.5, "transformer": 0.5, "rl": 0.0}  # too few outcomes yet
    # Constant losses: the running means are the losses themselves; 0.5 x 0.1 / 0.8.
    assert weights.weights() == pytest.approx({"lstm": 0.5, "transformer": 0.0625, "rl": 0.0})
    assert weights.outcomes == {"lstm": 4, "transformer": 4}


def test_a_close_without_a_decided_candle_scores_nothing() -> None:
    weights = OutcomeWeights({"lstm": 1.0}, OutcomeReweighting(min_outcomes=1))
    weights.close("BTC-USD", T0, 100.0)
    assert weights.outcomes == {} and weights.weights() == {"lstm": 1.0}


def test_in_a_replay_the_wrong_model_fades_out_of_the_ensemble() -> None:
    bus = Bus.memory()
    create_all(bus.admin(), catalogue(["BTC-USD"]))
    cfg = SignalSettings(
        reweighting=OutcomeReweighting(enabled=True, horizon_minutes=1, min_outcomes=2),
        one_position_per_symbol=False,
    )
    stage = SignalAggregator(["BTC-USD"], cfg)
    feed = Feed()
    batches = []
    for m in range(8):
        t = minute(m)
        outs = feed.market("BTC-USD", t, 100.0 * 1.01**m, 0.5)  # rises 1% a minute
        outs.append(feed.prediction("lstm", "BTC-USD", t, PredictedDirection.UP, 0.8))
        outs.append(feed.prediction("transformer", "BTC-USD", t, PredictedDirection.DOWN, 0.8))
        batches.append((t + timedelta(minutes=1), outs))
    feed.source = Replay(batches)
    Pipeline(bus, [stage]).run(feed.source)
    check = bus.consumer("check")
    check.subscribe([signals("calibrated")])
    weights = [s.ensemble_weights for s, _ in decode(check.poll(max_records=100, timeout=0.0), signals("calibrated"))]
    assert len(weights) == 8
    assert weights[0] == {"lstm": 0.5, "transformer": 0.5}
    assert weights[-1]["transformer"] == pytest.approx(0.1 / 0.8 / (1 + 0.1 / 0.8))
