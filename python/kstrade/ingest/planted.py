"""A SYNTHETIC market with a planted, documented edge, and the true probability of every label.

`kstrade.ingest.synthetic`'s GARCH-t market is close to unpredictable by construction: models
trained on it cannot beat naive baselines, and a pipeline run on it rightly trades nothing. This
market plants an edge the features can see, so the product can show what it exists for (tiers,
orders, fills, P&L, guardrails, calibration), and, since the generator knows the truth, it writes
beside each candle the true probability of each label class: how good a model could be at all.
The GARCH-t market stays as the control (a pipeline must find no edge there). Real markets are
much harder than this one: nothing trained or measured here says anything about them.

The model, per symbol (one random stream per symbol and seed, as in `synthetic`):
- a latent state k_t in {RANGE, UP, DOWN}, a Markov chain per minute: a range lasts 180 minutes
  on average, a trend 120; a trend ends in a range, a range turns into either trend;
- log close x_t = x_{t-1} + r_t with Gaussian shocks z_t and sigma_t = sigma0 * s(minute of day)
  * g_k (sigma0 from the symbol's daily volatility, s the intraday pattern of `synthetic`,
  g = 0.8 in a range, 1.2 in a trend: volatility clusters with the state);
- UP / DOWN (momentum): r_t = +-DRIFT * sigma_t + sigma_t * z_t;
- RANGE (mean reversion): r_t = -KAPPA * (x_{t-1} - a) + sigma_t * z_t, where the anchor a is the
  log close when the range began;
- open = previous close; high / low add an intrabar excursion; volume follows |r| and s(.).

True probabilities (columns p_down, p_flat, p_up): the label of `kstrade.training.dataset`
(close[t + 5] / close[t] - 1 beyond +-0.05 %: UP / DOWN, else FLAT), given everything the
generator knows at the close of minute t (the state, the anchor, the volatilities ahead). They
are exact, not simulated (to the 1.5e-7 of the normal CDF used): every path of the state over
the next 5 minutes (3^5) is enumerated with its probability, and along a path x_{t+5} - x_t is
Gaussian (the recursion is linear), so each path's class probabilities are normal tail areas.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime

import numpy as np
import polars as pl

from kstrade.ingest.synthetic_symbols import MINUTES_PER_DAY, candles, checked, intraday_pattern

GENERATOR = "kstrade.synthetic.planted_edge/1"

RANGE, UP, DOWN = 0, 1, 2
STATES = ("range", "up", "down")
#: Drift of a trend per minute, in units of that minute's volatility.
DRIFT = 0.35
#: Pull of a range back to its anchor, per minute.
KAPPA = 0.08
#: Volatility scale per state.
STATE_VOL = np.array([0.8, 1.2, 1.2])
#: Mean lengths, in minutes, of a range and of a trend.
RANGE_MINUTES = 180
TREND_MINUTES = 120
#: Per-minute transitions (rows: from RANGE, UP, DOWN; each sums to 1).
TRANSITIONS = np.array(
    [
        [1 - 1 / RANGE_MINUTES, 0.5 / RANGE_MINUTES, 0.5 / RANGE_MINUTES],
        [1 / TREND_MINUTES, 1 - 1 / TREND_MINUTES, 0.0],
        [1 / TREND_MINUTES, 0.0, 1 - 1 / TREND_MINUTES],
    ]
)
#: The label the probabilities are for (as `kstrade.training.dataset.LabelDefinition`).
HORIZON = 5
DEAD_BAND = 0.0005


def ndtr(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF, to within 1.5e-7 (Abramowitz and Stegun 7.1.26 for erf)."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return np.asarray(0.5 * (1.0 + np.sign(z) * erf))


def parameters() -> dict[str, object]:
    """Everything that defines the market, for the file's metadata and the model card."""
    return {
        "generator": GENERATOR,
        "states": list(STATES),
        "drift_per_minute_in_sigmas": DRIFT,
        "kappa_per_minute": KAPPA,
        "state_vol": STATE_VOL.tolist(),
        "transitions_per_minute": TRANSITIONS.tolist(),
        "label": {"horizon_minutes": HORIZON, "dead_band": DEAD_BAND},
        "shocks": "gaussian",
    }


def _states(n: int, uniforms: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(TRANSITIONS, axis=1)
    states = np.empty(n, dtype=np.int8)
    k = RANGE
    for t in range(n):
        k = min(int(np.searchsorted(cumulative[k], uniforms[t], side="right")), 2)
        states[t] = k
    return states


def true_probabilities(
    states: np.ndarray, offsets: np.ndarray, sigma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(DOWN), P(FLAT), P(UP) of the label at each minute t, given the state k_t, the anchor
    offset a - x_t (used while in a range) and the volatilities sigma[t + j, k] of each state for
    the next `HORIZON` minutes (`sigma` has shape (n + HORIZON, 3)). Exact: see the module doc."""
    n = states.shape[0]
    up_edge, down_edge = math.log(1 + DEAD_BAND), math.log(1 - DEAD_BAND)
    p_down = np.zeros(n)
    p_up = np.zeros(n)
    for path in itertools.product(range(3), repeat=HORIZON):
        # Probability of the path from each minute's current state.
        weight = TRANSITIONS[states, path[0]].copy()
        for a, b in itertools.pairwise(path):
            weight *= TRANSITIONS[a, b]
        if not weight.any():
            continue
        # Mean and covariance of (y, A): y = x_{t+j} - x_t, A = anchor - x_t.
        my, vy = np.zeros(n), np.zeros(n)
        m_a, v_a, c = offsets.copy(), np.zeros(n), np.zeros(n)
        previous = states
        for j, k in enumerate(path, start=1):
            s = sigma[j : j + n, k]
            if k == RANGE:
                entering = previous != RANGE
                # The new range's anchor is where the price stands as it begins.
                m_a = np.where(entering, my, m_a)
                v_a = np.where(entering, vy, v_a)
                c = np.where(entering, vy, c)
                my, vy, c = (
                    (1 - KAPPA) * my + KAPPA * m_a,
                    (1 - KAPPA) ** 2 * vy + KAPPA**2 * v_a + 2 * KAPPA * (1 - KAPPA) * c + s**2,
                    (1 - KAPPA) * c + KAPPA * v_a,
                )
            else:
                my = my + (DRIFT if k == UP else -DRIFT) * s
                vy = vy + s**2
            previous = np.full(n, k, dtype=np.int8)
        sd = np.sqrt(vy)
        p_up += weight * (1 - ndtr((up_edge - my) / sd))
        p_down += weight * ndtr((down_edge - my) / sd)
    p_up = np.clip(p_up, 0.0, 1.0)
    p_down = np.clip(p_down, 0.0, 1.0)
    return p_down, np.clip(1.0 - p_up - p_down, 0.0, 1.0), p_up


def generate(symbol: str, start: datetime, days: int, seed: int) -> pl.DataFrame:
    """`days` of SYNTHETIC planted-edge 1-minute candles for `symbol` from `start` (UTC, whole
    minute), with the state and the true label probabilities of each candle."""
    model, start = checked(symbol, start, days)
    n = days * MINUTES_PER_DAY
    # A stream of its own (the extra 1 in the seed): never the control market's numbers.
    rng = np.random.default_rng([seed, sum(map(ord, symbol)), 1])
    shocks = rng.standard_normal(n)
    states = _states(n, rng.random(n))
    start_minute = start.hour * 60 + start.minute
    season = intraday_pattern()[(start_minute + np.arange(n + HORIZON)) % MINUTES_PER_DAY]
    # Per-state volatility for every minute (and the horizon past the end, for the probabilities).
    sigma0 = model.daily_vol / math.sqrt(MINUTES_PER_DAY)
    sigma = sigma0 * season[:, None] * STATE_VOL[None, :]

    returns = np.empty(n)
    offsets = np.empty(n)  # anchor - x_t after minute t (0 outside a range)
    x = anchor = 0.0
    previous = RANGE
    for t in range(n):
        k = int(states[t])
        s = sigma[t, k]
        if k == RANGE:
            if previous != RANGE:
                anchor = x
            r = -KAPPA * (x - anchor) + s * shocks[t]
        else:
            r = (DRIFT if k == UP else -DRIFT) * s + s * shocks[t]
        x += r
        returns[t] = r
        offsets[t] = anchor - x if k == RANGE else 0.0
        previous = k
    p_down, p_flat, p_up = true_probabilities(states, offsets, sigma)

    frame = candles(model, start, returns, sigma0, season[:n], rng)
    return frame.with_columns(
        pl.Series("regime", states), pl.Series("p_down", p_down), pl.Series("p_flat", p_flat), pl.Series("p_up", p_up)
    )
