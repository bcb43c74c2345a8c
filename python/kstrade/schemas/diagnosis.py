"""Where a bad Avro body broke: the dead letter's code and the field, found by walking the body
against its schema (fastavro only says that it failed)."""

from __future__ import annotations

from typing import Any

from kstrade.codes import DeadLetter


class _Stop(Exception):
    def __init__(self, code: str, field: str) -> None:
        self.code, self.field = code, field


def locate_failure(schema: Any, data: bytes) -> tuple[str, str]:
    """Walks `data` against a parsed schema and returns (code, field path) of the first problem.

    fastavro says *that* a body is bad, not *where*; this runs only on that error path.
    """
    named: dict[str, Any] = {}
    pos = 0

    def need(n: int, field: str) -> None:
        if n < 0:
            raise _Stop(DeadLetter.MALFORMED, field)
        if pos + n > len(data):
            raise _Stop(DeadLetter.TRUNCATED, field)

    def long(field: str) -> int:
        nonlocal pos
        z, shift = 0, 0
        while True:
            need(1, field)
            b = data[pos]
            pos += 1
            z |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return (z >> 1) ^ -(z & 1)
            if shift >= 70:
                raise _Stop(DeadLetter.MALFORMED, field)

    def min_size(s: Any) -> int:
        """The fewest bytes a value of this type takes (0 for null)."""
        if isinstance(s, str) and s in named:
            s = named[s]
        if isinstance(s, list):
            return 1
        t = s if isinstance(s, str) else s["type"]
        if isinstance(t, (dict, list)):
            return min_size(t)
        if t == "null":
            return 0
        if t in ("float", "double"):
            return 4 if t == "float" else 8
        if t == "fixed":
            return int(s["size"])
        if t == "record":
            return sum(min_size(f["type"]) for f in s["fields"])
        return 1

    def walk(s: Any, field: str) -> None:
        nonlocal pos
        if isinstance(s, str) and s in named:
            s = named[s]
        if isinstance(s, list):
            i = long(field)
            if not 0 <= i < len(s):
                raise _Stop(DeadLetter.MALFORMED, field)
            walk(s[i], field)
            return
        t = s if isinstance(s, str) else s["type"]
        if isinstance(s, dict) and "name" in s and t in ("record", "enum", "fixed"):
            named[s["name"]] = s
        if t == "null":
            return
        if t == "boolean":
            need(1, field)
            if data[pos] > 1:
                raise _Stop(DeadLetter.MALFORMED, field)
            pos += 1
        elif t in ("int", "long"):
            long(field)
        elif t in ("float", "double"):
            n = 4 if t == "float" else 8
            need(n, field)
            pos += n
        elif t in ("bytes", "string"):
            n = long(field)
            need(n, field)
            if t == "string":
                try:
                    data[pos : pos + n].decode()
                except UnicodeDecodeError:
                    raise _Stop(DeadLetter.MALFORMED, field) from None
            pos += n
        elif t == "fixed":
            need(s["size"], field)
            pos += s["size"]
        elif t == "enum":
            i = long(field)
            if not 0 <= i < len(s["symbols"]):
                raise _Stop(DeadLetter.MALFORMED, field)
        elif t in ("array", "map"):
            while True:
                count = long(field)
                if count == 0:
                    break
                if count < 0:
                    count = -count
                    long(field)
                # As the native codec: a count the rest of the body cannot hold is a truncation
                # of the array itself (and never a reason to loop 2**40 times).
                item = min_size(s["values"] if t == "map" else s["items"]) + (1 if t == "map" else 0)
                if count * max(item, 1) > len(data) - pos:
                    raise _Stop(DeadLetter.TRUNCATED, field)
                for i in range(count):
                    if t == "map":
                        walk("string", field)
                        walk(s["values"], f"{field}[{i}]")
                    else:
                        walk(s["items"], f"{field}[{i}]")
        elif t == "record":
            for f in s["fields"]:
                walk(f["type"], f"{field}.{f['name']}" if field else f["name"])
        elif isinstance(t, (dict, list)):
            walk(t, field)
        else:
            walk(named.get(t, t), field)

    try:
        walk(schema, "")
    except _Stop as stop:
        return stop.code, stop.field
    except RecursionError:
        return DeadLetter.MALFORMED, ""
    if pos != len(data):
        return DeadLetter.TRAILING_BYTES, ""
    return DeadLetter.MALFORMED, ""


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
