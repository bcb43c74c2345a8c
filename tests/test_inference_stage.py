"""The inference stages on both transports: one prediction per feature vector per model type
after warm-up, bad input to the DLQ with a stable code, and hot reload in the middle of a
stream with nothing lost or doubled, including refused models that leave the old one serving."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kstrade.bus import Bus, Consumer
from kstrade.bus.topics import METRICS_ALERTS, PREDICTIONS_TRANSFORMER, dlq_topic, features_aggregated, predictions_lstm
from kstrade.features import FEATURE_NAMES, FEATURE_VERSION, features_from_frame
from kstrade.inference import ModelRefused
from kstrade.inference.stage import InferenceStage, LSTMInference, TransformerInference
from kstrade.ingest import synthetic
from kstrade.schemas import Alert, Codec, FeatureVector, Prediction
from kstrade.stage import run_service
from tests.conftest import FAST_GROUP, drain, make_topic, quiet
from tests.pipeline_services import aliased_models, rename_scalers

MODELS = Path(__file__).resolve().parent.parent / "models"
WINDOW = json.loads((MODELS / "transformer" / "manifest.json").read_text())["window"]
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _feature_rows(source: str, count: int) -> list[tuple[datetime, list[float]]]:
    """Real feature vectors of the running engine, on SYNTHETIC candles of `source`."""
    candles = synthetic.generate(source, T0, 2, 11)  # the 1h features warm up for ~34 h
    frame = candles.select(pl_epoch(), "open", "high", "low", "close", "volume")
    features = features_from_frame(frame).filter(ready=True).tail(count)
    times = features["open_time_ms"].to_list()
    values = features.select(list(FEATURE_NAMES)).to_numpy()
    return [
        (datetime.fromtimestamp(t / 1000, UTC), [float(v) for v in row]) for t, row in zip(times, values, strict=True)
    ]


def pl_epoch():  # type: ignore[no-untyped-def]
    import polars as pl

    return pl.col("timestamp").dt.epoch("ms").alias("open_time_ms")


class Feed:
    """Publishes FeatureVector messages the way the features stage does."""

    def __init__(self, bus: Bus) -> None:
        self.codec = Codec(FeatureVector)
        self.producer = bus.producer()

    def send(
        self,
        symbol: str,
        when: datetime,
        values: list[float],
        *,
        version: str = FEATURE_VERSION,
        names: list[str] | None = None,
        origin_ns: int = 123_456_789,
    ) -> None:
        vector = FeatureVector(
            timestamp=when, symbol=symbol, version=version, names=names or list(FEATURE_NAMES), values=values
        )
        self.producer.send(
            features_aggregated(symbol),
            self.codec.encode(vector),
            key=symbol.encode(),
            headers=self.codec.headers(origin_ns, "features"),
        )
        self.producer.flush()


@pytest.fixture
def running(bus: Bus) -> Iterator[list[InferenceStage]]:
    """Started stages are stopped and their reload threads shut down at the end."""
    stages: list[InferenceStage] = []
    yield stages
    for s in stages:
        s.close()


def _start(bus: Bus, stage: InferenceStage, stops: list[threading.Event]) -> threading.Thread:
    stop = threading.Event()
    stops.append(stop)
    thread = threading.Thread(target=run_service, args=(bus, stage, stop), kwargs={"poll_timeout": 0.05}, daemon=True)
    thread.start()
    return thread


def _topics(bus: Bus, symbols: list[str]) -> None:
    for s in symbols:
        for name in (features_aggregated(s), predictions_lstm(s), dlq_topic(features_aggregated(s))):
            make_topic(bus, name)
    for name in (PREDICTIONS_TRANSFORMER, METRICS_ALERTS):
        make_topic(bus, name)


def _reader(bus: Bus, topics: list[str]) -> Consumer:
    consumer = bus.consumer(f"test-{uuid.uuid4().hex[:8]}", {"auto.offset.reset": "earliest", **_str(FAST_GROUP)})
    consumer.subscribe(topics)
    return consumer


def _str(config: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in config.items()}


def _collect(
    consumer: Consumer, model: type, keep: Callable[[Any], bool], count: int, timeout: float = 60.0
) -> list[Any]:
    """Messages of `model` that `keep` accepts, until `count` arrived: on the shared broker a
    topic such as predictions.transformer also holds earlier tests' messages."""
    codec = Codec(model)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for record in consumer.poll(max_records=500, timeout=0.1):
            message = codec.decode_record(record)
            if keep(message):
                out.append(message)
    assert len(out) == count, f"expected {count} {model.__name__} messages, got {len(out)} within {timeout}s"
    return out


def _predictions(consumer: Consumer, symbols: set[str], count: int) -> list[Prediction]:
    return _collect(consumer, Prediction, lambda p: p.symbol in symbols, count)


def test_one_prediction_per_feature_vector_per_model_type(
    bus: Bus, tmp_path: Path, running: list[InferenceStage]
) -> None:
    tag = uuid.uuid4().hex[:6]
    aliases = {f"B{tag}": "BTC-USD", f"E{tag}": "ETH-USD"}
    models = aliased_models(tmp_path / "models", aliases)
    symbols = list(aliases)
    _topics(bus, symbols)
    rows = {alias: _feature_rows(source, WINDOW + 20) for alias, source in aliases.items()}
    lstm, transformer = LSTMInference(models, symbols), TransformerInference(models, symbols)
    running += [lstm, transformer]
    stops: list[threading.Event] = []
    threads = [_start(bus, lstm, stops), _start(bus, transformer, stops)]
    feed = Feed(bus)
    lstm_reader = _reader(bus, [predictions_lstm(s) for s in symbols])
    tf_reader = _reader(bus, [PREDICTIONS_TRANSFORMER])
    try:
        for i in range(WINDOW + 20):
            for alias in symbols:
                when, values = rows[alias][i]
                feed.send(alias, when, values, origin_ns=1_000 + i)
        expected = 2 * 21  # per symbol: the first WINDOW - 1 vectors only fill the window
        got_lstm = _predictions(lstm_reader, set(symbols), expected)
        got_tf = _predictions(tf_reader, set(symbols), expected)
        assert quiet(lstm_reader, 1.0) == []
        assert [r for r in quiet(tf_reader, 0.5) if any(s.encode() == r.key for s in symbols)] == []
        for got, kind in ((got_lstm, "lstm"), (got_tf, "transformer")):
            keys = [(p.symbol, p.timestamp) for p in got]
            assert len(set(keys)) == len(keys) == expected, kind
            for alias in symbols:
                assert sorted(t for s, t in keys if s == alias) == [
                    rows[alias][i][0] for i in range(WINDOW - 1, WINDOW + 20)
                ]
            for p in got:
                assert p.model_type.value == kind
                assert len(p.model_version) == 12
                assert 1 / 3 <= p.prediction.probability <= 1
                assert 0 <= p.prediction.confidence <= 1
                assert p.inference_time_ms >= 0
        # The origin time of the candle travels on.
        records = drain(_reader(bus, [predictions_lstm(symbols[0])]), 21)
        origins = sorted(InferenceStage.origin_ns(r) for r in records)
        assert origins == [1_000 + i for i in range(WINDOW - 1, WINDOW + 20)]
        # The LSTMs of the two symbols are different models; the Transformer is one.
        assert len({p.model_version for p in got_lstm}) == 2
        assert len({p.model_version for p in got_tf}) == 1
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(30)


def test_bad_input_goes_to_the_dlq_with_a_stable_code_and_the_stage_keeps_serving(
    bus: Bus, tmp_path: Path, running: list[InferenceStage]
) -> None:
    tag = uuid.uuid4().hex[:6]
    alias = f"B{tag}"
    models = aliased_models(tmp_path / "models", {alias: "BTC-USD"})
    _topics(bus, [alias])
    rows = _feature_rows("BTC-USD", WINDOW + 1)
    stage = LSTMInference(models, [alias])
    running.append(stage)
    stops: list[threading.Event] = []
    thread = _start(bus, stage, stops)
    feed = Feed(bus)
    dlq = _reader(bus, [dlq_topic(features_aggregated(alias))])
    out = _reader(bus, [predictions_lstm(alias)])
    try:
        when, values = rows[0]
        feed.send(alias, when, values, version="v0-other")
        feed.send(alias, when, values[:-1], names=list(FEATURE_NAMES)[:-1])
        feed.send(alias, when, [*values[:-1], 1e300])  # finite as a double, not as the model's float32
        wrong = list(values)
        vector = FeatureVector(
            timestamp=when, symbol="NOPE-USD", version=FEATURE_VERSION, names=list(FEATURE_NAMES), values=wrong
        )
        feed.producer.send(
            features_aggregated(alias),
            feed.codec.encode(vector),
            key=alias.encode(),
            headers=feed.codec.headers(1, "features"),
        )
        feed.producer.send(
            features_aggregated(alias), b"\x00garbage", key=alias.encode(), headers=feed.codec.headers(1, "features")
        )
        feed.producer.flush()
        letters = drain(dlq, 5, timeout=60)
        codes = [(r.header("dlq.error.code") or b"").decode() for r in letters]
        # One partition (same key), so the dead letters keep the order they were sent in.
        assert codes[:4] == [
            "FEATURE_VERSION_MISMATCH",
            "FEATURE_NAMES_MISMATCH",
            "NON_FINITE_FEATURE",
            "UNKNOWN_SYMBOL",
        ]
        assert codes[4] and codes[4] not in codes[:4]  # the codec's own code for an undecodable value
        for when, values in rows:  # and the stage still serves
            feed.send(alias, when, values)
        got = _predictions(out, {alias}, 2)
        assert [p.timestamp for p in got] == [rows[-2][0], rows[-1][0]]
    finally:
        stops[0].set()
        thread.join(30)


def _swap_in_other_lstm(directory: Path, alias: str, source_symbol: str) -> str:
    """Deploys another trained model into a slot (the shipped LSTM of another symbol): a new
    version with a new sha256. Returns its model_version."""
    staging = directory.parent / f".staging-{uuid.uuid4().hex[:6]}"
    shutil.copytree(MODELS / "lstm" / source_symbol, staging)
    rename_scalers(staging, {alias: source_symbol})
    shutil.copy(staging / "reference.npz", directory / "reference.npz")
    shutil.copy(staging / "model.onnx", directory / "model.onnx")
    (staging / "manifest.json").replace(directory / "manifest.json")  # the manifest last: it commits the version
    return str(json.loads((directory / "manifest.json").read_text())["model_version"])


def test_hot_reload_mid_stream_loses_and_doubles_nothing_and_refuses_bad_models(
    bus: Bus, tmp_path: Path, running: list[InferenceStage]
) -> None:
    tag = uuid.uuid4().hex[:6]
    alias = f"B{tag}"
    models = aliased_models(tmp_path / "models", {alias: "BTC-USD"})
    slot_dir = models / "lstm" / alias
    old_version = json.loads((slot_dir / "manifest.json").read_text())["model_version"]
    _topics(bus, [alias])
    rows = _feature_rows("BTC-USD", WINDOW + 60)
    stage = LSTMInference(models, [alias], reload_check_seconds=0.05)
    running.append(stage)
    stops: list[threading.Event] = []
    thread = _start(bus, stage, stops)
    feed = Feed(bus)
    out = _reader(bus, [predictions_lstm(alias)])
    alerts = _reader(bus, [METRICS_ALERTS])

    seen: list[str] = []

    def wait_alert(code: str) -> None:
        """Alerts of this stage about this slot until `code`; a file restored or edited twice may
        add a refusal of the same kind before it, never a reload."""
        while code not in seen:
            found = _collect(alerts, Alert, lambda a: a.source == stage.name and alias in a.message, 1)
            seen.append(str(found[0].code))
        assert set(seen[: seen.index(code)]) <= {"MODEL_SHA256_MISMATCH", "FEATURE_NAMES_MISMATCH"}, seen
        seen.clear()

    try:
        # Part 1: the shipped model serves.
        for when, values in rows[: WINDOW + 15]:
            feed.send(alias, when, values)
        # A corrupted file: refused with an alert, the old model keeps serving.
        original = (slot_dir / "model.onnx").read_bytes()
        (slot_dir / "model.onnx").write_bytes(original[:-64] + bytes(64))
        wait_alert("MODEL_SHA256_MISMATCH")
        (slot_dir / "model.onnx").write_bytes(original)
        time.sleep(0.2)
        # A manifest that does not match the running features: refused too.
        manifest = json.loads((slot_dir / "manifest.json").read_text())
        names = manifest["feature_names"]
        manifest["feature_names"] = [names[1], names[0], *names[2:]]
        # Written beside it and renamed over it, as a deployment does: a reader polling every
        # 50 ms must never see half a file (that would be MANIFEST_UNREADABLE, a different case).
        staged = slot_dir / "manifest.json.tmp"
        staged.write_text(json.dumps(manifest))
        staged.replace(slot_dir / "manifest.json")
        wait_alert("FEATURE_NAMES_MISMATCH")
        for when, values in rows[WINDOW + 15 : WINDOW + 30]:
            feed.send(alias, when, values)
        before = _predictions(out, {alias}, 31)
        assert {p.model_version for p in before} == {old_version}
        # A good new version, deployed while vectors keep arriving.
        new_version = _swap_in_other_lstm(slot_dir, alias, "ETH-USD")
        assert new_version != old_version
        for when, values in rows[WINDOW + 30 : WINDOW + 45]:
            feed.send(alias, when, values)
        wait_alert("MODEL_RELOADED")
        for when, values in rows[WINDOW + 45 :]:
            feed.send(alias, when, values)
        after = _predictions(out, {alias}, 30)
        assert quiet(out, 1.0) == []
        got = before + after
        assert [p.timestamp for p in got] == [when for when, _ in rows[WINDOW - 1 :]]  # no loss, no duplicate
        versions = [p.model_version for p in got]
        switch = versions.index(new_version)
        assert set(versions[:switch]) == {old_version} and set(versions[switch:]) == {new_version}
        assert 31 <= switch <= 46  # between the deploy and the reload alert
        assert stage.slots[alias].model.version == new_version
    finally:
        stops[0].set()
        thread.join(30)


def test_a_mismatched_manifest_is_refused_at_start_naming_the_mismatch(tmp_path: Path) -> None:
    models = aliased_models(tmp_path / "models", {"BTC-USD": "BTC-USD"})
    path = models / "transformer" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["feature_names"][0] = "not_a_feature"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelRefused) as info:
        TransformerInference(models, ["BTC-USD"])
    assert info.value.code == "FEATURE_NAMES_MISMATCH" and "not_a_feature" in info.value.message
    with pytest.raises(ModelRefused) as info:
        LSTMInference(models, ["ETH-USD"])  # no model directory for that symbol
    assert info.value.code == "MANIFEST_UNREADABLE"


@pytest.mark.parametrize("model_dir", ["lstm/BTC-USD", "transformer"])
def test_a_big_model_call_runs_in_slices_with_the_very_probabilities_of_one_call(model_dir: str) -> None:
    """On the CPU a call of more than CPU_CALL_ROWS windows runs in slices (faster: the batch
    stays in cache); every probability is bit for bit what one call, and one window at a time,
    give, for a batch that does not divide evenly."""
    from dataclasses import replace

    from kstrade.inference.runtime import CPU_CALL_ROWS, LoadedModel

    sliced = LoadedModel.load(MODELS / model_dir)
    assert sliced.call_rows == CPU_CALL_ROWS
    whole = replace(sliced, call_rows=0)
    n = 2 * CPU_CALL_ROWS + 7
    windows = np.random.default_rng(5).standard_normal((n, sliced.window, len(FEATURE_NAMES))).astype(np.float32)
    got = sliced.probabilities(windows)
    assert got.shape == (n, 3)
    assert np.array_equal(got, whole.probabilities(windows))
    assert np.array_equal(got, np.concatenate([whole.probabilities(windows[i : i + 1]) for i in range(n)]))


def test_window_arrays_are_reused_not_reallocated() -> None:
    from kstrade.inference.stage import FeatureWindow

    window = FeatureWindow(3, 2)
    buffer = window.rows.base
    for t in range(5):
        assert window.push(t, np.array([t, -t], dtype=np.float32))
        assert window.rows.base is buffer and window.rows.flags.c_contiguous
        assert window.rows[:, 0].tolist()[-min(t + 1, 3) :] == list(range(max(0, t - 2), t + 1))
    assert not window.push(4, np.zeros(2, dtype=np.float32))  # a redelivered candle
    assert window.full
    assert window.rows[:, 0].tolist() == [2, 3, 4]
    assert window.rows[:, 1].tolist() == [-2, -3, -4]
    restored = FeatureWindow(3, 2)
    assert restored.restore(window.snapshot())
    assert restored.rows.tolist() == window.rows.tolist() and restored.full
    restored.push(5, np.array([5, -5], dtype=np.float32))
    assert restored.rows[:, 0].tolist() == [3, 4, 5]
    _ = timedelta


def test_the_configured_stages_run_in_the_deterministic_pipeline() -> None:
    """Both stages from the config, in `Pipeline` on the memory bus with the event clock (the
    backtest path): same input, same predictions, byte for byte."""
    from kstrade.config import InferenceSettings, Settings
    from kstrade.inference import inference_stages
    from kstrade.stage import Pipeline

    def run() -> list[bytes]:
        bus = Bus.memory()
        symbols = ["BTC-USD", "SOL-USD"]
        _topics(bus, symbols)
        settings = Settings(symbols=symbols, inference=InferenceSettings(models_dir=MODELS))
        stages = inference_stages(settings)
        pipeline = Pipeline(bus, stages)
        feed = Feed(bus)
        for symbol in symbols:
            for when, values in _feature_rows(symbol, WINDOW + 4):
                feed.send(symbol, when, values)
        pipeline.drain()
        for s in stages:
            s.close()
        reader = _reader(bus, [PREDICTIONS_TRANSFORMER, *(predictions_lstm(s) for s in symbols)])
        records = drain(reader, 2 * 2 * 5)
        assert sorted({r.topic for r in records}) == sorted(
            [PREDICTIONS_TRANSFORMER, predictions_lstm("BTC-USD"), predictions_lstm("SOL-USD")]
        )
        # inference_time_ms is a wall time: compare everything else.
        decoded = [Codec(Prediction).decode_record(r) for r in records]
        return sorted(p.model_copy(update={"inference_time_ms": 0.0}).model_dump_json().encode() for p in decoded)

    assert run() == run()


def test_a_restart_from_the_checkpoint_is_warm_and_predicts_what_an_uninterrupted_run_does(tmp_path: Path) -> None:
    """With a state_dir, a stage restarted part-way through predicts from its first new vector
    exactly what one stage that never stopped predicts; the vectors redelivered after the
    restart (checkpointed but not committed) are skipped, not predicted twice."""
    from kstrade.stage import Pipeline

    symbols = ["BTC-USD", "SOL-USD"]
    rows = {s: _feature_rows(s, WINDOW + 20) for s in symbols}
    split = WINDOW + 5  # past the warm-up: the first stage has predicted already

    def feed(stage: InferenceStage, start: int, stop: int) -> list[bytes]:
        bus = Bus.memory()
        _topics(bus, symbols)
        sender = Feed(bus)
        for symbol in symbols:
            for when, values in rows[symbol][start:stop]:
                sender.send(symbol, when, values)
        Pipeline(bus, [stage]).drain()  # the runner checkpoints before each commit
        stage.close()
        reader = _reader(bus, [PREDICTIONS_TRANSFORMER, *(predictions_lstm(s) for s in symbols)])
        decoded = [Codec(Prediction).decode_record(r) for r in quiet(reader, 0.2)]
        # inference_time_ms is a wall time: compare everything else.
        return [p.model_copy(update={"inference_time_ms": 0.0}).model_dump_json().encode() for p in decoded]

    for kind in (LSTMInference, TransformerInference):
        state = tmp_path / kind.name
        first = feed(kind(MODELS, symbols, state_dir=state), 0, split)
        assert (state / f"{kind.name}-state.json").exists()
        restarted_stage = kind(MODELS, symbols, state_dir=state)
        restarted = feed(restarted_stage, split - 3, len(rows["BTC-USD"]))  # 3 per symbol come again
        assert restarted_stage.duplicates == 3 * len(symbols)
        assert len(restarted) == 2 * (len(rows["BTC-USD"]) - split)  # warm at once: one per new vector
        uninterrupted = feed(kind(MODELS, symbols), 0, len(rows["BTC-USD"]))
        assert sorted(first + restarted) == sorted(uninterrupted)
        cold = feed(kind(MODELS, symbols), split, len(rows["BTC-USD"]))  # what a restart did before
        assert len(cold) < len(restarted)
