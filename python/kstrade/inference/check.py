"""`python -m kstrade models check [DIR]`: every model of a models directory put through the
checks the inference stage runs at start-up (`LoadedModel.load`: manifest, feature version and
names against the running engine on the models' base interval, sha256, ONNX load, shapes, the
reference outputs), plus the layout the stages look for (lstm/{symbol}/, transformer/). Without
DIR: the shipped models, 1m (models/) and 1h (models/1h/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kstrade.features import BASE_INTERVAL_MS
from kstrade.inference.manifest import MANIFEST_FILE, Manifest, ModelRefused, manifest_paths
from kstrade.inference.runtime import LoadedModel

#: The models that ship inside the package (also reached as models/ in a checkout).
SHIPPED = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelCheck:
    """One model directory's verdict: `line` says what was checked, or what failed and why."""

    directory: Path
    ok: bool
    line: str


def _data_kind(manifest: Manifest) -> str:
    kind = manifest.data.get("kind")
    return str(kind) if kind else "SYNTHETIC" if manifest.data.get("synthetic", True) else "REAL"


def check_model(directory: Path, base_interval: str, where: str) -> ModelCheck:
    """`LoadedModel.load` of one directory, and its place in the layout."""
    try:
        model = LoadedModel.load(directory, base_interval=base_interval)
    except ModelRefused as exc:
        return ModelCheck(directory, False, f"FAIL {where}: {exc.code}: {exc.message}")
    except Exception as exc:  # what a broken file raises besides: named, never a traceback
        return ModelCheck(directory, False, f"FAIL {where}: {type(exc).__name__}: {exc}")
    m = model.manifest
    expected = "transformer" if m.model_type == "transformer" else f"lstm/{m.symbols[0]}"
    if m.model_type == "lstm" and len(m.symbols) != 1:
        return ModelCheck(directory, False, f"FAIL {where}: an LSTM serves one symbol, this one {m.symbols}")
    if where != expected:
        return ModelCheck(directory, False, f"FAIL {where}: a {m.model_type} of {m.symbols} belongs in {expected}/")
    line = (
        f"ok   {where}: {m.model_type} {m.model_version} on {m.timeframe} candles ({_data_kind(m)} data), "
        f"{', '.join(m.symbols)}; features {m.feature_version} ({len(m.feature_names)}) match the engine; "
        f"ONNX loads and reproduces its reference outputs (max error {model.reference_max_error:.1e})"
    )
    return ModelCheck(directory, True, line)


def _base_of(directory: Path, paths: list[Path]) -> str:
    """The base interval the manifests say (`timeframe`), the same for every model of a directory."""
    bases = set()
    for path in paths:
        try:
            bases.add(Manifest.read(path.parent).timeframe)
        except ModelRefused:
            continue  # reported by its own check
    if len(bases) > 1:
        raise ValueError(f"{directory} mixes models of {', '.join(sorted(bases))} candles: give each its directory")
    return bases.pop() if bases else "1m"


def check_models_dir(directory: Path | None = None, base_interval: str | None = None) -> list[ModelCheck]:
    """Every model of `directory` (None: the shipped 1m and 1h models) checked on `base_interval`
    (None: the manifests' own). An empty or incomplete directory is a failed check, not a pass."""
    if directory is None:
        return [c for d in (SHIPPED, SHIPPED / "1h") for c in check_models_dir(d, base_interval)]
    if not directory.is_dir():
        return [ModelCheck(directory, False, f"FAIL {directory}: no such directory")]
    paths = manifest_paths(directory)
    try:
        base = base_interval or _base_of(directory, paths)
    except ValueError as exc:
        return [ModelCheck(directory, False, f"FAIL {exc}")]
    if base not in BASE_INTERVAL_MS:
        return [ModelCheck(directory, False, f"FAIL {directory}: base interval {base}: use one of 1m, 1h")]
    out = [ModelCheck(directory, True, f"{directory} (base interval {base}):")]
    for path in paths:
        out.append(check_model(path.parent, base, path.parent.relative_to(directory).as_posix()))
    if not (directory / "transformer" / MANIFEST_FILE).is_file():
        out.append(
            ModelCheck(directory, False, f"FAIL transformer/: no {MANIFEST_FILE} (the Transformer stage needs one)")
        )
    if not any(p.parent.parent.name == "lstm" for p in paths):
        out.append(ModelCheck(directory, False, f"FAIL lstm/: no lstm/{{symbol}}/{MANIFEST_FILE} (one per symbol)"))
    return out


def report(checks: list[ModelCheck]) -> str:
    failed = sum(not c.ok for c in checks)
    models = sum(c.line.startswith("ok ") for c in checks)
    verdict = f"all {models} model(s) pass" if not failed else f"{failed} check(s) failed, {models} model(s) pass"
    return "\n".join(c.line for c in checks) + f"\n{verdict}"
