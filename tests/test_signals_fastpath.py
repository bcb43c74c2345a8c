"""The signals stage's cheap paths give exactly what the validated paths give:

- `wire.encode_plan` writes the same bytes as `Codec(Signal).encode` of `plan.decision()`, over a
  seeded grid of thousands of decisions (LONG/SHORT, every tier, every FilterReason, placeholder
  levels, NO_PRICE, boosters, sizes, re-weighting), and declines what is not certainly valid;
- `wire.read_signal` (the metrics collector's reader) gives the fields `Codec(Signal).decode`
  gives, and refuses exactly the bodies it refuses (values out of range, corrupted bytes);
- `inputs` accepts a decoded value only when the pydantic model accepts it, with the same fields,
  and reads `origin_ns` only from headers `Codec.decode_record` accepts.

(The market book, the join and `retained()` live in the native core: tests/test_signals_core.py.)
"""

from __future__ import annotations

import io
import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from kstrade.config import BoosterSettings, SignalSettings, TierBands, VolatilityBoosterSettings
from kstrade.schemas import Candle, Codec, FeatureVector, Prediction, Signal
from kstrade.schemas.codec import MessageHeaders, from_micros, to_micros
from kstrade.schemas.models import PredictedDirection, SignalDirection, Tier
from kstrade.signals import FilterReason, Platt, inputs, wire
from kstrade.signals.decision import CandleContext, ModelVote, decide, epoch_ns, plan_signals

T0 = datetime(2026, 1, 5, 12, 0, 17, 123456, tzinfo=UTC)  # not on a minute: every micro counts
CODEC = Codec(Signal)
UP, DOWN, FLAT = PredictedDirection.UP, PredictedDirection.DOWN, PredictedDirection.FLAT


# -- signals.* bodies -----------------------------------------------------------------------------
def _old_bodies(plan: Any) -> tuple[bytes, bytes, bytes]:
    d = plan.decision()
    last = d.final if d.final is not None else d.rejected
    return CODEC.encode(d.raw), CODEC.encode(d.calibrated), CODEC.encode(last)


SETTINGS = [
    SignalSettings(),
    SignalSettings(tiers=TierBands(a=0.5, b=0.45, c=0.38), risk_per_trade=100.0),
    SignalSettings(
        tiers=TierBands(a=0.6, b=0.5, c=0.4),
        tf_alignment=BoosterSettings(enabled=True, max_adjustment=0.1),
        volatility_adaptive=VolatilityBoosterSettings(enabled=True, max_adjustment=0.05),
        blocked_regimes=["low"],
        risk_per_trade=250.0,
        alignment_floor=-1.0,
    ),
    SignalSettings(weights={"lstm": 0.7, "transformer": 0.3, "ensemble": 0.0}, alignment_floor=0.3, ttl_seconds=60),
]


def _contexts(rng: random.Random) -> Any:
    symbols = ["BTC-USD", "ETH-USD", "ÉTH-ü€"]  # UTF-8 longer than its characters
    directions = [UP, DOWN, FLAT]
    for i in itertools.count():
        votes = {}
        for model in ("lstm", "transformer"):
            if rng.random() < 0.9:
                p = rng.choice([0.0, 1.0, 1 / 3, rng.random(), 0.5 + rng.random() / 2])
                votes[model] = ModelVote(
                    model, f"{model}-v{rng.randint(1, 3)}", rng.choice(directions), p, rng.random()
                )
        features: dict[str, float] | None = {
            "5m_atr14": rng.choice([0.01, 0.002, 0.0, -0.01, 1e-18, 0.9, rng.random() / 10]),
            "mtf_alignment": rng.uniform(-1.5, 1.5),
            "vol_regime_low": 0.0,
            "vol_regime_medium": 0.0,
            "vol_regime_high": 0.0,
            "other": rng.random(),
        }
        assert features is not None
        features[rng.choice(["vol_regime_low", "vol_regime_medium", "vol_regime_high"])] = 1.0
        roll = rng.random()
        if roll < 0.08:
            features = None
        elif roll < 0.16:
            del features[rng.choice(["5m_atr14", "mtf_alignment"])]
        close = rng.choice([100.0, 0.0001234, 65432.1, rng.uniform(1, 1000)])
        last = rng.choice([None, close * 0.99])
        if rng.random() < 0.1:
            close, last = None, rng.choice([99.5, 0.5, None])  # NO_PRICE: the last close is the entry (or none)
        t = T0 + timedelta(minutes=i, microseconds=rng.randint(0, 999_999))
        yield CandleContext(rng.choice(symbols), t, votes, features, close, last)


def test_the_written_bodies_equal_the_validated_signals_encoded() -> None:
    assert wire.ENABLED  # the schema is the layout written: the comparison below is not vacuous
    rng = random.Random(20260105)
    calibrators = {"lstm-v2": Platt(0.8, 0.1), "transformer-v3": Platt(1.3, -0.2)}
    seen: Counter[str] = Counter()
    n = 0
    for context in itertools.islice(_contexts(rng), 4000):
        settings = rng.choice(SETTINGS)
        stale = rng.random() < 0.1
        now_ns = epoch_ns(context.timestamp) + (settings.ttl_seconds + 1 if stale else 1) * 10**9
        weights = rng.choice([None, None, {"lstm": rng.random(), "transformer": rng.random()}])
        kwargs: dict[str, Any] = {"now_ns": now_ns, "position_open": rng.random() < 0.15, "weights": weights}
        plan = plan_signals(context, settings, calibrators, **kwargs)
        if plan is None:
            seen["unpriced"] += 1
            assert decide(context, settings, calibrators, **kwargs) is None
            continue
        try:
            old = _old_bodies(plan)
        except ValidationError:
            seen["invalid"] += 1
            assert wire.encode_plan(plan) is None  # declined: the validated path raises as before
            continue
        assert wire.encode_plan(plan) == old
        n += 1
        seen.update(r.value for r in plan.reasons)
        seen["final" if not plan.reasons else "filtered"] += 1
        seen[f"tier {plan.calibrated['tier'].value}"] += 1
        seen[f"raw {plan.raw['direction'].value}"] += 1
        seen[f"calibrated {plan.calibrated['direction'].value}"] += 1
        seen["sized" if plan.calibrated["position_size"] is not None else "unsized"] += 1
        seen.update(f"booster {b}" for b in plan.calibrated["boosters_applied"])
        seen["placeholder" if "atr" not in plan.calibrated["features_snapshot"] else "atr"] += 1
    assert n > 3000
    wanted = {r.value for r in FilterReason} | {f"tier {t.value}" for t in Tier}
    wanted |= {f"{s} {d.value}" for s in ("raw", "calibrated") for d in SignalDirection}
    wanted |= {"final", "filtered", "sized", "unsized", "placeholder", "atr", "unpriced"}
    wanted |= {"booster tf_alignment", "booster volatility_adaptive"}
    assert wanted <= set(seen), wanted - set(seen)


_STORED = ("timestamp", "symbol", "signal_id", "stage", "direction", "confidence", "tier", "entry_price",
           "stop_loss", "take_profit", "position_size")  # fmt: skip


def _decoded(body: bytes) -> dict[str, Any] | None:
    try:
        signal = CODEC.decode(body)
    except Exception:
        return None
    return {k: getattr(signal, k) for k in _STORED}


def _read(body: bytes) -> dict[str, Any] | None:
    try:
        return wire.read_signal(body)
    except Exception:
        return None


def test_a_signal_is_read_cheaply_exactly_as_the_codec_reads_it() -> None:
    import fastavro

    rng = random.Random(20261203)
    calibrators = {"lstm-v2": Platt(0.8, 0.1), "transformer-v3": Platt(1.3, -0.2)}
    parsed = fastavro.parse_schema(CODEC.schema)
    seen: Counter[str] = Counter()
    for context in itertools.islice(_contexts(rng), 1500):
        plan = plan_signals(context, rng.choice(SETTINGS), calibrators, now_ns=epoch_ns(context.timestamp) + 10**9,
                            position_open=False)  # fmt: skip
        if plan is None or (bodies := wire.encode_plan(plan)) is None:
            continue
        for body in bodies:
            assert _read(body) == _decoded(body) is not None
            seen["valid"] += 1
            cut = body[: rng.randrange(len(body))]  # truncated: both refuse
            assert _read(cut) is None and _decoded(cut) is None
            flipped = bytearray(body)  # a corrupted byte: both read the same, or both refuse
            flipped[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            fast, slow = _read(bytes(flipped)), _decoded(bytes(flipped))
            assert fast == slow
            seen["corrupt accepted" if fast is not None else "corrupt refused"] += 1
        # Well-formed Avro whose values `Signal` refuses (or accepts at the edge).
        value = {**CODEC.decode(bodies[1]).model_dump(mode="python")}
        value["timestamp"] = to_micros(value["timestamp"])
        value["signal_id"] = str(value["signal_id"])
        for k in ("stage", "direction", "tier"):
            value[k] = value[k].value if value[k] is not None else None
        field, bad = rng.choice([("confidence", 1.5), ("confidence", 1.0), ("confidence", -0.0),
                                 ("entry_price", -1.0), ("stop_loss", value["take_profit"]), ("symbol", ""),
                                 ("ttl_seconds", 0), ("position_size", -1.0), ("position_size", None),
                                 ("take_profit", math.nan), ("signal_id", "not-a-uuid"),
                                 ("features_snapshot", {"x": math.inf})])  # fmt: skip
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, {**value, field: bad})
        body = out.getvalue()
        fast, slow = _read(body), _decoded(body)
        assert fast == slow
        seen[f"{field} {'accepted' if fast is not None else 'refused'}"] += 1
    assert seen["valid"] > 1000 and seen["corrupt refused"] > 100 and seen["corrupt accepted"] > 100
    assert seen["confidence refused"] and seen["confidence accepted"] and seen["signal_id refused"]


def _plan() -> Any:
    votes = {m: ModelVote(m, f"{m}-v1", UP, 0.9, 0.9) for m in ("lstm", "transformer")}
    context = CandleContext("BTC-USD", T0, votes, {"5m_atr14": 0.01, "mtf_alignment": 0.5}, 100.0, None)
    plan = plan_signals(context, SignalSettings(), {}, now_ns=epoch_ns(T0) + 10**9, position_open=False)
    assert plan is not None and wire.encode_plan(plan) == _old_bodies(plan)
    return plan


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confidence", math.nan),
        ("confidence", 1.5),
        ("entry_price", 100),  # an int: validation would make it a float
        ("stop_loss", math.inf),
        ("take_profit", 90.0),  # on the wrong side of the entry
        ("position_size", -1.0),
        ("symbol", ""),
        ("ttl_seconds", 2**31),
        ("ttl_seconds", True),
        ("timestamp", T0.astimezone(timezone(timedelta(hours=2)))),  # validation converts to UTC
        ("timestamp", T0.replace(tzinfo=None)),
        ("features_snapshot", {"x": math.nan}),
        ("features_snapshot", {"x": 1}),
        ("ensemble_weights", {1: 0.5}),
        ("boosters_applied", [1]),
        ("tier", "A"),  # a str, not the enum member
    ],
)
def test_values_not_certainly_valid_take_the_validated_path(field: str, value: Any) -> None:
    plan = _plan()
    plan.calibrated[field] = value
    assert wire.encode_plan(plan) is None


# -- inputs ---------------------------------------------------------------------------------------
def _candle_value(rng: random.Random) -> dict[str, Any]:
    o, c = rng.uniform(1, 2), rng.uniform(1, 2)
    v: dict[str, Any] = {
        "timestamp": to_micros(T0) + rng.randint(-(10**12), 10**12),
        "symbol": rng.choice(["BTC-USD", "", "x"]),
        "interval": rng.choice(["1m", "5m", "15m", "1h", "2m"]),
        "open": o,
        "high": max(o, c) + rng.choice([0.0, 0.1, -0.01]),
        "low": min(o, c) - rng.choice([0.0, 0.1, -0.01]),
        "close": c,
        "volume": rng.choice([0.0, 3.5, -1.0]),
        "source": rng.choice(["test", ""]),
        "minutes": rng.choice([None, None, None, 1, 1, 4, 60, 61, 0]),
        "origin": rng.choice([None, None, None, None, "TRADES", "REST", "rest"]),
    }
    if rng.random() < 0.2:
        v[rng.choice(["open", "high", "low", "close", "volume"])] = rng.choice([math.nan, math.inf, -math.inf])
    return v


def _model_fields(model: type[Any], value: dict[str, Any]) -> Any:
    try:
        return model.model_validate({**value, "timestamp": from_micros(value["timestamp"])})
    except ValidationError:
        return None


def test_a_candle_is_read_cheaply_only_when_the_model_accepts_it() -> None:
    rng = random.Random(1)
    accepted = 0
    for _ in range(3000):
        value = _candle_value(rng)
        fast = inputs.candle(value)
        model = _model_fields(Candle, value)
        if fast is not None:
            assert model is not None
            assert fast == (model.symbol, model.timestamp, model.interval, model.close)
            accepted += 1
        else:
            assert model is None
    assert 100 < accepted < 2700


def test_a_feature_vector_is_picked_natively_only_when_the_model_accepts_it() -> None:
    """`FeaturePicker` (the signals stage's reader of feature vectors): on bodies fastavro writes
    with any names and values (duplicates, NaN, infinities, lengths that differ, empty symbol or
    version) and on corrupted bytes, it gives the wanted values exactly when `Codec(FeatureVector)`
    decodes the body, and then the very values the model holds."""
    import fastavro

    from kstrade import _native

    codec = Codec(FeatureVector)
    parsed = fastavro.parse_schema(codec.schema)
    wanted = ["c", "a", "zz"]
    picker = _native.FeaturePicker(wanted)
    rng = random.Random(2)
    accepted = 0
    for i in range(3000):
        names = [rng.choice(["a", "b", "c", "d", "e"]) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.5:
            names = list(dict.fromkeys(names))
        if i % 3 == 0:
            names = ["a", "b", "c"]  # a repeated list: the picker reuses the positions it found
        values = [rng.choice([0.5, -2.0, 1e308, math.nan, math.inf]) if rng.random() < 0.1 else rng.random()
                  for _ in range(len(names) + (rng.random() < 0.1))]  # fmt: skip
        value = {"timestamp": to_micros(T0), "symbol": rng.choice(["BTC-USD", "BTC-USD", ""]),
                 "version": rng.choice(["v1", "v1", ""]), "names": names, "values": values}  # fmt: skip
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, value)
        body = out.getvalue()
        if rng.random() < 0.1:  # corrupted: a byte flipped, or cut short, or one too many
            cut = rng.randrange(len(body))
            body = rng.choice([body[:cut] + bytes([body[cut] ^ 0x41]) + body[cut + 1 :], body[:cut], body + b"\x00"])
        try:
            model = codec.decode(body)
        except Exception:
            model = None
        try:
            micros, symbol, picked = picker.read(body)
        except _native.CodecError:
            assert model is None, (value, body)
            continue
        assert isinstance(model, FeatureVector), (value, body)
        assert (symbol, from_micros(micros)) == (model.symbol, model.timestamp)
        assert picked == [model.features.get(n) for n in wanted]
        accepted += 1
    assert 300 < accepted < 2700


def test_a_prediction_is_read_cheaply_only_when_the_model_accepts_it() -> None:
    rng = random.Random(3)
    accepted = 0
    for _ in range(3000):
        value = {
            "timestamp": to_micros(T0),
            "symbol": rng.choice(["BTC-USD", "BTC-USD", ""]),
            "model_type": rng.choice(["lstm", "transformer", "ensemble", "gru"]),
            "model_version": rng.choice(["v1", ""]),
            "prediction": {
                "direction": rng.choice(["UP", "DOWN", "FLAT", "SIDEWAYS"]),
                "probability": rng.choice([rng.random(), 1.0, 0.0, 1.01, -0.1, math.nan]),
                "confidence": rng.choice([rng.random(), rng.random(), math.inf]),
            },
            "inference_time_ms": rng.choice([0.0, 2.5, -1.0, math.nan]),
        }
        fast = inputs.prediction(value)
        model = _model_fields(Prediction, value)
        if fast is not None:
            assert model is not None
            out = model.prediction
            assert fast == (model.symbol, model.timestamp, model.model_type.value, model.model_version,
                            out.direction, out.probability, out.confidence)  # fmt: skip
            assert fast[4] is out.direction
            accepted += 1
        else:
            assert model is None
    assert 100 < accepted < 2900


@dataclass
class _Record:
    headers: list[tuple[str, bytes | None]]
    value: bytes | None = b""
    topic: str = "t"
    partition: int = 0
    offset: int = 0


def test_origin_ns_is_read_only_from_headers_the_full_decode_accepts() -> None:
    codec = Codec(Candle)
    reader = inputs.FastReader(codec)
    good = codec.headers(123, "ingest")
    variants: list[list[tuple[str, bytes | None]]] = [good, list(reversed(good)), good[:4]]
    for i in range(5):  # each required header missing, None, not ASCII, not an integer
        variants += [good[:i] + good[i + 1 :], [(good[i][0], None), *good], [(good[i][0], b"\xff"), *good]]
        variants.append([(good[i][0], b"x"), *good])
    variants += [
        [("schema_version", b"2"), *good],
        [("encoding", b"json"), *good],
        [("origin_ns", b" 77 "), *good],
        [("origin_ns", None), ("origin_ns", b"5"), *good],
        [*good, ("origin_ns", b"9")],
        [("other", b"\xfe"), *good],
    ]
    for headers in variants:
        try:
            h = MessageHeaders.from_kafka(headers)
            expected: int | None = h.origin_ns
            if (h.schema, h.schema_version, h.encoding) != (codec.schema_name, codec.version, codec.encoding):
                expected = None
        except Exception:
            expected = None
        assert reader.origin_ns(_Record(headers)) == expected, headers  # type: ignore[arg-type]
