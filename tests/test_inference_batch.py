"""The inference stages' batch path against their record-at-a-time path, on batches cut anywhere.

`InferenceStage.handle_batch` gathers every full window of a batch at once when every vector of
it is plain, and falls back to one window at a time when one is not; both must give, vector for
vector, what `handle` gives one record at a time: the same predictions (bit for bit: the model
sees the same input), the same skipped repeats and the same dead letters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstrade.bus import Batch, Output, Record
from kstrade.bus.topics import features_aggregated
from kstrade.inference.stage import InferenceStage, LSTMInference, TransformerInference
from kstrade.schemas.models import FeatureVector, Prediction

from .helpers import consumed

MODELS = Path(__file__).resolve().parents[1] / "models"
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]
START = datetime(2026, 1, 5, tzinfo=UTC)


class _DeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, record: Record, code: str, message: str) -> None:
        self.sent.append((record.offset, code))


def _vectors(stage: InferenceStage, rng: random.Random, minutes: int, bad: bool) -> list[Record]:
    """Feature vectors of every symbol, minute after minute (some repeated, as a redelivery
    would), and with `bad` a malformed body and a feature beyond float32 among them; as consumed records."""
    names = next(iter(stage.slots.values())).model.manifest.feature_names
    version = next(iter(stage.slots.values())).model.manifest.feature_version
    codec = stage.codec(FeatureVector)
    outs: list[Output] = []
    for minute in range(minutes):
        at = START + timedelta(minutes=minute)
        for symbol in SYMBOLS:
            values = [rng.gauss(0.0, 1.0) for _ in names]
            vector = FeatureVector(timestamp=at, symbol=symbol, version=version, names=names, values=values)
            out = Output(features_aggregated(symbol), codec.encode(vector), key=symbol.encode(),
                         headers=codec.headers(int(at.timestamp() * 1e9), "features"))  # fmt: skip
            outs.append(out)
            if rng.random() < 0.03:
                outs.append(out)  # a repeat: skipped, never predicted twice
    if bad:
        first = outs[len(outs) // 2]
        outs.insert(len(outs) // 2, Output(first.topic, b"\x00not a vector", key=first.key, headers=first.headers))
        vector = codec.decode(outs[-1].value)
        huge = vector.model_copy(update={"values": [1e300, *vector.values[1:]]})  # inf as float32
        outs.insert(len(outs) // 3, Output(outs[-1].topic, codec.encode(huge), key=outs[-1].key,
                                           headers=outs[-1].headers))  # fmt: skip
    return consumed(outs, SYMBOLS)


def _comparable(stage: InferenceStage, outputs: list[Output]) -> list[tuple[str, bytes | None, dict[str, Any]]]:
    """Outputs without the model call's measured time (the one field that is a clock reading)."""
    codec = stage.codec(Prediction)
    return [(o.topic, o.key, codec.decode(o.value).model_dump(exclude={"inference_time_ms"})) for o in outputs]


def _run(stage: InferenceStage, records: list[Record], cuts: list[int] | None) -> tuple[list[Any], list[Any]]:
    dead = _DeadLetters()
    outputs: list[Output] = []
    if cuts is None:
        outputs += Batch(records, dead).each(stage.handle)  # type: ignore[arg-type]
    else:
        for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True):
            outputs += stage.handle_batch(Batch(records[a:b], dead))  # type: ignore[arg-type]
    return _comparable(stage, outputs), dead.sent


@pytest.fixture(scope="module")
def stages() -> dict[str, type[InferenceStage]]:
    return {"lstm": LSTMInference, "transformer": TransformerInference}


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["lstm", "transformer"]), bad=st.booleans())
def test_a_batch_cut_anywhere_predicts_what_the_record_path_predicts(
    stages: dict[str, type[InferenceStage]], seed: int, kind: str, bad: bool
) -> None:
    rng = random.Random(seed)
    make = stages[kind]
    one = make(MODELS, SYMBOLS)
    many = make(MODELS, SYMBOLS)
    records = _vectors(one, rng, 45, bad)  # windows of 30: the first batches warm up, later ones predict
    cuts = sorted(rng.sample(range(1, len(records)), rng.randint(1, 8)))
    expected, expected_dead = _run(one, records, None)
    got, dead = _run(many, records, cuts)
    assert len(expected) >= 3 * 15  # every symbol predicted from its 30th vector on
    assert got == expected
    assert dead == expected_dead
    assert len(dead) == (2 if bad else 0)
    assert many.duplicates == one.duplicates
    one.close()
    many.close()
