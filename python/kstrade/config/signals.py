"""`[signals]`: the signal aggregator's ensemble weights, calibration, boosters, tiers and filters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from kstrade.config.base import _Section


class TierBands(_Section):
    """Lower bounds of calibrated confidence for tiers A, B and C; below C is D (never traded)."""

    a: float = Field(0.70, gt=0, lt=1)
    b: float = Field(0.60, gt=0, lt=1)
    c: float = Field(0.55, gt=0, lt=1)

    @model_validator(mode="after")
    def _descending(self) -> TierBands:
        if not self.a > self.b > self.c:
            raise ValueError(f"tier bands must descend: a {self.a} > b {self.b} > c {self.c}")
        return self


class BoosterSettings(_Section):
    """One FREE booster. Off by default: none has shown on held-out data that it keeps calibration."""

    enabled: bool = False
    #: The most the booster may move confidence, either way (bounded so no booster can make a tier).
    max_adjustment: float = Field(0.05, ge=0, le=0.10)


class VolatilityBoosterSettings(BoosterSettings):
    #: SL/TP multiples are scaled by this in the high-volatility regime (1 = unchanged).
    high_volatility_sl_tp_scale: float = Field(1.25, ge=1, le=2)


class CalibratorSpec(_Section):
    """A fitted calibrator as plain data, as a model manifest stores it (issue 5 writes these).

    platt: p' = sigmoid(a * logit(p) + b); isotonic: piecewise linear through (x[i], y[i]),
    x increasing, y non-decreasing, clipped at the ends.
    """

    method: Literal["platt", "isotonic"]
    a: float | None = None
    b: float | None = None
    x: list[float] | None = None
    y: list[float] | None = None

    @model_validator(mode="after")
    def _complete(self) -> CalibratorSpec:
        if self.method == "platt":
            if self.a is None or self.b is None:
                raise ValueError("platt calibration needs a and b")
        else:
            if self.x is None or self.y is None or len(self.x) != len(self.y) or len(self.x) < 2:
                raise ValueError("isotonic calibration needs x and y of the same length (>= 2)")
            if any(x1 <= x0 for x0, x1 in zip(self.x, self.x[1:], strict=False)):
                raise ValueError("isotonic x must be strictly increasing")
            if any(y1 < y0 for y0, y1 in zip(self.y, self.y[1:], strict=False)):
                raise ValueError("isotonic y must be non-decreasing")
            if not all(0 <= v <= 1 for v in self.y):
                raise ValueError("isotonic y must lie in [0, 1]")
        return self


class OutcomeReweighting(_Section):
    """Ensemble weights re-weighted from realized outcomes (off by default): each model's
    exponentially weighted log-loss on the realized direction scales its configured weight by
    exp(-(its loss - the best model's loss)). The label must match the models' (issue 5)."""

    enabled: bool = False
    #: The realized direction: close `horizon_minutes` later vs the candle's close, FLAT within
    #: +-dead_band (a fraction of the price).
    horizon_minutes: int = Field(5, ge=1, le=1440)
    dead_band: float = Field(0.0005, ge=0, lt=0.1)
    #: Outcomes after which an outcome's weight in the running loss has halved.
    half_life: float = Field(500.0, gt=0)
    #: Outcomes per model before its weight moves at all.
    min_outcomes: int = Field(100, ge=1)


class SignalSettings(_Section):
    """The signal aggregator: ensemble weights, join deadline, calibration, boosters, tiers,
    filters and the levels of the final signal."""

    #: Weight per model type. Types absent here (or weighted 0) drop out of the ensemble; the
    #: join waits for every type weighted > 0.
    weights: dict[str, float] = Field(default_factory=lambda: {"lstm": 0.5, "transformer": 0.5})
    reweighting: OutcomeReweighting = Field(default_factory=lambda: OutcomeReweighting())
    #: How long to wait, from the first prediction of a candle, for the other models.
    join_deadline_ms: int = Field(2000, ge=0, le=60_000)
    #: Calibrators by model version (from the manifests). A version without one uses the
    #: prediction's own calibrated `confidence`.
    calibrators: dict[str, CalibratorSpec] = Field(default_factory=dict)
    tiers: TierBands = Field(default_factory=lambda: TierBands())
    tf_alignment: BoosterSettings = Field(default_factory=lambda: BoosterSettings())
    volatility_adaptive: VolatilityBoosterSettings = Field(default_factory=lambda: VolatilityBoosterSettings())
    #: Feature names read from `features.aggregated.{symbol}` (the features stage's names).
    atr_feature: str = "5m_atr14"
    alignment_feature: str = "mtf_alignment"
    regime_features: dict[str, str] = Field(
        default_factory=lambda: {"low": "vol_regime_low", "medium": "vol_regime_medium", "high": "vol_regime_high"}
    )
    #: Stop loss and take profit distances in ATRs from the entry.
    stop_loss_atr: float = Field(1.5, gt=0, le=20)
    take_profit_atr: float = Field(2.5, gt=0, le=40)
    #: A signal expires this long after its candle time (and is stale if decided later).
    ttl_seconds: int = Field(300, gt=0, lt=2**31)
    #: Reject when the timeframes' alignment with the signal's direction is below this (-1: off).
    alignment_floor: float = Field(0.0, ge=-1, le=1)
    #: Volatility regimes in which no signal is traded.
    blocked_regimes: list[Literal["low", "medium", "high"]] = Field(default_factory=list)
    one_position_per_symbol: bool = True
    #: Quote currency risked per trade for the suggested size (size = risk x tier scale / stop
    #: distance); None leaves position_size null for the execution engine to size.
    risk_per_trade: float | None = Field(None, gt=0)
    tier_size_scale: dict[str, float] = Field(default_factory=lambda: {"A": 1.0, "B": 0.6, "C": 0.3})

    # Field validators (not one model validator) so every bad key is reported at once.
    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not w >= 0 for w in value.values()):
            raise ValueError("weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one model type needs a weight > 0")
        return value

    @field_validator("regime_features")
    @classmethod
    def _regimes(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) - {"low", "medium", "high"}:
            raise ValueError("regime_features keys are low, medium and high")
        return value

    @field_validator("tier_size_scale")
    @classmethod
    def _tier_scale(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) - {"A", "B", "C"} or any(not v >= 0 for v in value.values()):
            raise ValueError("keys A, B, C with values >= 0 (D is never traded)")
        return value
