"""The effective configuration written as TOML (`config show`): the format config files are
written in, so what it prints can be saved as `kstrade.toml` and loaded back as it is.

TOML has no null: a setting that is not set is written as a comment (`# name = (not set)`), and
so is a redacted secret (`# name = "**********"  (from the environment only)`), since config
files never carry secrets and `load` refuses one that does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from kstrade.redaction import MASK

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    """A value as TOML (strings as basic strings, whose escapes JSON's are a subset of)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _table(name: str, data: Mapping[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if name:
        out.append("")
        out.append(f"[{name}]")
    for k, v in scalars.items():
        if v is None:
            out.append(f"# {_key(k)} = (not set)")
        elif v == MASK:
            out.append(f"# {_key(k)} = {_value(v)}  (a secret: from the environment only)")
        else:
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables.items():
        _table(f"{name}.{_key(k)}" if name else _key(k), v, out)


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """`data` (plain JSON-like values, as `config.redacted` gives) as a TOML document, after the
    comment lines of `header`."""
    out = [f"# {line}" if line else "#" for line in header.splitlines()]
    _table("", data, out)
    return "\n".join(out).lstrip("\n") + "\n"
