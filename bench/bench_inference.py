"""Inference latency and memory: one model call at batch 1 and batch 3 for each shipped model,
p50 and p99 over many calls, with kstrade's session settings (1 intra-op thread, no spinning)
beside onnxruntime's defaults (a thread per core, spinning), the anchor a user would get by
default; plus one feature vector through the whole stage (decode, window, scale, run, encode).

    python -m pytest bench/bench_inference.py -q -s

Targets: p99 under 2 ms per model call (issue 5); the design document allows 30 ms.
"""

from __future__ import annotations

import json
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from figures import record
from kstrade.bus import Bus, Record
from kstrade.bus.topics import features_aggregated
from kstrade.features import FEATURE_NAMES, FEATURE_VERSION
from kstrade.inference import LoadedModel, session_options
from kstrade.inference.manifest import manifest_paths
from kstrade.inference.stage import TransformerInference
from kstrade.schemas import Codec, FeatureVector

MODELS = Path(__file__).resolve().parent.parent / "models"
CALLS = 2000
DESIGN_LIMIT_MS = 30.0
TARGET_P99_MS = 2.0


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _time_calls(session: ort.InferenceSession, x: np.ndarray) -> tuple[float, float]:
    for _ in range(50):  # warm-up: first calls allocate
        session.run(None, {"x": x})
    samples = []
    for _ in range(CALLS):
        t = time.perf_counter()
        session.run(None, {"x": x})
        samples.append(time.perf_counter() - t)
    return _percentiles(samples)


@pytest.mark.parametrize("model", ["lstm/BTC-USD", "transformer"])
@pytest.mark.parametrize("batch", [1, 3])
def test_model_call_latency(model: str, batch: int) -> None:
    directory = MODELS / model
    manifest = json.loads((directory / "manifest.json").read_text())
    x = np.random.default_rng(0).standard_normal((batch, manifest["window"], len(FEATURE_NAMES))).astype(np.float32)
    ours = ort.InferenceSession(str(directory / "model.onnx"), session_options(), providers=["CPUExecutionProvider"])
    default = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    p50, p99 = _time_calls(ours, x)
    d50, d99 = _time_calls(default, x)
    group = f"{model} batch {batch}: model call"
    record(f"{group} p50", "kstrade", p50 * 1e3, "us", False)
    record(f"{group} p50", "onnxruntime defaults", d50 * 1e3, "us", False)
    record(f"{group} p99", "kstrade", p99 * 1e3, "us", False)
    record(f"{group} p99", "onnxruntime defaults", d99 * 1e3, "us", False)
    print(f"\n{group}: p50 {p50:.3f} ms p99 {p99:.3f} ms (onnxruntime defaults: p50 {d50:.3f} p99 {d99:.3f})")
    assert p99 < DESIGN_LIMIT_MS
    if p99 >= TARGET_P99_MS:
        print(f"  above the {TARGET_P99_MS} ms target on this machine")


def test_memory_of_the_loaded_models() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    models = [LoadedModel.load(p.parent) for p in manifest_paths(MODELS)]  # the 1m ones (not models/1h)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sizes = sum((m.directory / m.manifest.file).stat().st_size for m in models)
    print(f"\n{len(models)} models, {sizes / 1e3:.0f} kB of ONNX, peak RSS grew by {(after - before) / 1e3:.1f} MB")
    record("memory: 4 models loaded (peak RSS growth)", "kstrade", (after - before) / 1e3, "MB", False)
    assert (after - before) / 1e3 < 500


def test_one_feature_vector_through_the_stage() -> None:
    stage = TransformerInference(MODELS, ["BTC-USD"])
    window = stage.slots["BTC-USD"].model.window
    bus = Bus.memory()
    topic = features_aggregated("BTC-USD")
    bus.admin().create_topics([(topic, 1, 1, {})])
    producer, codec = bus.producer(), Codec(FeatureVector)
    rng = np.random.default_rng(1)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    count = window + CALLS
    for i in range(count):
        vector = FeatureVector(
            timestamp=t0 + timedelta(minutes=i),
            symbol="BTC-USD",
            version=FEATURE_VERSION,
            names=list(FEATURE_NAMES),
            values=rng.standard_normal(len(FEATURE_NAMES)).tolist(),
        )
        producer.send(topic, codec.encode(vector), key=b"BTC-USD", headers=codec.headers(1, "bench"))
    producer.flush()
    consumer = bus.consumer("bench")
    consumer.subscribe([topic])
    records: list[Record] = []
    while polled := consumer.poll(max_records=10_000, timeout=0.0):
        records += polled
    assert len(records) == count
    for r in records[:window]:
        list(stage.handle(r))
    samples = []
    for r in records[window:]:
        t = time.perf_counter()
        out = list(stage.handle(r))
        samples.append(time.perf_counter() - t)
        assert len(out) == 1
    stage.close()
    p50, p99 = _percentiles(samples)
    record("transformer stage per feature vector p50", "kstrade", p50 * 1e3, "us", False)
    record("transformer stage per feature vector p99", "kstrade", p99 * 1e3, "us", False)
    print(f"\nstage per feature vector (decode + window + run + encode): p50 {p50:.3f} ms p99 {p99:.3f} ms")
    assert p99 < DESIGN_LIMIT_MS
