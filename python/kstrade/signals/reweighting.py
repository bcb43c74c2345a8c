"""Ensemble weights from realized outcomes: each model is scored on the direction that really
followed its candle, and a model that keeps losing gets less weight (exponential weights on
the log-loss, bounded by the configured weights)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from kstrade.config import OutcomeReweighting
from kstrade.schemas.models import PredictedDirection
from kstrade.signals.ensemble import ClassProbabilities

#: A probability of 0 for what happened would be an infinite loss: clip it.
_MIN_PROBABILITY = 1e-6


def realized_direction(entry: float, later: float, dead_band: float) -> PredictedDirection:
    move = later / entry - 1.0
    if move > dead_band:
        return PredictedDirection.UP
    if move < -dead_band:
        return PredictedDirection.DOWN
    return PredictedDirection.FLAT


def log_loss(probs: ClassProbabilities, realized: PredictedDirection) -> float:
    p = {PredictedDirection.DOWN: probs.down, PredictedDirection.FLAT: probs.flat, PredictedDirection.UP: probs.up}
    return -math.log(max(p[realized], _MIN_PROBABILITY))


class OutcomeWeights:
    """Running log-loss per model and the weights it implies."""

    def __init__(self, configured: Mapping[str, float], settings: OutcomeReweighting) -> None:
        self.configured = dict(configured)
        self.settings = settings
        self._decay = 0.5 ** (1.0 / settings.half_life)
        self.loss: dict[str, float] = {}
        self.outcomes: dict[str, int] = {}
        #: (symbol, candle time) -> (close then, each model's class probabilities)
        self._open: dict[tuple[str, datetime], tuple[float, dict[str, ClassProbabilities]]] = {}

    def predicted(
        self, symbol: str, timestamp: datetime, close: float, votes: Mapping[str, ClassProbabilities]
    ) -> None:
        """A decided candle, to be scored when its horizon's close arrives."""
        self._open[(symbol, timestamp)] = (close, dict(votes))

    def close(self, symbol: str, timestamp: datetime, close: float) -> None:
        """A 1m close: score the candle `horizon` earlier, if it was decided."""
        start = timestamp - timedelta(minutes=self.settings.horizon_minutes)
        opened = self._open.pop((symbol, start), None)
        # Candles whose horizon close never came (a gap) are dropped once they are this old.
        for key in [k for k in self._open if k[0] == symbol and k[1] < start]:
            del self._open[key]
        if opened is None:
            return
        entry, votes = opened
        realized = realized_direction(entry, close, self.settings.dead_band)
        for model, probs in votes.items():
            loss = log_loss(probs, realized)
            previous = self.loss.get(model)
            self.loss[model] = loss if previous is None else self._decay * previous + (1 - self._decay) * loss
            self.outcomes[model] = self.outcomes.get(model, 0) + 1

    def weights(self) -> dict[str, float]:
        """The configured weights, each scaled by exp(-(its loss - the best loss)) once every
        weighted model has `min_outcomes` outcomes; until then the configured weights."""
        live = [m for m, w in self.configured.items() if w > 0]
        if not live or any(self.outcomes.get(m, 0) < self.settings.min_outcomes for m in live):
            return dict(self.configured)
        best = min(self.loss[m] for m in live)
        return {m: (w * math.exp(-(self.loss[m] - best)) if w > 0 else 0.0) for m, w in self.configured.items()}
