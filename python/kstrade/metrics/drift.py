"""Model drift: PSI of each live feature against its training reference, rolling directional
accuracy against what the market then did, and a Page-Hinkley test on the error stream."""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: PSI bands used across the industry: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 significant.
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.2
#: c(alpha) of the one-sample Kolmogorov-Smirnov test at alpha = 1 %: D > 1.628 / sqrt(n).
KS_C_ALPHA_1PCT = 1.628
#: An empty bin would make PSI infinite; it counts as this share instead.
PSI_FLOOR = 1e-4


class FeatureReference(BaseModel):
    """One feature's training distribution: `edges` are the k-1 inner cut points (ascending) of
    k bins, the outer bins open-ended; `proportions` the training share of each bin (sum 1).
    A value equal to an edge falls in the bin above it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    edges: list[float] = Field(min_length=1)
    proportions: list[float]

    @model_validator(mode="after")
    def _shape(self) -> FeatureReference:
        if len(self.proportions) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} proportions")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly ascending")
        if any(p < 0 for p in self.proportions) or abs(sum(self.proportions) - 1.0) > 1e-6:
            raise ValueError("proportions must be >= 0 and sum to 1")
        return self

    @classmethod
    def from_sample(cls, values: list[float], bins: int = 10) -> FeatureReference:
        """Quantile bins of a training sample: what a model manifest would store."""
        ordered = sorted(values)
        edges: list[float] = []
        for i in range(1, bins):
            edge = ordered[min(len(ordered) - 1, i * len(ordered) // bins)]
            if not edges or edge > edges[-1]:
                edges.append(edge)
        counts = [0] * (len(edges) + 1)
        for v in ordered:
            counts[bisect.bisect_right(edges, v)] += 1
        return cls(edges=edges, proportions=[c / len(ordered) for c in counts])


class DriftReference(BaseModel):
    """The manifest section the drift monitor reads: per-feature references of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_type: str = "ensemble"
    model_version: str = "unknown"
    features: dict[str, FeatureReference]


def psi(expected: list[float], actual: list[float]) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, PSI_FLOOR), max(a, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


class FeatureWindow:
    """The bin of each of the last `size` values of one feature; counts kept incrementally so an
    observation is one binary search and the PSI costs O(bins)."""

    __slots__ = ("counts", "reference", "window")

    def __init__(self, reference: FeatureReference, size: int) -> None:
        self.reference = reference
        self.window: deque[int] = deque(maxlen=size)
        self.counts = [0] * len(reference.proportions)

    def observe(self, value: float) -> None:
        if len(self.window) == self.window.maxlen:
            self.counts[self.window[0]] -= 1
        b = bisect.bisect_right(self.reference.edges, value)
        self.window.append(b)
        self.counts[b] += 1

    def psi(self) -> float:
        n = len(self.window)
        return psi(self.reference.proportions, [c / n for c in self.counts]) if n else 0.0

    def ks(self) -> float:
        """Kolmogorov-Smirnov distance measured at the bin edges: the largest gap between the
        reference's and the window's cumulative shares (a lower bound of the continuous one)."""
        n = len(self.window)
        if not n:
            return 0.0
        gap = expected = actual = 0.0
        for e, c in zip(self.reference.proportions[:-1], self.counts[:-1], strict=True):
            expected += e
            actual += c / n
            gap = max(gap, abs(expected - actual))
        return gap


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    symbol: str
    feature: str
    psi: float
    samples: int
    significant: bool
    ks: float = 0.0

    @property
    def ks_critical(self) -> float:
        """The KS distance a sample of this size exceeds by chance 1 % of the time."""
        return KS_C_ALPHA_1PCT / math.sqrt(self.samples)


class PsiMonitor:
    """A window per (symbol, feature) against the feature's reference. Features the reference
    does not know are ignored; a window judges only once it holds `min_samples` values."""

    def __init__(self, reference: DriftReference, *, window: int = 500, min_samples: int = 200) -> None:
        self.reference = reference
        self.size = window
        self.min_samples = min_samples
        self.windows: dict[tuple[str, str], FeatureWindow] = {}

    def observe(self, symbol: str, names: list[str], values: list[float]) -> None:
        refs = self.reference.features
        for name, value in zip(names, values, strict=True):
            ref = refs.get(name)
            if ref is None:
                continue
            w = self.windows.get((symbol, name))
            if w is None:
                w = self.windows[(symbol, name)] = FeatureWindow(ref, self.size)
            w.observe(value)

    def report(self) -> list[FeatureDrift]:
        out = []
        for (symbol, name), w in sorted(self.windows.items()):
            n = len(w.window)
            if n >= self.min_samples:
                value = w.psi()
                out.append(FeatureDrift(symbol, name, value, n, value >= PSI_SIGNIFICANT, w.ks()))
        return out


class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a stream (here: the error rate).

    m_t = sum(x_i - mean_i - delta); alarm when m_t - min(m) > threshold, then start afresh.
    Defaults (delta 0.01, threshold 50) suit a 0/1 error stream: a rise of the error rate by
    0.2 is caught after ~260 predictions, while a stable coin-flip stream crosses the threshold
    with probability ~exp(-2*delta*threshold/0.25) ~ 2 % over an unbounded run.
    """

    def __init__(self, *, delta: float = 0.01, threshold: float = 50.0, min_samples: int = 30) -> None:
        self.delta = delta
        self.threshold = threshold
        self.min_samples = min_samples
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.cumulative = 0.0
        self.minimum = 0.0

    @property
    def statistic(self) -> float:
        return self.cumulative - self.minimum

    def update(self, x: float) -> bool:
        """Adds one observation; True when a change is detected (the test then restarts)."""
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.cumulative += x - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        if self.n >= self.min_samples and self.statistic > self.threshold:
            self.reset()
            return True
        return False


#: Bars of closes kept, and how long a prediction waits for its outcome candle: a day of 1m bars
#: covers topics read far apart (a collector catching up) at a few kB per symbol.
_KEEP_BARS = 1440


class CloseHistory:
    """Recent closes of one symbol by candle close time (the candle's origin_ns), bounded."""

    def __init__(self, bar_ns: int, keep_bars: int = _KEEP_BARS) -> None:
        self.keep_ns = keep_bars * bar_ns
        self.latest_ns = 0
        self._closes: dict[int, float] = {}
        self._order: deque[int] = deque()

    def add(self, close_ns: int, close: float) -> None:
        if close_ns not in self._closes:
            self._order.append(close_ns)
        self._closes[close_ns] = close
        self.latest_ns = max(self.latest_ns, close_ns)
        while self._order and self._order[0] < self.latest_ns - self.keep_ns:
            self._closes.pop(self._order.popleft(), None)

    def get(self, close_ns: int) -> float | None:
        return self._closes.get(close_ns)


@dataclass(slots=True)
class _Pending:
    origin_ns: int
    direction: int  # -1, 0, 1


class DirectionAccuracy:
    """Scores each prediction against the realized move of its symbol `horizon_bars` candles
    later, matched by origin time (the close of the candle the prediction was made on), and
    feeds the errors to Page-Hinkley. A move within `flat_band` (fractional) counts as FLAT."""

    def __init__(
        self,
        *,
        bar_ns: int,
        horizon_bars: int = 1,
        flat_band: float = 1e-4,
        window: int = 500,
        max_pending: int = 10_000,
        detector: PageHinkley | None = None,
        closes: CloseHistory | None = None,
    ) -> None:
        self.bar_ns = bar_ns
        self.horizon_ns = horizon_bars * bar_ns
        self.flat_band = flat_band
        self.hits: deque[bool] = deque(maxlen=window)
        self.detector = detector or PageHinkley()
        self.drift_detected = False
        self.max_pending = max_pending
        # Shared by every model of the symbol, so candles read before a model's first
        # prediction still count.
        self.closes = closes or CloseHistory(bar_ns)
        self._pending: deque[_Pending] = deque()

    def prediction(self, origin_ns: int, direction: int) -> None:
        self._pending.append(_Pending(origin_ns, direction))
        if len(self._pending) > self.max_pending:
            self._pending.popleft()
        self.score()

    def candle(self, close_ns: int, close: float) -> None:
        self.closes.add(close_ns, close)
        self.score()

    def score(self) -> None:
        """Scores the pending predictions whose outcome candle is known."""
        still: deque[_Pending] = deque()
        give_up = self.closes.latest_ns - self.closes.keep_ns
        for p in self._pending:
            start = self.closes.get(p.origin_ns)
            end = self.closes.get(p.origin_ns + self.horizon_ns)
            if start is None or end is None or start <= 0:
                if p.origin_ns + self.horizon_ns >= give_up:
                    still.append(p)  # its outcome candle may still come; else a gap: unscored
                continue
            move = end / start - 1.0
            realized = 0 if abs(move) <= self.flat_band else (1 if move > 0 else -1)
            hit = realized == p.direction
            self.hits.append(hit)
            if self.detector.update(0.0 if hit else 1.0):
                self.drift_detected = True
        self._pending = still

    @property
    def accuracy(self) -> float | None:
        return sum(self.hits) / len(self.hits) if self.hits else None

    def take_drift(self) -> bool:
        """Whether the error detector fired since the last call."""
        fired, self.drift_detected = self.drift_detected, False
        return fired
