"""Where the message schemas come from: the repository's `schemas/` folder (or
`$KSTRADE_SCHEMAS_DIR`), else the copies embedded in the native module; the current version of
each schema and its released versions (`schemas/released/`)."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

import kstrade._native as _native


def schema_dir() -> Path | None:
    """`$KSTRADE_SCHEMAS_DIR`, else the repository's `schemas/` when running from a checkout, else
    None: an installed wheel reads the copies embedded in the native module at build time."""
    env = os.environ.get("KSTRADE_SCHEMAS_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3] / "schemas"
    return repo if repo.is_dir() else None


def _schema_text(relative: str) -> str:
    base = schema_dir()
    if base is None:
        try:
            return _native.SCHEMA_FILES[relative]
        except KeyError:
            raise FileNotFoundError(f"no schema {relative} in this build of kstrade") from None
    if not base.is_dir():
        raise FileNotFoundError(
            f"the message schemas are not at {base}: set KSTRADE_SCHEMAS_DIR to the schemas/ folder"
        )
    return (base / relative).read_text()


@cache
def schema_json(name: str, version: int | None = None) -> dict[str, Any]:
    """The schema `name` (file stem) as JSON: the current one, or a released `version`."""
    relative = f"{name}.avsc" if version is None else f"released/{name}.v{version}.avsc"
    result: dict[str, Any] = json.loads(_schema_text(relative))
    return result


@cache
def released_versions(name: str) -> tuple[int, ...]:
    base = schema_dir()
    names = (
        [p.name for p in (base / "released").glob(f"{name}.v*.avsc")]
        if base is not None
        else [k.removeprefix("released/") for k in _native.SCHEMA_FILES if k.startswith(f"released/{name}.v")]
    )
    out = []
    for file in names:
        suffix = file[len(name) + 2 : -len(".avsc")]
        if suffix.isdigit():
            out.append(int(suffix))
    return tuple(sorted(out))


@cache
def parsed_schema(name: str, version: int | None = None) -> Any:
    """The schema `name` (current, or a released `version`) parsed by fastavro, once."""
    return fastavro.parse_schema(schema_json(name, version))


def full_name(schema: dict[str, Any]) -> str:
    ns = schema.get("namespace")
    return f"{ns}.{schema['name']}" if ns else str(schema["name"])
