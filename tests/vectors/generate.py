"""Generates the shared codec test vectors with fastavro, the independent implementation.

Run once and commit the output; the Rust codec (cargo test -p kstrade-codec) and the Python
codec (pytest) both check themselves against these files and must never write them.

    python tests/vectors/generate.py

Each `<schema>.json` holds `valid` cases (an Avro value, timestamps as epoch microseconds,
enums as symbols, and the hex of fastavro's encoding) and `invalid` cases (hostile bytes built
by hand from the Avro spec, with the error code and field a decoder must report).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import fastavro

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent.parent / "schemas"


def schema(name: str) -> Any:
    return fastavro.parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text()))


def encode(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(name), record)
    return buf.getvalue()


def zigzag(v: int) -> bytes:
    z = (v << 1) ^ (v >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def avro_str(s: str) -> bytes:
    b = s.encode()
    return zigzag(len(b)) + b


def dbl(v: float) -> bytes:
    return struct.pack("<d", v)


TS = 1_762_792_200_000_000  # 2025-11-10T16:30:00Z, the design document's example


def candles() -> dict[str, Any]:
    base = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "interval": "1m",
        "open": 89234.50,
        "high": 89456.20,
        "low": 89123.10,
        "close": 89345.80,
        "volume": 123.456,
        "source": "coinbase",
    }
    valid = [
        ("design_example", base),
        (
            "epoch_zero_and_zero_prices",
            {**base, "timestamp": 0, "open": 0.0, "high": 0.0, "low": 0.0, "close": -0.0, "volume": 0.0},
        ),
        ("before_epoch", {**base, "timestamp": -1_000_001, "interval": "1h"}),
        (
            "extreme_doubles",
            {
                **base,
                "open": 5e-324,
                "high": 1.7976931348623157e308,
                "low": 2.2250738585072014e-308,
                "close": 0.1 + 0.2,
                "volume": 1e-9,
            },
        ),
        ("unicode_and_long_strings", {**base, "symbol": "EURUSD", "source": "réplay-" + "x" * 200}),
        ("empty_strings", {**base, "symbol": "", "interval": "", "source": ""}),
        ("far_future", {**base, "timestamp": 253_402_300_799_999_999}),  # 9999-12-31T23:59:59.999999Z
    ]
    good = encode("candle", base)
    # Layout: ts varint (8 bytes for TS), symbol (1+7), interval (1+2), open..volume (5x8), source (1+8)
    close_at = 8 + 8 + 3 + 3 * 8
    nan = bytearray(good)
    nan[close_at : close_at + 8] = dbl(float("nan"))
    inf = bytearray(good)
    inf[close_at - 8 : close_at] = dbl(float("-inf"))
    invalid = [
        {"name": "empty", "hex": "", "code": "TRUNCATED", "field": "timestamp"},
        {
            "name": "truncated_in_close",
            "hex": good[: close_at + 3].hex(),
            "code": "TRUNCATED",
            "field": "close",
        },
        {"name": "truncated_in_source", "hex": good[:-2].hex(), "code": "TRUNCATED", "field": "source"},
        {"name": "nan_close", "hex": bytes(nan).hex(), "code": "NON_FINITE", "field": "close"},
        {"name": "minus_inf_low", "hex": bytes(inf).hex(), "code": "NON_FINITE", "field": "low"},
        {
            "name": "overlong_varint_timestamp",
            "hex": (b"\xff" * 11).hex(),
            "code": "MALFORMED",
            "field": "timestamp",
        },
        {
            "name": "negative_symbol_length",
            "hex": (zigzag(TS) + zigzag(-3)).hex(),
            "code": "MALFORMED",
            "field": "symbol",
        },
        {
            "name": "invalid_utf8_symbol",
            "hex": (zigzag(TS) + zigzag(2) + b"\xff\xfe").hex(),
            "code": "MALFORMED",
            "field": "symbol",
        },
        {"name": "trailing_byte", "hex": (good + b"\x00").hex(), "code": "TRAILING_BYTES", "field": ""},
    ]
    return {"valid": valid, "invalid": invalid}


def feature_vectors() -> dict[str, Any]:
    names = [f"f{i}" for i in range(70)]  # > 63 items: the block count needs a 2-byte varint
    base = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "version": "v2.1",
        "names": [
            "5m_close",
            "15m_close",
            "1h_close",
            "tf_alignment_score",
            "volatility_regime",
            "rsi_14",
            "macd_signal",
        ],
        "values": [89345.80, 89456.20, 89123.10, 0.75, 1.0, 67.3, 0.5],
    }
    valid = [
        ("design_example", base),
        ("empty_feature_set", {**base, "names": [], "values": []}),
        (
            "seventy_features",
            {**base, "version": "v3", "names": names, "values": [i * 0.5 - 17.25 for i in range(70)]},
        ),
    ]
    head = zigzag(TS) + avro_str("BTC-USD") + avro_str("v1")
    # Two blocks, the first with a negative count and its byte size (Avro spec, "Arrays").
    two_blocks = (
        head
        + zigzag(-1)
        + zigzag(2)
        + avro_str("a")
        + zigzag(1)
        + avro_str("b")
        + zigzag(0)
        + zigzag(2)
        + dbl(1.5)
        + dbl(-2.0)
        + zigzag(0)
    )
    two_blocks_record = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "version": "v1",
        "names": ["a", "b"],
        "values": [1.5, -2.0],
    }
    nan_values = (
        head
        + zigzag(2)
        + avro_str("a")
        + avro_str("b")
        + zigzag(0)
        + zigzag(2)
        + dbl(1.0)
        + dbl(float("nan"))
        + zigzag(0)
    )
    mismatch = head + zigzag(1) + avro_str("a") + zigzag(0) + zigzag(2) + dbl(1.0) + dbl(2.0) + zigzag(0)
    huge_count = head + zigzag(1 << 40)
    invalid = [
        {"name": "nan_value", "hex": nan_values.hex(), "code": "NON_FINITE", "field": "values[1]"},
        {"name": "names_values_length_mismatch", "hex": mismatch.hex(), "code": "INVALID", "field": "values"},
        {"name": "hostile_array_count", "hex": huge_count.hex(), "code": "TRUNCATED", "field": "names"},
        {
            "name": "truncated_in_values",
            "hex": encode("feature_vector", base)[:-5].hex(),
            "code": "TRUNCATED",
            "field": "values",
        },
    ]
    return {
        "valid": valid,
        "invalid": invalid,
        "noncanonical": [{"name": "two_blocks", "hex": two_blocks.hex(), "record": two_blocks_record}],
    }


def predictions() -> dict[str, Any]:
    base = {
        "timestamp": TS,
        "symbol": "BTC-USD",
        "model_type": "lstm",
        "model_version": "a7aff5c4",
        "prediction": {"direction": "UP", "probability": 0.73, "confidence": 0.68},
        "inference_time_ms": 12.0,
    }
    valid = [
        ("design_example", base),
        (
            "transformer_down",
            {
                **base,
                "symbol": "ETH-USD",
                "model_type": "transformer",
                "prediction": {"direction": "DOWN", "probability": 0.0, "confidence": 1.0},
            },
        ),
        (
            "ensemble_flat",
            {
                **base,
                "model_type": "ensemble",
                "prediction": {"direction": "FLAT", "probability": 0.5, "confidence": 0.1},
                "inference_time_ms": 0.125,
            },
        ),
    ]
    good = encode("prediction", base)
    head = zigzag(TS) + avro_str("BTC-USD")
    bad_enum = head + zigzag(3)  # ModelType has 3 symbols
    bad_direction = head + zigzag(0) + avro_str("v") + zigzag(5)
    # probability is the 3rd-last double: patch it to +inf
    inf_prob = bytearray(good)
    inf_prob[-24:-16] = dbl(float("inf"))
    invalid = [
        {
            "name": "model_type_out_of_range",
            "hex": bad_enum.hex(),
            "code": "MALFORMED",
            "field": "model_type",
        },
        {
            "name": "direction_out_of_range",
            "hex": bad_direction.hex(),
            "code": "MALFORMED",
            "field": "prediction.direction",
        },
        {
            "name": "inf_probability",
            "hex": bytes(inf_prob).hex(),
            "code": "NON_FINITE",
            "field": "prediction.probability",
        },
        {
            "name": "truncated_in_inference_time",
            "hex": good[:-1].hex(),
            "code": "TRUNCATED",
            "field": "inference_time_ms",
        },
    ]
    return {"valid": valid, "invalid": invalid}


def write(name: str, cases: dict[str, Any]) -> None:
    parsed = schema(name)
    out: dict[str, Any] = {
        "schema": parsed["name"],
        "version": parsed["version"],
        "generator": "fastavro " + fastavro.__version__,
        "valid": [],
        "invalid": cases["invalid"],
        "noncanonical": cases.get("noncanonical", []),
    }
    for case_name, record in cases["valid"]:
        out["valid"].append({"name": case_name, "record": record, "hex": encode(name, record).hex()})
    # Every non-canonical encoding must still decode in fastavro to its record.
    for case in out["noncanonical"]:
        got = fastavro.schemaless_reader(io.BytesIO(bytes.fromhex(case["hex"])), parsed, parsed)
        assert got["values"] == case["record"]["values"] and got["names"] == case["record"]["names"]
        case["canonical_hex"] = encode(name, case["record"]).hex()
    (HERE / f"{name}.json").write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    write("candle", candles())
    write("feature_vector", feature_vectors())
    write("prediction", predictions())
