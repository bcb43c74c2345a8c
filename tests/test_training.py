"""The torch-free half of training: labels, time splits without leakage, Platt fitting and ECE
(the calibrator's choice and the reliability diagram: tests/test_training_calibration.py)."""

from __future__ import annotations

import numpy as np

from kstrade.training import dataset as ds
from kstrade.training import evaluation as ev


def test_labels_use_the_horizon_and_the_dead_band() -> None:
    close = np.array([100.0, 100.0, 100.2, 99.0, 100.0, 100.03, 100.0])
    label = ds.LabelDefinition(horizon_minutes=2, dead_band=0.001)
    got = ds.direction_labels(close, label)
    # 100 -> 100.2 UP; 100 -> 99 DOWN; 100.2 -> 100 DOWN; 99 -> 100.03 UP; 100 -> 100 FLAT; no future for the last 2.
    assert got.tolist() == [2, 0, 0, 2, 1, -1, -1]


def test_series_labels_and_previous_direction_align_by_time() -> None:
    from datetime import UTC, datetime

    from kstrade.ingest import synthetic

    label = ds.LabelDefinition()
    candles = synthetic.generate("BTC-USD", datetime(2026, 1, 5, tzinfo=UTC), 2, 3)
    series = ds.symbol_series(candles, "BTC-USD", label)
    assert series.features.shape[0] == len(series.labels) > 100
    assert np.isfinite(series.features).all()
    close = dict(zip(candles["timestamp"].dt.epoch("ms").to_list(), candles["close"].to_list(), strict=True))
    h = label.horizon_minutes
    for i in (0, 57, len(series.labels) - h - 1):
        t = int(series.open_time_ms[i])
        change = close[t + h * 60_000] / close[t] - 1
        expected = 2 if change > label.dead_band else 0 if change < -label.dead_band else 1
        assert series.labels[i] == expected
        back = close[t] / close[t - h * 60_000] - 1
        assert series.previous[i] == (2 if back > label.dead_band else 0 if back < -label.dead_band else 1)
    assert (series.labels[-h:] == -1).all()


def test_windows_stay_inside_their_slice_and_end_on_their_row() -> None:
    x = np.arange(100, dtype=np.float32)[:, None]
    labels = np.ones(100, dtype=np.int64)
    labels[-5:] = -1
    ends = ds.window_ends(labels, 40, 60, window=10)
    assert ends[0] == 40 and ends[-1] == 59
    w = ds.gather_windows(x, ends, 10)
    assert w.shape == (20, 10, 1)
    assert w[0, :, 0].tolist() == list(range(31, 41))  # oldest first, ending on the row itself
    assert ds.window_ends(labels, 0, 100, window=10)[0] == 9
    assert ds.window_ends(labels, 0, 100, window=10)[-1] == 94  # unlabelled tail excluded


def test_split_is_ordered_and_covers_everything() -> None:
    (a0, a1), (b0, b1), (c0, c1) = ds.Split().bounds(1000)
    assert (a0, a1, b0, b1, c0, c1) == (0, 600, 600, 800, 800, 1000)


def test_platt_fit_recovers_the_parameters_that_generated_the_outcomes() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.34, 0.95, 20_000)
    z = np.log(p / (1 - p))
    truth = 1 / (1 + np.exp(-(0.6 * z - 0.3)))
    correct = rng.random(20_000) < truth
    platt = ev.fit_platt(p, correct)
    assert abs(platt.a - 0.6) < 0.08 and abs(platt.b + 0.3) < 0.08
    assert ev.ece(ev.calibrate(platt, p), correct) < ev.ece(p, correct)


def test_baseline_probabilities_come_from_the_training_slice() -> None:
    train_labels = np.array([0, 1, 1, 2, 2, 2])
    freq = ev.class_frequencies(train_labels)
    assert freq.tolist() == [1 / 6, 2 / 6, 3 / 6]
    flat = ev.always_flat(np.array([1, 2]), freq)
    assert ev.log_loss(flat, np.array([1, 2])) == -np.mean(np.log([2 / 6, 3 / 6]))
    last = ev.last_direction(np.array([2]), freq, np.array([0, 0, 0, 2, 2, 2]), train_labels)
    assert last.shape == (1, 3) and np.argmax(last[0]) == 2  # after UP, UP was most frequent


def test_quantile_reference_bins_a_sample_into_deciles_and_merges_ties() -> None:
    values = np.arange(1000, dtype=np.float64)
    ref = ds.quantile_reference(values)
    assert ref["edges"] == [100.0 * i for i in range(1, 10)]
    assert ref["proportions"] == [0.1] * 10
    constant = ds.quantile_reference(np.zeros(50))
    assert constant == {"edges": [0.0], "proportions": [0.0, 1.0]}  # on the edge: the bin above


def test_bootstrap_intervals_cover_the_mean_and_widen_with_dependence() -> None:
    """The block bootstrap's interval holds the sample mean, is a point for a constant, and is
    wider for values that come in long runs (dependence) than for the same values shuffled."""
    from kstrade.training.evaluation import BOOTSTRAP_BLOCK, interval

    assert interval(np.full(500, 0.25)) == (0.25, 0.25)
    rng = np.random.default_rng(3)
    runs = np.repeat(rng.normal(size=60), BOOTSTRAP_BLOCK)  # 60 runs of one value each
    lo, hi = interval(runs)
    assert lo < runs.mean() < hi
    shuffled = rng.permutation(runs)
    s_lo, s_hi = interval(shuffled)
    assert (hi - lo) > 3 * (s_hi - s_lo)
