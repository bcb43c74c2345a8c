"""PyTorch vs ONNX on the same inputs for both architectures, and a short end-to-end `train`
run; skipped only where torch is not installed (CI without the `train` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402

from kstrade.features import FEATURE_NAMES  # noqa: E402
from kstrade.inference import session_options  # noqa: E402
from kstrade.training.nets import DirectionLSTM, DirectionTransformer  # noqa: E402
from kstrade.training.trainer import _export  # noqa: E402

#: Stated tolerance: max absolute difference of a class probability.
TOLERANCE = 1e-5
WINDOW = 30


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_onnx_equals_pytorch_on_the_same_inputs(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    f = len(FEATURE_NAMES)
    model = DirectionLSTM(f) if kind == "lstm" else DirectionTransformer(f, WINDOW)
    model.eval()
    x = np.random.default_rng(0).standard_normal((5, WINDOW, f)).astype(np.float32)
    path = tmp_path / "m.onnx"
    _export(model, x[:2], path)
    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for batch in (1, 3, 5):  # the dynamic batch axis, beyond the export batch of 2
        got = session.run(None, {"x": x[:batch]})[0]
        np.testing.assert_allclose(got, expected[:batch], rtol=0, atol=TOLERANCE)
    assert np.ptp(expected, axis=0).max() > 1e-4


def test_train_end_to_end_on_a_small_run_is_deterministic(tmp_path: Path) -> None:
    from dataclasses import replace

    from kstrade.inference import LoadedModel
    from kstrade.training.dataset import DataSpec
    from kstrade.training.trainer import TrainOptions, train

    options = TrainOptions(
        out=tmp_path / "a",
        data=DataSpec(symbols=("BTC-USD",), days=4),
        lstm_epochs=1,
        transformer_epochs=1,
        train_stride=4,
    )
    first = train(options)
    second = train(replace(options, out=tmp_path / "b"))
    assert [m.model_version for m in first] == [m.model_version for m in second]
    for m in first:
        directory = tmp_path / "a" / ("lstm/BTC-USD" if m.model_type == "lstm" else "transformer")
        assert LoadedModel.load(directory).version == m.model_version
    assert (tmp_path / "a" / "reliability.png").stat().st_size > 100
    # Each manifest's calibrator (Platt or isotonic, whichever the held-out rows chose) is what
    # the signals stage reads, and the record says how it was chosen.
    from kstrade.signals.calibration import calibrator_from_manifest

    for m in first:
        version, calibrator = calibrator_from_manifest(m.model_dump())
        assert version == m.model_version and 0.0 <= calibrator(0.6) <= 1.0
        assert m.calibration_fit["selection"]["method"] == m.calibration.method
