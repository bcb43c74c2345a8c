"""`[features]`: where the features stage checkpoints its warm indicators."""

from __future__ import annotations

from pathlib import Path

from kstrade.config.base import _Section


class FeatureSettings(_Section):
    """The features stage: where it checkpoints its warm indicators. None (the default): it does
    not, and a restarted service warms up again from new candles. Give each deployment (cluster
    and consumer group) its own directory: a checkpoint is only true for the stream it came from."""

    state_dir: Path | None = None
