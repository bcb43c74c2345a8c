"""`signals.*` bodies written straight from a `SignalPlan`, without building and validating three
pydantic `Signal`s and walking fastavro's writer for each: the same bare Avro bytes that
`Codec(Signal).encode` gives for the validated signals (tests/test_signals_wire.py holds the two
paths equal over thousands of decisions).

`read_signal` goes the other way for the metrics collector, which reads every `signals.*`
record: the fields it stores, checked as `Signal` checks them, without pydantic or fastavro.

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
_unpack_double = struct.Struct("<d").unpack_from
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


class _Cursor:
    """Avro primitives read from one body; any overrun or bad value raises ValueError."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def long(self) -> int:
        data, at = self.data, self.at
        if at < len(data) and (z := data[at]) < 0x80:  # one byte: small counts, lengths, indexes
            self.at = at + 1
            return (z >> 1) ^ -(z & 1)
        shift = z = 0
        while True:
            if at >= len(data):
                raise ValueError("the body ends inside a number")
            b = data[at]
            at += 1
            z |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise ValueError("a number longer than 10 bytes")
        self.at = at
        return (z >> 1) ^ -(z & 1)

    def string(self) -> str:
        n = self.long()
        start, end = self.at, self.at + n
        if n < 0 or end > len(self.data):
            raise ValueError("a string runs past the end of the body")
        self.at = end
        return self.data[start:end].decode()

    def double(self) -> float:
        if self.at + 8 > len(self.data):
            raise ValueError("the body ends inside a double")
        (v,) = _unpack_double(self.data, self.at)
        self.at += 8
        if not _isfinite(v):
            raise ValueError("a double that is not finite")
        return float(v)

    def index(self, options: list[Any]) -> Any:
        i = self.long()
        if not 0 <= i < len(options):
            raise ValueError(f"enum or union index {i} out of range")
        return options[i]

    def skip(self, doubles: bool) -> None:
        """Walk (and check) a map of doubles (`doubles`) or an array of strings: blocks of
        items, a zero count ends it. Keys must be UTF-8 and doubles finite, as the codec checks."""
        while (n := self.long()) != 0:
            if n < 0:  # a negative count is followed by the block's size in bytes
                n = -n
                self.long()
            for _ in range(n):
                self.string()
                if doubles:
                    self.double()


def read_signal(body: bytes) -> dict[str, Any]:
    """The stored fields of a bare Avro `Signal` v1 body (`LAYOUT`): timestamp (aware UTC),
    symbol, signal_id (UUID), stage, direction, confidence, tier (or None), entry_price,
    stop_loss, take_profit and position_size (or None), with every rule `Signal` validates
    checked (maps, boosters and ttl included). Raises ValueError on a body that
    `Codec(Signal).decode` would refuse. Only for v1 bodies while `ENABLED`."""
    r = _Cursor(body)
    timestamp = from_micros(r.long())
    symbol = r.string()
    signal_id = UUID(r.string())
    stage = r.index(_STAGES)
    direction = r.index(_DIRECTIONS)
    confidence = r.double()
    tier = None
    branch = r.long()
    if branch == 1:
        tier = r.index(_TIERS)
    elif branch != 0:
        raise ValueError(f"union index {branch} out of range for tier")
    entry, stop, target = r.double(), r.double(), r.double()
    branch = r.long()
    size = r.double() if branch == 1 else None
    if branch not in (0, 1):
        raise ValueError(f"union index {branch} out of range for position_size")

    r.skip(doubles=True)  # features_snapshot
    r.skip(doubles=True)  # ensemble_weights
    r.skip(doubles=False)  # boosters_applied
    ttl = r.long()
    if r.at != len(body):
        raise ValueError(f"{len(body) - r.at} byte(s) after the record")
    if not symbol:
        raise ValueError("a signal without a symbol")
    if not (0.0 <= confidence <= 1.0 and entry > 0 and stop > 0 and target > 0 and 0 < ttl < 2**31):
        raise ValueError("confidence, a price or ttl_seconds out of range")
    if size is not None and size < 0:
        raise ValueError("a negative position_size")
    if not ((stop < entry < target) if direction is SignalDirection.LONG else (target < entry < stop)):
        raise ValueError(f"{direction.value}: stop_loss / entry_price / take_profit out of order")
    return {
        "timestamp": timestamp, "symbol": symbol, "signal_id": signal_id, "stage": stage, "direction": direction,
        "confidence": confidence, "tier": tier, "entry_price": entry, "stop_loss": stop, "take_profit": target,
        "position_size": size,
    }  # fmt: skip
