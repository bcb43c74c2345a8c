"""models/MODEL_CARD.md, written from the manifests so its numbers are always the shipped
models' numbers, with the verdict against the naive baselines stated plainly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kstrade.inference.manifest import Manifest

_INTRO = """# kstrade models: model card

**Data: SYNTHETIC.** Every model here was trained and evaluated on seeded synthetic 1-minute
candles (`kstrade.ingest.synthetic`: GARCH(1,1) volatility with Student-t shocks, three Markov
regimes, an intraday volatility pattern). It is not market data; nothing below says anything
about real markets. The bundled real EURUSD file is hourly and the feature engine consumes
1-minute candles, so it is not used for training (see "Not done").

## What the models do
- Input: the last {window} feature vectors (`{feature_version}`, {features} features, oldest first)
  of `features.aggregated.{{symbol}}`, standardised with each symbol's training-slice mean/std.
- Output: P(DOWN), P(FLAT), P(UP) of the close {horizon} minutes later vs the candle's close,
  FLAT within +-{dead_band_pct:.3f}% (relative). The prediction message carries the winning
  class, its raw probability, and its Platt-calibrated probability (`confidence`).
- `lstm/{{symbol}}`: one per symbol. `transformer`: one model for all symbols.

## How they were evaluated
Per symbol, by time, never shuffled across slices: train = first 60% (its last fifth picks the
epoch), calibration = next 20% (Platt fitted here only), test = last 20% (every number below).
Slices are purged by the label horizon. Baselines, fitted on the training slice:
- always-flat: predicts FLAT, with the training class frequencies as probabilities;
- last-direction: predicts the direction of the last completed {horizon}-minute move, with the
  training slice's P(label | last direction) as probabilities.
ECE: 15 equal-width bins of the winning class's probability against whether it was right.

## Results on the test slice
"""


def _row(name: str, m: dict[str, Any]) -> str:
    return (
        f"| {name} | {m['samples']} | {m['model']['accuracy']:.3f} | {m['model']['log_loss']:.4f} "
        f"| {m['always_flat']['accuracy']:.3f} | {m['always_flat']['log_loss']:.4f} "
        f"| {m['last_direction']['accuracy']:.3f} | {m['last_direction']['log_loss']:.4f} "
        f"| {m['ece_raw']:.3f} | {m['ece_calibrated']:.3f} |"
    )


def write_card(models_dir: Path) -> Path:
    manifests = [Manifest.read(p.parent) for p in sorted(models_dir.glob("**/manifest.json"))]
    first = manifests[0]
    text = _INTRO.format(
        window=first.window,
        feature_version=first.feature_version,
        features=len(first.feature_names),
        horizon=first.label["horizon_minutes"],
        dead_band_pct=100 * first.label["dead_band"],
    )
    ranges = max(manifests, key=lambda m: len(m.symbols)).data.get("ranges", {})
    for symbol, r in ranges.items():
        text += f"- {symbol} (UTC): train {r['train']}; calibration {r['calibration']}; test {r['test']}\n"
    text += "\n"
    text += (
        "| model | test samples | accuracy | log-loss | flat acc. | flat log-loss | last-dir acc. "
        "| last-dir log-loss | ECE raw | ECE calibrated |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    verdicts = []
    for m in manifests:
        name = f"{m.model_type} {m.symbols[0]}" if m.model_type == "lstm" else "transformer (all symbols)"
        text += _row(f"{name} `{m.model_version}`", m.metrics) + "\n"
        best = min(m.metrics["always_flat"]["log_loss"], m.metrics["last_direction"]["log_loss"])
        beats = m.metrics["model"]["log_loss"] < best
        verdicts.append(
            f"- {name}: log-loss {m.metrics['model']['log_loss']:.4f} vs best baseline {best:.4f}: "
            + ("**beats both baselines**" if beats else "**does not beat the best naive baseline**")
        )
    text += "\n## Verdict, plainly\n" + "\n".join(verdicts) + "\n"
    text += (
        "\nLog-loss is the score that matters here: it judges the probabilities the signals stage trades on and "
        "punishes confident mistakes. Accuracy can sit above the baselines' while log-loss is worse (a model "
        "that names the more frequent move more often but is over-confident), so read both. Differences of "
        "a few thousandths are within noise on this test slice. On synthetic data whose returns are close to "
        "unpredictable by construction (the regimes' drift is small; volatility clustering says how big a "
        "move is, not its sign), a model that does not beat the baselines is the expected, honest outcome: "
        "do not trade these models; retrain on real data and re-read this card.\n"
    )
    text += (
        "\n## Calibration\n`reliability.png`: confidence (x) vs hit rate (y), 15 bins, grey diagonal = "
        "perfect; blue = transformer raw, orange = transformer after Platt, green = LSTM BTC-USD after "
        "Platt; marker size ~ share of samples. Platt parameters are in each manifest's `calibration` "
        "(read by the signals stage too).\n"
    )
    text += "\n## Files\nPer model directory: `model.onnx` (self-contained, dynamic batch axis), `manifest.json` "
    text += "(sha256, model_version = its first 12 hex digits, features, scaler, window, label, calibration, data "
    text += "ranges, `synthetic: true`, metrics, library versions; mirrored into the ONNX metadata as `kstrade.*`), "
    text += "`reference.npz` (8 test windows and the probabilities PyTorch gave at export; CI checks ONNX against "
    text += (
        "them without torch), `drift_reference.json` (training deciles of each feature, for the metrics stage's PSI "
    )
    text += "drift monitor). `metrics.json`: all metrics, reliability curves, training wall times.\n"
    metrics_path = models_dir / "metrics.json"
    if metrics_path.exists():
        summary = json.loads(metrics_path.read_text())
        text += f"\nTraining: {summary['seconds']} s wall for all four models (`python -m kstrade train`, seed "
        text += f"{summary['options']['seed']}, {summary['options']['threads']} torch threads on CPU).\n"
    text += (
        "\n## Retrain\n`pip install -e '.[train]'` (torch 2.13.0, onnx, onnxscript), then `python -m kstrade train` "
        "(`--seed`, `--days`, `--out`). The same seed gives byte-identical ONNX files; the inference stage "
        "picks a new version up by itself (hot reload) once its `manifest.json` changes.\n"
        "\n## Not done\n- No training on real 1-minute data (none ships; the EURUSD file is hourly).\n"
        "- A single walk-forward fold (train / calibration / test), not a rolling series of folds.\n"
    )
    path = models_dir / "MODEL_CARD.md"
    path.write_text(text)
    return path
