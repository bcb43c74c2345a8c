"""The model runtime: loads a shipped model directory (manifest + ONNX file + PyTorch reference
outputs), refuses it unless every check passes, and answers class probabilities.

Checks, in order, each with a stable code: the manifest parses (MANIFEST_*), its features equal
the running FeatureEngine's (FEATURE_*), the file's sha256 equals the manifest's
(MODEL_SHA256_MISMATCH), onnxruntime can load it (MODEL_UNLOADABLE), its input and output
shapes fit the manifest (MODEL_SHAPE_MISMATCH), and it reproduces the outputs PyTorch gave at
export time on the stored reference windows (REFERENCE_MISMATCH)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kstrade.codes import ModelRefusal
from kstrade.features import FEATURE_VERSION, feature_names_for
from kstrade.inference.manifest import VERSION_DIGITS, Manifest, ModelRefused
from kstrade.signals.calibration import Calibrator, calibrator_from_spec

REFERENCE_FILE = "reference.npz"
#: ONNX vs PyTorch on the reference windows: the largest absolute difference of a probability
#: accepted. Seen here: ~1e-7 (float32 kernels differ in summation order, nothing more).
REFERENCE_TOLERANCE = 1e-5
#: On the CPU, a model call of more windows than this runs in slices of this many: the shipped
#: models are small enough that a batch which stays in the CPU's caches is the fast one.
#: Measured here per window (512 windows in calls of 8 to 512, best of 6): the transformer 50 us
#: at 32-64 windows a call, 85 us at 512; the LSTM 14.5 us and 43 us. The probabilities do not depend on
#: the slicing (every kernel works row by row; tests/test_inference_stage.py checks it).
CPU_CALL_ROWS = 64


def session_options() -> ort.SessionOptions:
    """Tiny models: one intra-op thread without spinning (a spinning pool burns a core while
    idle and fights the other stages), full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def providers() -> list[str]:
    """CUDA when this onnxruntime build has it, the CPU otherwise (always last, as fallback)."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A checked, warmed-up model: immutable, so swapping the one reference that points at it
    is the whole of a hot reload."""

    manifest: Manifest
    directory: Path
    session: ort.InferenceSession
    calibrator: Calibrator
    #: Per symbol: (mean, 1 / std) as float32 rows of length F.
    scalers: dict[str, tuple[np.ndarray, np.ndarray]]
    reference_max_error: float
    #: Windows per model call (`CPU_CALL_ROWS` on the CPU; 0: any number in one call).
    call_rows: int = 0

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @property
    def window(self) -> int:
        return self.manifest.window

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        feature_version: str = FEATURE_VERSION,
        feature_names: tuple[str, ...] | None = None,
        provider_list: list[str] | None = None,
        base_interval: str = "1m",
    ) -> LoadedModel:
        """Every check of the module doc, or `ModelRefused` naming the first that failed.
        `base_interval`: the candles the pipeline runs on; `feature_names` default to its engine's."""
        feature_names = feature_names or feature_names_for(base_interval)
        manifest = Manifest.read(directory)
        manifest.check_base_interval(base_interval)
        manifest.check_features(feature_version, feature_names)
        path = directory / manifest.file
        try:
            # The bytes that are hashed are the bytes handed to onnxruntime: no window in which
            # the file could change between the check and the load.
            data = path.read_bytes()
        except OSError as exc:
            raise ModelRefused(ModelRefusal.MODEL_UNREADABLE, f"{path}: {exc}") from exc
        sha = hashlib.sha256(data).hexdigest()
        if sha != manifest.sha256:
            raise ModelRefused(
                ModelRefusal.MODEL_SHA256_MISMATCH,
                f"{path}: sha256 {sha[:16]}... but the manifest says {manifest.sha256[:16]}...",
            )
        if manifest.model_version != sha[:VERSION_DIGITS]:
            raise ModelRefused(
                ModelRefusal.MANIFEST_INVALID, f"model_version {manifest.model_version} is not the sha256 prefix"
            )
        try:
            session = ort.InferenceSession(data, session_options(), providers=provider_list or providers())
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelRefused(ModelRefusal.MODEL_UNLOADABLE, f"{path}: {exc}") from exc
        _check_shapes(session, manifest, len(feature_names))
        calibrator = calibrator_from_spec(manifest.calibration)
        scalers = {
            s: (np.asarray(sc.mean, dtype=np.float32), (1.0 / np.asarray(sc.std, dtype=np.float32)).astype(np.float32))
            for s, sc in manifest.scaler.per_symbol.items()
        }
        on_cpu = session.get_providers()[0] == "CPUExecutionProvider"
        model = cls(manifest, directory, session, calibrator, scalers, 0.0, CPU_CALL_ROWS if on_cpu else 0)
        error = model.check_reference()
        object.__setattr__(model, "reference_max_error", error)
        return model

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """(B, 3) class probabilities (DOWN, FLAT, UP) for scaled windows (B, window, F) float32."""
        rows, name = self.call_rows, self.manifest.input_name
        if not rows or len(windows) <= rows:
            return np.asarray(self.session.run(None, {name: windows})[0])
        parts = [self.session.run(None, {name: windows[i : i + rows]})[0] for i in range(0, len(windows), rows)]
        return np.concatenate(parts)

    def check_reference(self) -> float:
        """Runs the PyTorch reference windows; the largest absolute difference, or ModelRefused
        if it exceeds REFERENCE_TOLERANCE (also the warm-up: first calls allocate)."""
        path = self.directory / REFERENCE_FILE
        try:
            with np.load(path, allow_pickle=False) as ref:
                x, expected = ref["x"].astype(np.float32), ref["probabilities"]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelRefused(ModelRefusal.REFERENCE_UNREADABLE, f"{path}: {exc}") from exc
        try:
            got = self.probabilities(x)
            single = self.probabilities(x[:1])  # batch 1 is the live path: it must agree too
        except Exception as exc:
            raise ModelRefused(
                ModelRefusal.MODEL_SHAPE_MISMATCH, f"{self.directory}: reference windows rejected: {exc}"
            ) from exc
        if got.shape != expected.shape:
            raise ModelRefused(ModelRefusal.REFERENCE_MISMATCH, f"output shape {got.shape}, reference {expected.shape}")
        error = max(float(np.max(np.abs(got - expected))), float(np.max(np.abs(single - expected[:1]))))
        if not error <= REFERENCE_TOLERANCE:
            raise ModelRefused(
                ModelRefusal.REFERENCE_MISMATCH,
                f"{self.directory}: ONNX differs from the PyTorch reference by {error:.3g} > {REFERENCE_TOLERANCE}",
            )
        return error


def _check_shapes(session: ort.InferenceSession, manifest: Manifest, features: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != manifest.input_name:
        raise ModelRefused(
            ModelRefusal.MODEL_SHAPE_MISMATCH, f"inputs {[i.name for i in inputs]}, manifest {manifest.input_name}"
        )
    shape = list(inputs[0].shape)
    if len(shape) != 3 or isinstance(shape[0], int) or shape[1:] != [manifest.window, features]:
        raise ModelRefused(
            ModelRefusal.MODEL_SHAPE_MISMATCH,
            f"input shape {shape}, expected [batch, {manifest.window}, {features}] with a dynamic batch axis",
        )
    if inputs[0].type != "tensor(float)":
        raise ModelRefused(ModelRefusal.MODEL_SHAPE_MISMATCH, f"input type {inputs[0].type}, expected tensor(float)")
    if not outputs or outputs[0].name != manifest.output_name or list(outputs[0].shape)[1:] != [len(manifest.classes)]:
        raise ModelRefused(
            ModelRefusal.MODEL_SHAPE_MISMATCH,
            f"output {outputs[0].name if outputs else None} shape "
            f"{list(outputs[0].shape) if outputs else None}, expected [batch, {len(manifest.classes)}]",
        )
