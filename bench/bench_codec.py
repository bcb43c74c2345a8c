"""Encode + decode of one candle: the native codec against fastavro and JSON (orjson), the tools
a user would otherwise pick, in the same run. The ratios are printed at the end of the session
(bench/figures.py) and checked loosely (native must not be slower than fastavro), so a regression shows in CI.

    python -m pytest bench/bench_codec.py -q

Each engine runs on the same Avro value (a dict, timestamp as epoch microseconds), which is what
a bus path handles; `model` cases add pydantic validation at the edge, and `batch` cases decode
1000 candles at once into numpy columns.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from figures import record
from kstrade import _native
from kstrade.schemas import Candle, Codec
from kstrade.schemas.codec import from_micros

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "candle.json"
CANDLE: dict[str, Any] = json.loads(VECTORS.read_text())["valid"][0]["record"]
SCHEMA = fastavro.parse_schema(
    json.loads((Path(__file__).resolve().parents[1] / "schemas" / "candle.avsc").read_text())
)
BATCH = 1000

_results: dict[str, float] = {}


def _record(name: str, benchmark: Any, per: int = 1) -> None:
    """Keeps the mean for the ratio report (absent under --benchmark-disable)."""
    if benchmark.stats is not None:
        _results[name] = benchmark.stats.stats.mean / per
        kind, _, engine = name.rpartition("/")
        group = {"": "candle encode+decode (dict)", "model": "candle encode+decode (pydantic model)",
                 "batch-decode": "candle decode in a batch of 1000, per candle"}[kind]  # fmt: skip
        contender = {"native": "kstrade", "fastavro": "fastavro", "json": "orjson"}[engine]
        record(group, contender, _results[name] * 1e9, "ns", False)


def _native_roundtrip() -> dict[str, Any]:
    out: dict[str, Any] = _native.decode_candle(_native.encode_candle(CANDLE))
    return out


def _fastavro_roundtrip() -> dict[str, Any]:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, CANDLE)
    buf.seek(0)
    out: dict[str, Any] = fastavro.schemaless_reader(buf, SCHEMA, None)
    return out


def _json_roundtrip() -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(CANDLE))
    return out


ENGINES: dict[str, Callable[[], dict[str, Any]]] = {
    "native": _native_roundtrip,
    "fastavro": _fastavro_roundtrip,
    "json": _json_roundtrip,
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_candle_roundtrip(benchmark: Any, engine: str) -> None:
    fn = ENGINES[engine]
    out = benchmark(fn)
    assert out["close"] == CANDLE["close"] and out["symbol"] == CANDLE["symbol"]
    _record(engine, benchmark)


@pytest.mark.parametrize("engine", ["native", "fastavro", "json"])
def test_candle_model_roundtrip(benchmark: Any, engine: str) -> None:
    """The same with pydantic models at both ends (what a stage's edge pays)."""
    fmt = "json" if engine == "json" else "avro"
    codec = Codec("candle", format=fmt, engine="fastavro" if engine == "fastavro" else "auto")  # type: ignore[arg-type]
    c = Candle(**{**CANDLE, "timestamp": from_micros(CANDLE["timestamp"])})
    out = benchmark(lambda: codec.decode(codec.encode(c)))
    assert out == c
    _record(f"model/{engine}", benchmark)


@pytest.mark.parametrize("engine", ["native", "fastavro", "json"])
def test_candle_batch_decode(benchmark: Any, engine: str) -> None:
    """Decoding 1000 candles; the result is per candle so it compares with the rows above."""
    values = [
        _native.encode_candle({**CANDLE, "timestamp": CANDLE["timestamp"] + i * 60_000_000}) for i in range(BATCH)
    ]
    if engine == "native":
        codec = Codec("candle")
        out = benchmark(lambda: codec.decode_batch(values))
        assert out["count"] == BATCH
    elif engine == "fastavro":
        out = benchmark(lambda: [fastavro.schemaless_reader(io.BytesIO(v), SCHEMA, None) for v in values])
        assert len(out) == BATCH
    else:
        texts = [orjson.dumps({**CANDLE, "timestamp": CANDLE["timestamp"] + i * 60_000_000}) for i in range(BATCH)]
        out = benchmark(lambda: [orjson.loads(t) for t in texts])
        assert len(out) == BATCH
    _record(f"batch-decode/{engine}", benchmark, BATCH)


def test_native_is_faster_than_fastavro() -> None:
    """A loose gate: whatever the machine, the hand-written codec must beat the generic one."""
    if not {"native", "fastavro"} <= _results.keys():
        pytest.skip("run with the benchmarks enabled")
    assert _results["native"] < _results["fastavro"], _results
