"""`signals.*` bodies written straight from a `SignalPlan`, without building and validating three
pydantic `Signal`s and walking fastavro's writer for each: the same bare Avro bytes that
`Codec(Signal).encode` gives for the validated signals (tests/test_signals_wire.py holds the two
paths equal over thousands of decisions).

`read_signal` goes the other way for the metrics collector, which reads every `signals.*`
record: the fields it stores, checked as `Signal` checks them, by the native reader (no
pydantic, no fastavro).

`encode_plan` first checks every value against the rules `Signal` validates; if one is not
certainly valid (or a type is not exactly the one validation would leave) it returns None and the
caller takes the validated path, which raises or converts exactly as before. It also returns None
when `schemas/signal.avsc` is not the layout written here, so a schema change cannot go unseen.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import kstrade._native as _native
from kstrade.schemas.codec import from_micros, schema_json, to_micros
from kstrade.schemas.models import SignalDirection, SignalStage, Tier
from kstrade.signals.decision import SignalPlan

#: The fields of `kstrade.Signal` v1 as this module writes them, in order.
LAYOUT: list[tuple[str, Any]] = [
    ("timestamp", {"type": "long", "logicalType": "timestamp-micros"}),
    ("symbol", "string"),
    ("signal_id", {"type": "string", "logicalType": "uuid"}),
    ("stage", {"type": "enum", "name": "SignalStage", "symbols": ["raw", "calibrated", "filtered", "final"]}),
    ("direction", {"type": "enum", "name": "SignalDirection", "symbols": ["LONG", "SHORT"]}),
    ("confidence", "double"),
    ("tier", ["null", {"type": "enum", "name": "Tier", "symbols": ["A", "B", "C", "D"]}]),
    ("entry_price", "double"),
    ("stop_loss", "double"),
    ("take_profit", "double"),
    ("position_size", ["null", "double"]),
    ("features_snapshot", {"type": "map", "values": "double"}),
    ("ensemble_weights", {"type": "map", "values": "double"}),
    ("boosters_applied", {"type": "array", "items": "string"}),
    ("ttl_seconds", "int"),
]


def _layout_matches() -> bool:
    schema = schema_json("signal")
    if schema.get("name") != "Signal" or schema.get("namespace") != "kstrade" or schema.get("version") != 1:
        return False
    fields = [(f["name"], f["type"]) for f in schema["fields"]]
    return fields == LAYOUT


#: False when the schema is not the layout above: every caller then takes the validated path.
ENABLED = _layout_matches()

_double = struct.Struct("<d").pack
_isfinite = math.isfinite
_STAGE = {s: bytes([2 * i]) for i, s in enumerate(SignalStage)}  # enum index, zigzag varint
_DIRECTION = {d: bytes([2 * i]) for i, d in enumerate(SignalDirection)}
_TIER: dict[Tier | None, bytes] = {
    None: b"\x00",
    **{t: b"\x02" + bytes([2 * i]) for i, t in enumerate(Tier)},
}  # union branch + index


def _long(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint (as fastavro's `write_long`)."""
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: Encoded strings seen before (map keys, booster and model names, symbols): they repeat on
#: every signal. Bounded, in case something feeds it unbounded names.
_STRINGS: dict[str, bytes] = {}
_STRINGS_MAX = 4096


def _string(s: str) -> bytes:
    """Avro string: byte length, then UTF-8 (as fastavro's `write_utf8`)."""
    b = _STRINGS.get(s)
    if b is None:
        raw = s.encode()
        b = _long(len(raw)) + raw
        if len(_STRINGS) >= _STRINGS_MAX:
            _STRINGS.clear()
        _STRINGS[s] = b
    return b


def _map(m: dict[str, float]) -> bytes:
    """Avro map of doubles: one block of len(m) entries, then the empty block (as fastavro)."""
    if not m:
        return b"\x00"
    string, double = _string, _double
    return b"".join([_long(len(m)), *[string(k) + double(v) for k, v in m.items()], b"\x00"])


def _array(items: list[str]) -> bytes:
    if not items:
        return b"\x00"
    return b"".join([_long(len(items)), *map(_string, items), b"\x00"])


# -- the rules `Signal` validates, on values that validation would keep as they are ------------


def _finite(v: Any) -> bool:
    return type(v) is float and _isfinite(v)


_STR = frozenset((str,))
_FLOAT = frozenset((float,))


def _doubles(m: Any) -> bool:
    """A dict[str, float] of finite values (a finite sum: no NaN or infinity among them; an
    overflowing sum only sends the values down the validated path)."""
    if type(m) is not dict:
        return False
    return set(map(type, m)) <= _STR and set(map(type, m.values())) <= _FLOAT and _isfinite(sum(m.values()))


def _valid(f: dict[str, Any]) -> bool:
    """True when `Signal(**f)` validates and keeps each value unchanged (same type, same value)."""
    ts = f["timestamp"]
    direction = f["direction"]
    confidence = f["confidence"]
    tier = f.get("tier")
    entry, sl, tp = f["entry_price"], f["stop_loss"], f["take_profit"]
    size = f.get("position_size")
    ttl = f["ttl_seconds"]
    boosters = f.get("boosters_applied", [])
    if not (
        type(ts) is datetime
        and ts.tzinfo is UTC
        and type(f["symbol"]) is str
        and len(f["symbol"]) >= 1
        and type(f["signal_id"]) is UUID
        and type(f["stage"]) is SignalStage
        and type(direction) is SignalDirection
        and _finite(confidence)
        and 0.0 <= confidence <= 1.0
        and (tier is None or type(tier) is Tier)
        and _finite(entry)
        and entry > 0
        and _finite(sl)
        and sl > 0
        and _finite(tp)
        and tp > 0
        and (size is None or (_finite(size) and size >= 0))
        and _doubles(f.get("features_snapshot", {}))
        and _doubles(f.get("ensemble_weights", {}))
        and type(boosters) is list
        and set(map(type, boosters)) <= _STR
        and type(ttl) is int
        and 0 < ttl < 2**31
    ):
        return False
    if direction is SignalDirection.LONG:
        return bool(sl < entry < tp)
    return bool(tp < entry < sl)


class _Body:
    """A signal's body in parts, so the stage byte and the position size can be swapped."""

    __slots__ = ("head", "mid", "size", "tail")

    def __init__(self, f: dict[str, Any], head: bytes | None = None) -> None:
        """`head`: the encoded timestamp, symbol and signal id, when already known."""
        if head is None:
            head = _long(to_micros(f["timestamp"])) + _string(f["symbol"]) + _string(str(f["signal_id"]))
        self.head = head
        self.mid = b"".join(
            (
                _DIRECTION[f["direction"]],
                _double(f["confidence"]),
                _TIER[f.get("tier")],
                _double(f["entry_price"]),
                _double(f["stop_loss"]),
                _double(f["take_profit"]),
            )
        )
        size = f.get("position_size")
        self.size = b"\x00" if size is None else b"\x02" + _double(size)
        weights = f.get("ensemble_weights", {})
        self.tail = b"".join(
            (
                _map(f.get("features_snapshot", {})),
                _map(weights),
                _array(f.get("boosters_applied", [])),
                _long(f["ttl_seconds"]),
            )
        )

    def encode(self, stage: SignalStage, *, without_size: bool = False) -> bytes:
        return b"".join((self.head, _STAGE[stage], self.mid, b"\x00" if without_size else self.size, self.tail))


def encode_plan(plan: SignalPlan) -> tuple[bytes, bytes, bytes] | None:
    """The bodies of `signals.raw`, `signals.calibrated` and then `signals.filtered` (when the
    plan has reasons) or `signals.final`, as `Codec(Signal).encode` writes the signals of
    `plan.decision()`; None when a value is not certainly valid (take the validated path)."""
    if not ENABLED:
        return None
    try:
        raw, calibrated = plan.raw, plan.calibrated
        if not (_valid(raw) and _valid(calibrated)):
            return None
        c = _Body(calibrated)
        same = all(raw[k] is calibrated[k] for k in ("timestamp", "symbol", "signal_id"))
        r = _Body(raw, c.head if same else None)
        last = c.encode(SignalStage.FILTERED, without_size=True) if plan.reasons else c.encode(SignalStage.FINAL)
        return r.encode(raw["stage"]), c.encode(calibrated["stage"]), last
    except Exception:
        return None


# -- reading: the fields the metrics collector stores ---------------------------------------------

_STAGES = list(SignalStage)
_DIRECTIONS = list(SignalDirection)
_TIERS = list(Tier)


def read_signal(body: bytes) -> dict[str, Any]:
    """The stored fields of a bare Avro `Signal` v1 body (`LAYOUT`): timestamp (aware UTC),
    symbol, signal_id (UUID), stage, direction, confidence, tier (or None), entry_price,
    stop_loss, take_profit and position_size (or None), with every rule `Signal` validates
    checked (maps, boosters and ttl included) by the native reader
    (`kstrade_codec::signal`). Raises ValueError on a body that `Codec(Signal).decode` would
    refuse. Only for v1 bodies while `ENABLED`."""
    ts, symbol, signal_id, stage, direction, confidence, tier, entry, stop, target, size = _native.read_signal_fields(
        body
    )
    return {
        "timestamp": from_micros(ts), "symbol": symbol, "signal_id": UUID(signal_id), "stage": _STAGES[stage],
        "direction": _DIRECTIONS[direction], "confidence": confidence,
        "tier": None if tier is None else _TIERS[tier], "entry_price": entry, "stop_loss": stop,
        "take_profit": target, "position_size": size,
    }  # fmt: skip
