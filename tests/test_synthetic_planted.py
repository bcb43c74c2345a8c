"""The planted-edge SYNTHETIC market: valid candles, labelled synthetic with its parameters, and
true label probabilities that are what they claim (checked against outcomes, and against a
direct simulation of the model from the same minute)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from kstrade.ingest import planted, synthetic
from kstrade.training.dataset import LabelDefinition, direction_labels

START = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def eth() -> pl.DataFrame:
    return planted.generate("ETH-USD", START, 30, seed=5)


def test_candles_are_valid_and_continuous(eth: pl.DataFrame) -> None:
    o, h, low, c, v = (eth[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert eth.height == 30 * 1440
    assert np.all(h >= np.maximum(o, c)) and np.all(low <= np.minimum(o, c)) and np.all(low > 0) and np.all(v > 0)
    assert np.array_equal(o[1:], c[:-1])
    p = eth.select("p_down", "p_flat", "p_up").to_numpy()
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)


def test_the_label_is_the_one_the_models_learn() -> None:
    label = LabelDefinition()
    assert (planted.HORIZON, planted.DEAD_BAND) == (label.horizon_minutes, label.dead_band)


def test_true_probabilities_match_the_outcomes(eth: pl.DataFrame) -> None:
    """Binned by stated probability, each class happens as often as stated (within 4 standard
    errors), and the truth beats any constant forecast by far: the edge is really there."""
    labels = direction_labels(eth["close"].to_numpy(), LabelDefinition())
    known = labels >= 0
    p = eth.select("p_down", "p_flat", "p_up").to_numpy()[known]
    y = labels[known]
    for k in range(3):
        bins = np.minimum((p[:, k] * 10).astype(int), 9)
        for b in range(10):
            m = bins == b
            if m.sum() < 500:
                continue
            stated, seen = p[m, k].mean(), (y[m] == k).mean()
            assert abs(stated - seen) < 4 * math.sqrt(stated * (1 - stated) / m.sum()) + 0.005, (k, b)
    truth_loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    freq = np.bincount(y, minlength=3) / len(y)
    constant_loss = -np.mean(np.log(freq[y]))
    assert truth_loss < constant_loss - 0.1


def test_true_probabilities_match_a_simulation_from_the_same_minute() -> None:
    """From a minute in a range (the anchor matters) and one in a trend, 200,000 simulated
    5-minute paths of the generator's own rules give the probabilities the formula states."""
    frame = planted.generate("SOL-USD", START, 2, seed=9)
    states = frame["regime"].to_numpy()
    close = np.log(frame["close"].to_numpy())
    rng = np.random.default_rng(1)
    model = synthetic.MODELS["SOL-USD"]
    season = synthetic.intraday_pattern()
    sigma0 = model.daily_vol / math.sqrt(synthetic.MINUTES_PER_DAY)
    checked = 0
    for t in range(200, 2800):
        k = int(states[t])
        if checked == 2 or (k == planted.RANGE) != (checked == 0):
            continue
        # The anchor of a range: the close before it began.
        anchor = 0.0
        if k == planted.RANGE:
            begin = t
            while begin > 0 and states[begin - 1] == planted.RANGE:
                begin -= 1
            anchor = close[begin - 1] if begin else math.log(model.start_price)
            if abs(anchor - close[t]) < 0.002:
                continue  # a minute far from its anchor tests the mean reversion
        n = 200_000
        x = np.full(n, close[t])
        a = np.full(n, anchor)
        s = np.full(n, k)
        cumulative = np.cumsum(planted.TRANSITIONS, axis=1)
        for j in range(1, planted.HORIZON + 1):
            u = rng.random(n)
            nxt = np.minimum((u[:, None] > cumulative[s]).sum(axis=1), 2)
            a = np.where((nxt == planted.RANGE) & (s != planted.RANGE), x, a)
            vol = sigma0 * season[(t + j) % synthetic.MINUTES_PER_DAY] * planted.STATE_VOL[nxt]
            drift = np.where(nxt == planted.UP, planted.DRIFT * vol, -planted.DRIFT * vol)
            r = np.where(nxt == planted.RANGE, -planted.KAPPA * (x - a), drift) + vol * rng.standard_normal(n)
            x, s = x + r, nxt
        change = np.exp(x - close[t]) - 1
        simulated = [np.mean(change < -planted.DEAD_BAND), 0.0, np.mean(change > planted.DEAD_BAND)]
        simulated[1] = 1 - simulated[0] - simulated[2]
        stated = frame.select("p_down", "p_flat", "p_up").row(t)
        assert np.allclose(stated, simulated, atol=0.005), (t, k, stated, simulated)
        checked += 1
    assert checked == 2


def test_file_is_labelled_synthetic_with_its_parameters(tmp_path: Path) -> None:
    path = synthetic.write(["BTC-USD"], START, 1, 3, tmp_path, "edge")
    assert path.name.startswith("synthetic-edge_")
    meta = pl.read_parquet_metadata(path)
    assert meta["kstrade.synthetic"] == "true" and meta["kstrade.market"] == "edge"
    assert meta["kstrade.generator"] == planted.GENERATOR
    assert json.loads(meta["kstrade.parameters"])["drift_per_minute_in_sigmas"] == planted.DRIFT
    assert "real markets are much harder" in meta["kstrade.note"]


def test_markets_are_separate_streams_and_unknown_ones_are_refused() -> None:
    edge = synthetic.generate("BTC-USD", START, 1, 3, "edge")
    control = synthetic.generate("BTC-USD", START, 1, 3, "control")
    assert "p_up" in edge.columns and "p_up" not in control.columns
    assert not np.allclose(edge["close"].to_numpy(), control["close"].to_numpy())
    with pytest.raises(ValueError, match="unknown synthetic market 'bull'"):
        synthetic.generate("BTC-USD", START, 1, 3, "bull")


def test_the_cli_offers_the_markets_the_generator_has() -> None:
    from kstrade.cli import MARKET_CHOICES

    assert MARKET_CHOICES == synthetic.MARKETS
