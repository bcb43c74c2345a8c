"""The shipped models against what PyTorch answered at export time (no torch needed), their
manifests against their files, and the refusals of a corrupted or mismatched model."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from kstrade.features import FEATURE_NAMES, FEATURE_VERSION
from kstrade.inference import LoadedModel, ModelRefused, session_options
from kstrade.inference.manifest import manifest_paths
from kstrade.inference.runtime import REFERENCE_FILE
from kstrade.signals.calibration import calibrator_from_manifest

MODELS = Path(__file__).resolve().parent.parent / "models"
#: The 1m models (the 1h ones in models/1h/ are checked in test_base_interval).
MODEL_DIRS = sorted(p.parent for p in manifest_paths(MODELS))
#: Stated tolerance of the ONNX-vs-PyTorch check (max absolute difference of a probability).
TOLERANCE = 1e-5


def test_every_model_type_and_symbol_is_shipped() -> None:
    names = {p.relative_to(MODELS).as_posix() for p in MODEL_DIRS}
    assert names == {"lstm/BTC-USD", "lstm/ETH-USD", "lstm/SOL-USD", "transformer"}


@pytest.mark.parametrize("directory", MODEL_DIRS, ids=lambda p: p.relative_to(MODELS).as_posix())
def test_onnx_reproduces_the_pytorch_reference(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    session = ort.InferenceSession(
        str(directory / manifest["file"]), session_options(), providers=["CPUExecutionProvider"]
    )
    with np.load(directory / REFERENCE_FILE) as ref:
        x, expected = ref["x"], ref["probabilities"]
    assert x.shape == (len(expected), manifest["window"], len(FEATURE_NAMES))
    got = session.run(None, {manifest["input_name"]: x})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    for i in range(len(x)):  # one window at a time, as live
        np.testing.assert_allclose(session.run(None, {"x": x[i : i + 1]})[0][0], expected[i], rtol=0, atol=TOLERANCE)
    # Probabilities, and not all the same class: the reference would not catch a constant model.
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    assert np.ptp(expected, axis=0).max() > 1e-3


@pytest.mark.parametrize("directory", MODEL_DIRS, ids=lambda p: p.relative_to(MODELS).as_posix())
def test_manifest_describes_its_file(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    data = (directory / manifest["file"]).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert manifest["sha256"] == sha
    assert manifest["model_version"] == sha[:12]
    assert not list(directory.glob("*.data")), "the ONNX file must be self-contained"
    assert len(data) < 2_000_000
    assert manifest["feature_version"] == FEATURE_VERSION
    assert manifest["feature_names"] == list(FEATURE_NAMES)
    assert manifest["data"]["synthetic"] is True and "SYNTHETIC" in manifest["data"]["source"]
    assert manifest["classes"] == ["DOWN", "FLAT", "UP"]
    for key in ("accuracy", "log_loss"):
        for who in ("model", "always_flat", "last_direction"):
            assert 0 <= manifest["metrics"][who][key]
    # The signals stage reads calibration from the same file.
    version, calibrate = calibrator_from_manifest(manifest)
    assert version == manifest["model_version"]
    assert 0 <= calibrate(0.5) <= 1
    # The ONNX metadata mirrors the manifest.
    meta = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["kstrade.feature_names"]) == manifest["feature_names"]
    assert json.loads(meta["kstrade.calibration"]) == manifest["calibration"]
    assert meta["kstrade.model_type"] == manifest["model_type"]


def test_loaded_model_checks_pass_on_the_shipped_models() -> None:
    for directory in MODEL_DIRS:
        model = LoadedModel.load(directory)
        assert model.reference_max_error <= TOLERANCE
        assert model.version == json.loads((directory / "manifest.json").read_text())["model_version"]


@pytest.fixture
def lstm_copy(tmp_path: Path) -> Path:
    target = tmp_path / "BTC-USD"
    shutil.copytree(MODELS / "lstm" / "BTC-USD", target)
    return target


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def _refusal(directory: Path) -> ModelRefused:
    with pytest.raises(ModelRefused) as info:
        LoadedModel.load(directory)
    return info.value


def test_a_corrupted_model_file_is_refused(lstm_copy: Path) -> None:
    path = lstm_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert _refusal(lstm_copy).code == "MODEL_SHA256_MISMATCH"


def test_a_truncated_model_with_a_matching_hash_is_refused(lstm_copy: Path) -> None:
    path = lstm_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:500])
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    _edit_manifest(lstm_copy, sha256=sha, model_version=sha[:12])
    assert _refusal(lstm_copy).code == "MODEL_UNLOADABLE"


def test_a_manifest_with_other_features_is_refused_naming_the_difference(lstm_copy: Path) -> None:
    names = list(FEATURE_NAMES)
    names[3], names[4] = names[4], names[3]
    _edit_manifest(lstm_copy, feature_names=names)
    refused = _refusal(lstm_copy)
    assert refused.code == "FEATURE_NAMES_MISMATCH"
    assert f"feature 3 is {names[3]!r}" in refused.message

    _edit_manifest(lstm_copy, feature_names=names[:-1])
    assert "features in the manifest" in _refusal(lstm_copy).message

    _edit_manifest(lstm_copy, feature_names=list(FEATURE_NAMES), feature_version="v0.0-other")
    refused = _refusal(lstm_copy)
    assert refused.code == "FEATURE_VERSION_MISMATCH" and "v0.0-other" in refused.message


def test_a_model_that_disagrees_with_its_reference_is_refused(lstm_copy: Path) -> None:
    with np.load(lstm_copy / REFERENCE_FILE) as ref:
        x, p = ref["x"], ref["probabilities"]
    np.savez(lstm_copy / REFERENCE_FILE, x=x, probabilities=p[:, ::-1].copy())
    assert _refusal(lstm_copy).code == "REFERENCE_MISMATCH"


def test_a_manifest_with_another_window_is_refused(lstm_copy: Path) -> None:
    manifest = json.loads((lstm_copy / "manifest.json").read_text())
    _edit_manifest(lstm_copy, window=manifest["window"] + 1)
    assert _refusal(lstm_copy).code == "MODEL_SHAPE_MISMATCH"


def test_an_unreadable_manifest_is_refused(lstm_copy: Path) -> None:
    (lstm_copy / "manifest.json").write_text("{not json")
    assert _refusal(lstm_copy).code == "MANIFEST_UNREADABLE"
    (lstm_copy / "manifest.json").write_text("{}")
    assert _refusal(lstm_copy).code == "MANIFEST_INVALID"


@pytest.mark.parametrize("directory", MODEL_DIRS, ids=lambda p: p.relative_to(MODELS).as_posix())
def test_drift_reference_matches_its_model(directory: Path) -> None:
    """The metrics stage's drift monitor reads this file: same model, every feature, valid bins."""
    manifest = json.loads((directory / "manifest.json").read_text())
    reference = json.loads((directory / "drift_reference.json").read_text())
    assert reference["model_version"] == manifest["model_version"]
    assert reference["model_type"] == manifest["model_type"]
    assert list(reference["features"]) == manifest["feature_names"]
    for name, bins in reference["features"].items():
        edges, proportions = bins["edges"], bins["proportions"]
        assert edges and all(b > a for a, b in itertools.pairwise(edges)), name
        assert len(proportions) == len(edges) + 1 and abs(sum(proportions) - 1) < 1e-9, name
    # A continuous feature splits into ten deciles of the training rows.
    assert len(reference["features"]["1m_log_return"]["edges"]) == 9


def test_shipped_manifests_feed_the_signals_calibrators() -> None:
    from kstrade.config import SignalSettings
    from kstrade.inference.manifest import shipped_manifests

    manifests = shipped_manifests(MODELS)
    assert [m.model_type for m in manifests] == ["lstm", "lstm", "lstm", "transformer"]
    settings = SignalSettings(calibrators={m.model_version: m.calibration for m in manifests})
    assert len(settings.calibrators) == 4
