"""The inference stage: feature vectors in, direction predictions out, from the ONNX models in
models/ (a per-symbol LSTM and a multi-symbol Transformer), hot-reloaded without a pause.

    model = LoadedModel.load(Path("models/transformer"))   # checked: sha256, features, shapes
    stage = TransformerInference(Path("models"), symbols=["BTC-USD"])
"""

from kstrade.inference.manifest import Manifest, ModelRefused
from kstrade.inference.runtime import LoadedModel, session_options
from kstrade.inference.stage import InferenceStage, LSTMInference, TransformerInference, inference_stages

__all__ = [
    "InferenceStage",
    "LSTMInference",
    "LoadedModel",
    "Manifest",
    "ModelRefused",
    "TransformerInference",
    "inference_stages",
    "session_options",
]
