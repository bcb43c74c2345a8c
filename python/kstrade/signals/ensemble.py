"""The ensemble: each model's prediction as class probabilities (DOWN, FLAT, UP), averaged with
the configured weights, renormalized over the models that actually answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kstrade.schemas.models import PredictedDirection, SignalDirection


@dataclass(frozen=True, slots=True)
class ClassProbabilities:
    """P(DOWN), P(FLAT), P(UP) for one candle: non-negative, summing to 1."""

    down: float
    flat: float
    up: float

    @classmethod
    def from_prediction(cls, direction: PredictedDirection, probability: float) -> ClassProbabilities:
        """A prediction carries only its winning class and that class's probability; the rest
        of the mass is shared equally by the two other classes (the least informed split)."""
        p = min(max(probability, 0.0), 1.0)
        rest = (1.0 - p) / 2.0
        if direction is PredictedDirection.UP:
            return cls(rest, rest, p)
        if direction is PredictedDirection.DOWN:
            return cls(p, rest, rest)
        return cls(rest, p, rest)

    def normalized(self) -> ClassProbabilities:
        total = self.down + self.flat + self.up
        if total <= 0:
            return ClassProbabilities(1 / 3, 1 / 3, 1 / 3)
        return ClassProbabilities(self.down / total, self.flat / total, self.up / total)

    @property
    def leaning(self) -> SignalDirection:
        """The tradeable side with more mass (a tie goes LONG, deterministically)."""
        return SignalDirection.SHORT if self.down > self.up else SignalDirection.LONG

    @property
    def is_flat(self) -> bool:
        """FLAT is the most likely class: the ensemble says there is no move to trade."""
        return self.flat > max(self.down, self.up)

    def of(self, direction: SignalDirection) -> float:
        return self.up if direction is SignalDirection.LONG else self.down

    def with_side(self, direction: SignalDirection, probability: float) -> ClassProbabilities:
        """Set P(direction) and rescale the other two classes to keep the sum at 1."""
        p = min(max(probability, 0.0), 1.0)
        side = self.of(direction)
        others = 1.0 - side
        if direction is SignalDirection.LONG:
            a, b = self.down, self.flat
        else:
            a, b = self.flat, self.up
        if others > 0:
            a, b = a * (1.0 - p) / others, b * (1.0 - p) / others
        else:
            a = b = (1.0 - p) / 2.0
        if direction is SignalDirection.LONG:
            return ClassProbabilities(a, b, p)
        return ClassProbabilities(p, a, b)


def ensemble_weights(configured: Mapping[str, float], present: set[str]) -> dict[str, float]:
    """Weights of every configured model type, renormalized over those present; a configured
    type that did not answer keeps a 0.0 entry so the signal records it as missing. Unknown
    types (not configured, or weighted 0) drop out."""
    live = {m: w for m, w in configured.items() if w > 0 and m in present}
    total = sum(live.values())
    return {m: (live[m] / total if m in live and total > 0 else 0.0) for m in sorted(configured) if configured[m] > 0}


def blend(members: Mapping[str, ClassProbabilities], weights: Mapping[str, float]) -> ClassProbabilities:
    """Weighted average of class probabilities; models without weight are ignored."""
    down = flat = up = 0.0
    for model, probs in members.items():
        w = weights.get(model, 0.0)
        down += w * probs.down
        flat += w * probs.flat
        up += w * probs.up
    return ClassProbabilities(down, flat, up).normalized()
