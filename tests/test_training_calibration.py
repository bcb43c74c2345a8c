"""The calibrator `train` writes (Platt, or isotonic where isotonic beats Platt on held-out rows
of the calibration slice) and the reliability diagram (matplotlib): an isotonic calibrator is
chosen where the truth has a shape Platt cannot take, is not chosen where the truth is Platt's
own shape, and a manifest holding it loads and calibrates in the signals stage's reader as
scikit-learn's own model predicts; the diagram is a labelled image, or a clear warning without
matplotlib."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from kstrade.config import SignalSettings
from kstrade.inference.manifest import Manifest
from kstrade.signals.calibration import Isotonic, Platt, calibrator_from_manifest
from kstrade.training import evaluation as ev

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models" / "transformer" / "manifest.json"


def outcomes(truth: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(truth.shape[0]) < truth


def two_symbols_parts(rows: int) -> np.ndarray:
    """The parts of two symbols' calibration slices of `rows` windows each (ends consecutive)."""
    ends = np.arange(1000, 1000 + rows)
    part = ev.calibration_parts(ends, 1000, 1000 + rows + 5, horizon=5)
    return np.concatenate([part, part])


def test_the_calibration_slice_is_split_by_time_per_symbol_and_purged() -> None:
    ends = np.arange(600, 795)  # the windows of a slice [600, 800) purged by a 5-minute horizon
    part = ev.calibration_parts(ends, 600, 800, horizon=5)
    cut = 600 + round(200 * 2 / 3)
    assert (part[ends >= cut] == ev.HELD_OUT).all()
    assert (part[ends < cut - 5] == ev.FIT).all()
    assert (part == ev.PURGED).sum() == 5  # no fit row's label reaches into the held-out rows


def test_isotonic_is_chosen_where_the_truth_is_a_shape_platt_cannot_take() -> None:
    """Hit rate a step: 40% below a winner probability of 0.6, 85% above. A sigmoid of the logit
    cannot jump; isotonic regression can."""
    rows = 20_000
    p = np.random.default_rng(1).uniform(0.34, 0.95, 2 * rows)
    truth = np.where(p < 0.6, 0.40, 0.85)
    choice = ev.choose_calibration(p, outcomes(truth, 2), two_symbols_parts(rows))
    assert choice.selection["method"] == "isotonic" and isinstance(choice.calibrator, Isotonic)
    losses = choice.selection["held_out_log_loss"]
    assert losses["isotonic"] < losses["platt"] and choice.selection["platt_minus_isotonic_95"][0] > 0
    assert choice.spec["method"] == "isotonic"
    # It calibrates: ECE on fresh outcomes of the same truth is far below Platt's.
    fresh = outcomes(truth, 3)
    assert ev.ece(ev.calibrate(choice.calibrator, p), fresh) < 0.5 * ev.ece(ev.calibrate(choice.platt, p), fresh)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_isotonic_that_does_not_beat_platt_is_not_chosen(seed: int) -> None:
    """The truth is a Platt curve itself: isotonic's steps only add noise, so Platt stays."""
    rows = 20_000
    p = np.random.default_rng(seed).uniform(0.34, 0.95, 2 * rows)
    truth = np.asarray([Platt(0.7, -0.2)(float(v)) for v in p])
    choice = ev.choose_calibration(p, outcomes(truth, seed + 10), two_symbols_parts(rows))
    assert choice.selection["method"] == "platt" and choice.calibrator == choice.platt
    assert choice.selection["isotonic"] == "not chosen: not better beyond noise"
    assert choice.selection["platt_minus_isotonic_95"][0] <= 0
    assert choice.spec == {"method": "platt", "a": choice.platt.a, "b": choice.platt.b}


def test_with_too_few_rows_isotonic_is_not_tried() -> None:
    """Under five bootstrap blocks of held-out rows the interval would be the sample itself."""
    rows = 1200  # 800 fit rows and 396 held out per symbol: 792 held out in all, under 1,800
    p = np.random.default_rng(7).uniform(0.34, 0.95, 2 * rows)
    choice = ev.choose_calibration(p, outcomes(np.where(p < 0.6, 0.4, 0.85), 8), two_symbols_parts(rows))
    assert choice.selection["method"] == "platt"
    assert choice.selection["isotonic"].startswith("not tried: fewer than")


def test_a_manifest_with_an_isotonic_calibrator_loads_and_calibrates_as_scikit_learn_predicts() -> None:
    from sklearn.isotonic import IsotonicRegression

    rows = 20_000
    p = np.random.default_rng(9).uniform(0.34, 0.95, 2 * rows)
    correct = outcomes(np.where(p < 0.6, 0.40, 0.85), 10)
    choice = ev.choose_calibration(p, correct, two_symbols_parts(rows))
    assert choice.spec["method"] == "isotonic"
    # The manifest as `train` writes it, read by the inference stage's model and the signals stage.
    body = {**json.loads(SHIPPED.read_text()), "calibration": json.loads(json.dumps(choice.spec))}
    manifest = Manifest.model_validate(body)
    version, calibrator = calibrator_from_manifest(manifest.model_dump())
    assert version == manifest.model_version and isinstance(calibrator, Isotonic)
    assert SignalSettings(calibrators={version: manifest.calibration}).calibrators[version].method == "isotonic"
    # scikit-learn's own model, fitted on the whole slice, is the oracle for every probability.
    low, high = ev.isotonic_bounds(len(p))  # never a certainty: 1 / (n + 2) .. (n + 1) / (n + 2)
    oracle = IsotonicRegression(y_min=low, y_max=high, out_of_bounds="clip").fit(p, correct.astype(float))
    grid = np.concatenate([np.linspace(0.0, 1.0, 2001), p[:500]])
    expected = oracle.predict(grid)
    got = np.array([calibrator(float(v)) for v in grid])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert ((got >= low) & (got <= high)).all() and (np.diff(got[:2001]) >= 0).all()


def test_the_reliability_diagram_is_drawn_with_matplotlib(tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.34, 1.0, 5000)
    raw = ev.reliability_curve(conf, rng.random(5000) < conf**2)
    calibrated = ev.reliability_curve(conf, rng.random(5000) < conf)
    path = tmp_path / "reliability.png"
    assert ev.reliability_png({"raw": raw, "calibrated": calibrated}, path, "Reliability (test)")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = (image.imread(path)[:, :, :3] * 255).round().astype(int)
    assert pixels.shape == (640, 640, 3)

    def share(rgb: tuple[int, int, int]) -> float:
        return float(np.mean(np.abs(pixels - np.array(rgb)).sum(axis=2) < 30))

    # Both series are there in their colours (matplotlib's tab:blue and tab:orange), and the ink of
    # axes, labels, title and legend (near black) is more than a frame would be.
    assert share((31, 119, 180)) > 0.001 and share((255, 127, 14)) > 0.001
    assert share((0, 0, 0)) + share((38, 38, 38)) > 0.005


def test_without_matplotlib_the_diagram_is_skipped_with_a_clear_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import` of it raises ImportError
    curve = ev.reliability_curve(np.array([0.5, 0.7]), np.array([True, False]))
    path = tmp_path / "reliability.png"
    with caplog.at_level(logging.WARNING, logger="kstrade.training"):
        assert not ev.reliability_png({"a": curve}, path)
    assert not path.exists()
    assert "reliability.png not drawn: matplotlib is not installed (pip install 'kstrade[train]')" in caplog.text
