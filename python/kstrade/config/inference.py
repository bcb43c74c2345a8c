"""`[inference]`: where the models live, how often they are reloaded, and the windows' checkpoints."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kstrade.config.base import _Section


class InferenceSettings(_Section):
    """The inference stage: where the models live and how often it looks for new versions."""

    #: Holds lstm/{symbol}/ and transformer/, each with manifest.json, the ONNX file, reference.npz.
    models_dir: Path = Path("models")
    #: Seconds between checks of the manifests for a new model version (hot reload).
    reload_check_seconds: float = Field(2.0, gt=0, le=3600)
    #: Where each inference stage checkpoints its model input windows. None (the default): it
    #: does not, and a restarted worker predicts nothing for its first `window - 1` vectors per
    #: symbol. One directory per deployment, as for features.state_dir.
    state_dir: Path | None = None
