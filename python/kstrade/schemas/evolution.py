"""Schema evolution rules: a new version of a schema must stay FULL compatible with the
previous released one, because Kafka holds both old and new data (7-day retention, replays)
and producers and consumers upgrade at different times.

- backward: the new schema can read data written with the old one (a consumer upgraded first);
- forward: the old schema can read data written with the new one (a producer upgraded first).

So a field may be added or removed only with a default, a type may change only by Avro's
promotions (int -> long -> float -> double, string <-> bytes), enum symbols may not disappear
unless the reader has a default, and logical types may not change meaning.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_NAMED = ("record", "enum", "fixed")


def _index(schema: Any, names: dict[str, Any], namespace: str = "") -> None:
    """Collects named types so later references by name can be followed."""
    if isinstance(schema, list):
        for s in schema:
            _index(s, names, namespace)
    elif isinstance(schema, dict):
        t = schema.get("type")
        if t in _NAMED:
            ns = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name or not ns else f"{ns}.{name}"
            names[full] = schema
            names[name] = schema
            namespace = ns
        if t == "record":
            for f in schema["fields"]:
                _index(f["type"], names, namespace)
        elif t == "array":
            _index(schema["items"], names, namespace)
        elif t == "map":
            _index(schema["values"], names, namespace)
        elif isinstance(t, (dict, list)):
            _index(t, names, namespace)


def _resolve(s: Any, names: dict[str, Any]) -> Any:
    while isinstance(s, str) and s in names:
        s = names[s]
    if isinstance(s, dict) and isinstance(s.get("type"), (dict, list)):
        return _resolve(s["type"], names)
    return s


def _type(s: Any) -> str:
    if isinstance(s, list):
        return "union"
    return s if isinstance(s, str) else str(s["type"])


def _logical(s: Any) -> str | None:
    return s.get("logicalType") if isinstance(s, dict) else None


def can_read(reader: Any, writer: Any) -> list[str]:
    """Problems that stop `reader` from reading data written with `writer` (empty: it can)."""
    rn: dict[str, Any] = {}
    wn: dict[str, Any] = {}
    _index(reader, rn)
    _index(writer, wn)
    problems: list[str] = []
    _check(reader, writer, rn, wn, "", problems, set())
    return problems


def _check(
    r: Any,
    w: Any,
    rn: dict[str, Any],
    wn: dict[str, Any],
    path: str,
    out: list[str],
    seen: set[tuple[int, int]],
) -> None:
    r, w = _resolve(r, rn), _resolve(w, wn)
    key = (id(r), id(w))
    if key in seen:  # recursive types
        return
    seen.add(key)
    where = path or "<root>"
    rt, wt = _type(r), _type(w)
    if wt == "union":
        for i, branch in enumerate(w):
            _check(r, branch, rn, wn, f"{path}<{_type(_resolve(branch, wn))}>" if path else str(i), out, seen)
        return
    if rt == "union":
        for branch in r:
            trial: list[str] = []
            _check(branch, w, rn, wn, path, trial, set(seen))
            if not trial:
                return
        out.append(f"{where}: no branch of the reader's union reads the writer's {wt}")
        return
    if _logical(r) != _logical(w) and rt == wt:
        out.append(f"{where}: logical type changed from {_logical(w)} to {_logical(r)}")
        return
    if rt != wt:
        if (wt, rt) not in _PROMOTIONS:
            out.append(f"{where}: type changed from {wt} to {rt}")
        return
    if rt == "record":
        wfields = {f["name"]: f for f in w["fields"]}
        for f in w["fields"]:
            for alias in f.get("aliases", []):
                wfields.setdefault(alias, f)
        for f in r["fields"]:
            sub = f"{path}.{f['name']}" if path else f["name"]
            match = wfields.get(f["name"]) or next((wfields[a] for a in f.get("aliases", []) if a in wfields), None)
            if match is None:
                if "default" not in f:
                    out.append(f"{sub}: field missing on one side and has no default")
            else:
                _check(f["type"], match["type"], rn, wn, sub, out, seen)
    elif rt == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            out.append(f"{where}: enum symbol(s) {missing} unknown to the reader and it has no default")
    elif rt == "array":
        _check(r["items"], w["items"], rn, wn, f"{path}[]", out, seen)
    elif rt == "map":
        _check(r["values"], w["values"], rn, wn, f"{path}{{}}", out, seen)
    elif rt == "fixed" and r.get("size") != w.get("size"):
        out.append(f"{where}: fixed size changed from {w.get('size')} to {r.get('size')}")


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """FULL compatibility of `new` with `old`: problems in either direction."""
    return [f"backward (new reads old): {p}" for p in can_read(new, old)] + [
        f"forward (old reads new): {p}" for p in can_read(old, new)
    ]
