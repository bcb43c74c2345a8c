"""The model manifest: what a shipped ONNX model is, written by `train` beside each model file
and mirrored into its ONNX metadata, read by the inference stage (and, for `model_version` and
`calibration`, by the signals stage). Every check that refuses a model lives here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kstrade.codes import ModelRefusal
from kstrade.config import CalibratorSpec, Settings

MANIFEST_FORMAT: Literal["kstrade.model-manifest/1"] = "kstrade.model-manifest/1"
MANIFEST_FILE = "manifest.json"
#: model_version is this many hex digits of the ONNX file's sha256.
VERSION_DIGITS = 12


class ModelRefused(Exception):
    """A model that must not serve; `code` is stable (alerts and tests key on it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SymbolScaler(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mean: list[float]
    std: list[float]


class Scaler(BaseModel):
    """Standardisation per symbol, fitted on that symbol's training slice: x' = (x - mean) / std."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Literal["standard"] = "standard"
    per_symbol: dict[str, SymbolScaler]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    format: Literal["kstrade.model-manifest/1"] = "kstrade.model-manifest/1"
    model_type: Literal["lstm", "transformer"]
    model_version: str = Field(min_length=VERSION_DIGITS, max_length=VERSION_DIGITS)
    symbols: list[str] = Field(min_length=1)
    file: str
    sha256: str = Field(min_length=64, max_length=64)
    input_name: str
    output_name: str
    classes: list[str]
    window: int = Field(ge=1)
    timeframe: str
    feature_version: str
    feature_names: list[str]
    scaler: Scaler
    label: dict[str, Any]
    calibration: CalibratorSpec
    calibration_fit: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelRefused(ModelRefusal.MANIFEST_UNREADABLE, f"{path}: {exc}") from exc
        try:
            return cls.model_validate(raw)
        except ValueError as exc:
            raise ModelRefused(ModelRefusal.MANIFEST_INVALID, f"{path}: {exc}") from exc

    def write(self, directory: Path) -> None:
        text = json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"
        (directory / MANIFEST_FILE).write_text(text)

    def check_base_interval(self, base_interval: str) -> None:
        """Refuse a model trained on candles of another interval than the pipeline runs on
        (`timeframe`: the base interval of its features), saying which models to use."""
        if self.timeframe != base_interval:
            raise ModelRefused(
                ModelRefusal.FEATURE_NAMES_MISMATCH,
                f"{self.model_type} {self.model_version} was trained on features of {self.timeframe} candles, the "
                f"pipeline runs on {base_interval} candles (base_interval): use models trained on {base_interval} "
                f"(`python -m kstrade train --interval {base_interval}`; the shipped ones are in "
                f"{'models/' if base_interval == '1m' else 'models/' + base_interval + '/'})",
            )

    def check_features(self, feature_version: str, feature_names: tuple[str, ...] | list[str]) -> None:
        """Refuse a model trained on other features than the running FeatureEngine emits,
        naming the first difference."""
        if self.feature_version != feature_version:
            raise ModelRefused(
                ModelRefusal.FEATURE_VERSION_MISMATCH,
                f"{self.model_type} {self.model_version} was trained on features {self.feature_version}, "
                f"the running FeatureEngine emits {feature_version}",
            )
        names = list(feature_names)
        if self.feature_names != names:
            if len(self.feature_names) != len(names):
                detail = f"{len(self.feature_names)} features in the manifest, {len(names)} running"
            else:
                i = next(i for i, (a, b) in enumerate(zip(self.feature_names, names, strict=True)) if a != b)
                detail = f"feature {i} is {self.feature_names[i]!r} in the manifest, {names[i]!r} running"
            raise ModelRefused(ModelRefusal.FEATURE_NAMES_MISMATCH, f"{self.model_type} {self.model_version}: {detail}")
        for symbol, scaler in self.scaler.per_symbol.items():
            if len(scaler.mean) != len(names) or len(scaler.std) != len(names):
                raise ModelRefused(ModelRefusal.SCALER_INVALID, f"scaler of {symbol} does not have {len(names)} values")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_paths(models_dir: Path) -> list[Path]:
    """The manifests of one models directory (lstm/{symbol}/, transformer/), without those of
    the models of another base interval kept inside it (models/1h/ beside the 1m models)."""
    nested = (
        {d for d in models_dir.iterdir() if d.is_dir() and d.name in ("1m", "1h")} if models_dir.is_dir() else set()
    )
    return [p for p in sorted(models_dir.glob("**/" + MANIFEST_FILE)) if not nested & set(p.parents)]


def shipped_manifests(models_dir: Path) -> list[Manifest]:
    """Every model manifest under `models_dir` (lstm/{symbol}/, transformer/), e.g. for the
    signals stage's calibrators by model version."""
    return [Manifest.read(p.parent) for p in manifest_paths(models_dir)]


#: The package's own directory: a relative models_dir that is not here is looked for under it.
_PACKAGE = Path(__file__).resolve().parent.parent


def resolved_models_dir(settings: Settings) -> Path:
    """The models directory the inference stages load from. A relative `inference.models_dir`
    that does not exist here means the models shipped inside the package (kstrade/models, also
    reached as models/ in a checkout), so `run` works from any directory, from a checkout or
    from an installed wheel."""
    configured = settings.inference.models_dir
    if configured.is_absolute() or configured.exists():
        return configured
    shipped = _PACKAGE / configured
    return shipped if shipped.exists() else configured
