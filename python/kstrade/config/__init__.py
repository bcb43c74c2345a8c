"""The one config loader: a TOML file, then `KSTRADE_*` environment variables, then CLI flags.

Every section rejects unknown keys and all fields are validated at once, so a broken config
fails at start-up with one message that names every bad key. Secrets (e.g. the Kafka SASL
password) come only from the environment or from a file named by `*_file`, never from the TOML
file, and are redacted whenever the config is printed: by one rule on the name
(`kstrade.redaction`), so a librdkafka property such as `ssl.key.pem` is masked without a list.

    KSTRADE_BUS__TRANSPORT=kafka KSTRADE_BUS__BOOTSTRAP=10.0.0.5:9092 python -m kstrade config show

The package holds one module per stage's settings (`bus`, `ingest`, `features`, `inference`,
`signals`, `execution`, `metrics`, `service`, `pipeline`); this root holds the top `Settings`,
the base interval's defaults, and loading (discovery, TOML, environment, flags). Every public
name of the section modules is re-exported here, so `from kstrade.config import SignalSettings`
works as it always has.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from kstrade.config.base import ConfigError
from kstrade.config.bus import BusSettings
from kstrade.config.execution import GUARDRAIL_PRESETS, ExecutionSettings, GuardrailSettings, SymbolSettings
from kstrade.config.features import FeatureSettings
from kstrade.config.inference import InferenceSettings
from kstrade.config.ingest import CoinbaseSettings, IngestSettings
from kstrade.config.metrics import MetricsSettings, SignalStageName, TelegramSettings
from kstrade.config.pipeline import PipelineSettings
from kstrade.config.service import ServiceSettings
from kstrade.config.signals import (
    BoosterSettings,
    CalibratorSpec,
    OutcomeReweighting,
    SignalSettings,
    TierBands,
    VolatilityBoosterSettings,
)
from kstrade.redaction import is_secret_name, mask_tree
from kstrade.symbols import DEFAULT_SYMBOLS, check_symbol

#: The TOML file `load` is reading, for the settings source that sits under the environment.
_TOML_FILE: ContextVar[Path | None] = ContextVar("kstrade_toml_file", default=None)


#: The candle interval the pipeline runs on, and the timeframes the features are built on
#: above it (`kstrade._native.FeatureEngine.timeframes`).
BASE_INTERVALS: dict[str, tuple[str, str, str, str]] = {"1m": ("1m", "5m", "15m", "1h"), "1h": ("1h", "4h", "8h", "1d")}
#: What follows the base interval, where the user did not set it: the defaults above are the 1m
#: base's. Scaled by bars, as on 1m: the ATR of the next timeframe up, a signal living 5 bars, the
#: outcome horizon of 5 bars the models are trained on, Sharpe on the base's bars, performance
#: over a day and a week, an ingest stall after 3 missing bars, and the models trained on 1h.
BASE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "1h": {
        "signals": {"atr_feature": "4h_atr14", "ttl_seconds": 5 * 3600},
        "signals.reweighting": {"horizon_minutes": 5 * 60},
        "metrics": {"bar_seconds": 3600, "performance_windows_s": [86_400, 7 * 86_400], "ingest_stall_s": 3 * 3600.0},
        "inference": {"models_dir": Path("models/1h")},
    }
}


def _base_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """`BASE_DEFAULTS` of the data's base interval under what the data sets (sections that
    arrive as models, not tables, are left as they are)."""
    defaults = BASE_DEFAULTS.get(str(data.get("base_interval", "1m")), {})
    out = dict(data)
    for path, values in defaults.items():
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            child = node.get(key, {})
            if not isinstance(child, dict):
                break
            node[key] = node = dict(child)
        else:
            section = node.get(leaf, {})
            if isinstance(section, dict):
                node[leaf] = {**values, **section}
    return out


class Settings(BaseSettings):
    """Everything configurable, one section per concern; stages add their sections here."""

    model_config = SettingsConfigDict(
        env_prefix="KSTRADE_", env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    symbols: list[str] = Field(default_factory=lambda: list(DEFAULT_SYMBOLS))
    #: The interval of the candles the pipeline runs on: 1m (5m, 15m, 1h above it) or 1h (4h,
    #: 8h, 1d above it; the models trained on 1h, `BASE_DEFAULTS`). Every stage reads
    #: `market.candles.{symbol}.{base_interval}`.
    base_interval: Literal["1m", "1h"] = "1m"
    bus: BusSettings = Field(default_factory=lambda: BusSettings())
    execution: ExecutionSettings = Field(default_factory=lambda: ExecutionSettings())
    signals: SignalSettings = Field(default_factory=lambda: SignalSettings())
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings())
    ingest: IngestSettings = Field(default_factory=lambda: IngestSettings())
    features: FeatureSettings = Field(default_factory=lambda: FeatureSettings())
    inference: InferenceSettings = Field(default_factory=lambda: InferenceSettings())
    service: ServiceSettings = Field(default_factory=lambda: ServiceSettings())
    pipeline: PipelineSettings = Field(default_factory=lambda: PipelineSettings())

    @model_validator(mode="before")
    @classmethod
    def _follow_base_interval(cls, data: Any) -> Any:
        return _base_defaults(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _bars_of_the_base(self) -> Settings:
        base_seconds = 60 if self.base_interval == "1m" else 3600
        if self.metrics.bar_seconds % base_seconds:
            raise ValueError(
                f"metrics.bar_seconds {self.metrics.bar_seconds} is not a whole number of {self.base_interval} "
                f"bars (base_interval): use {base_seconds} or a multiple"
            )
        return self

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one symbol is needed")
        for s in value:
            check_symbol(s)  # a symbol is part of topic names
        if len(set(value)) != len(value):
            raise ValueError("symbols repeat")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI flags (init) win over the environment, which wins over the TOML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _without_none(flags: dict[str, Any]) -> dict[str, Any]:
    """CLI flags left unset arrive as None, at any depth: they must not override anything."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = _without_none(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


#: The environment variable naming the config file, and the file looked for in the working
#: directory when neither it nor --config names one.
CONFIG_ENV = "KSTRADE_CONFIG"
CONFIG_FILE = "kstrade.toml"


def discover(explicit: Path | str | None = None) -> Path | None:
    """The config file a command reads: `explicit` (--config), else the file $KSTRADE_CONFIG
    names, else ./kstrade.toml where there is one, else None (defaults and KSTRADE_*
    variables only). A file named but missing is an error, not a silent default."""
    if explicit is not None:
        return Path(explicit)
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV} names {named}, which is not a file")
        return path
    local = Path(CONFIG_FILE)
    return local if local.is_file() else None


def load(path: Path | str | None = None, **flags: Any) -> Settings:
    """Load and validate. `flags` are CLI values as nested dicts (None values are ignored)."""
    if path is not None:
        try:
            from_file = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        for secret in ("sasl_password", "schema_registry_password"):
            if secret in from_file.get("bus", {}):
                raise ConfigError(f"bus.{secret}: secrets are not read from config files; use the environment")
        if "bot_token" in from_file.get("metrics", {}).get("telegram", {}):
            raise ConfigError("metrics.telegram.bot_token: secrets are not read from config files; use the environment")
        if "jwt" in from_file.get("ingest", {}).get("coinbase", {}):
            raise ConfigError("ingest.coinbase.jwt: secrets are not read from config files; use the environment")
        if "mt5_password" in from_file.get("execution", {}):
            raise ConfigError("execution.mt5_password: secrets are not read from config files; use the environment")
        for key in from_file.get("bus", {}).get("properties", {}):
            if is_secret_name(key):
                raise ConfigError(
                    f"bus.properties.{key}: secrets are not read from config files; use the environment "
                    "(KSTRADE_BUS__PROPERTIES) or the property's file form (e.g. ssl.key.location)"
                )
    clean_flags = _coinbase_urls(_without_none(flags))
    token = _TOML_FILE.set(Path(path) if path is not None else None)
    try:
        return Settings(**clean_flags)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(root)"
            lines.append(f"  {key}: {e['msg']}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except SettingsError as exc:  # a KSTRADE_* variable of a table or list that is not JSON
        raise ConfigError(_env_json_error(exc)) from None
    finally:
        _TOML_FILE.reset(token)


def _env_json_error(exc: SettingsError) -> str:
    """Which environment variable is not JSON, and why, in one line (never its value: it may
    hold a secret). pydantic-settings names only the top-level field ("bus")."""
    import json
    import os

    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = f"KSTRADE_{field.group(1)}".upper() if field else "KSTRADE_"
    for name in sorted(os.environ):
        upper = name.upper()
        if upper != prefix and not upper.startswith(prefix + "__"):
            continue
        try:
            json.loads(os.environ[name])
        except ValueError as err:
            if upper == prefix or os.environ[name].lstrip()[:1] in "[{":
                return f"{name} is not valid JSON ({err}): tables and lists are JSON in the environment"
    return f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc)


def _coinbase_urls(flags: dict[str, Any]) -> dict[str, Any]:
    """KSTRADE_COINBASE_WS_URL / KSTRADE_COINBASE_REST_URL: the documented short names of
    ingest.coinbase.ws_url / rest_url (CLI flags still win)."""
    import os

    short = {
        "ws_url": os.environ.get("KSTRADE_COINBASE_WS_URL"),
        "rest_url": os.environ.get("KSTRADE_COINBASE_REST_URL"),
    }
    short = {k: v for k, v in short.items() if v}
    if not short:
        return flags
    ingest = dict(flags.get("ingest") or {})
    coinbase = dict(ingest.get("coinbase") or {})
    for key, value in short.items():
        coinbase.setdefault(key, value)
    ingest["coinbase"] = coinbase
    return {**flags, "ingest": ingest}


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, with every secret shown as '**********': the SecretStr
    fields, and every other value whose name the redaction rule calls secret (bus properties)."""
    data: dict[str, Any] = mask_tree(settings.model_dump(mode="json"))  # SecretStr dumps masked already
    return data


__all__ = [
    "BASE_DEFAULTS",
    "BASE_INTERVALS",
    "CONFIG_ENV",
    "CONFIG_FILE",
    "GUARDRAIL_PRESETS",
    "BoosterSettings",
    "BusSettings",
    "CalibratorSpec",
    "CoinbaseSettings",
    "ConfigError",
    "ExecutionSettings",
    "FeatureSettings",
    "GuardrailSettings",
    "InferenceSettings",
    "IngestSettings",
    "MetricsSettings",
    "OutcomeReweighting",
    "PipelineSettings",
    "ServiceSettings",
    "Settings",
    "SignalSettings",
    "SignalStageName",
    "SymbolSettings",
    "TelegramSettings",
    "TierBands",
    "VolatilityBoosterSettings",
    "discover",
    "load",
    "redacted",
]
