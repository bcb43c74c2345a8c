"""models/MODEL_CARD.md, written from the manifests so its numbers are always the shipped
models' numbers, with the verdict against the naive baselines stated plainly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kstrade.inference.manifest import Manifest, manifest_paths

_INTRO = """# kstrade models: model card

**Data: SYNTHETIC.** Every model here was trained and evaluated on seeded synthetic 1-minute
candles from {market}. It is not market data; nothing below says anything about real markets,
which are much harder. The bundled real EURUSD file is hourly and the feature engine consumes
1-minute candles, so it is not used for training (see "Not done").
{market_note}
## What the models do
- Input: the last {window} feature vectors (`{feature_version}`, {features} features, oldest first)
  of `features.aggregated.{{symbol}}`, standardised with each symbol's training-slice mean/std.
- Output: P(DOWN), P(FLAT), P(UP) of the close {horizon} minutes later vs the candle's close,
  FLAT within +-{dead_band_pct:.3f}% (relative). The prediction message carries the winning
  class, its raw probability, and its calibrated probability (`confidence`).
- `lstm/{{symbol}}`: one per symbol. `transformer`: one model for all symbols.

## How they were evaluated
Per symbol, by time, never shuffled across slices: train = first 60% (its last fifth picks the
epoch), calibration = next 20% (the calibrator fitted here only), test = last 20% (every number below).
Slices are purged by the label horizon. Baselines, fitted on the training slice:
- always-flat: predicts FLAT, with the training class frequencies as probabilities;
- last-direction: predicts the direction of the last completed {horizon}-minute move, with the
  training slice's P(label | last direction) as probabilities;
- logistic: a multinomial logistic regression on the window's last feature vector, fitted on the
  training slice as the models are.
ECE: 15 equal-width bins of the winning class's probability against whether it was right.
Where the data knows the truth (the planted-edge market), the **Bayes ceiling** is the score of
the true class probabilities themselves (no model can do better on average), and calibration is
also measured against the true probability of the class each prediction names ("ECE vs truth",
free of the sampling noise of outcomes). Brier: multi-class, against the outcomes and against the
true probabilities.

## Results on the test slice
"""


def _row(name: str, m: dict[str, Any]) -> str:
    logistic = m.get("logistic")
    logistic_cells = f"{logistic['accuracy']:.3f} | {logistic['log_loss']:.4f}" if logistic else "- | -"
    return (
        f"| {name} | {m['samples']} | {m['model']['accuracy']:.3f} | {m['model']['log_loss']:.4f} "
        f"| {m['always_flat']['accuracy']:.3f} | {m['always_flat']['log_loss']:.4f} "
        f"| {m['last_direction']['accuracy']:.3f} | {m['last_direction']['log_loss']:.4f} "
        f"| {logistic_cells} | {m['ece_raw']:.3f} | {m['ece_calibrated']:.3f} |"
    )


_EDGE_NOTE = """
The market (`kstrade.ingest.planted`, the default of `run`, `backtest` and `train`) has a planted,
documented edge: a latent state switches slowly between a range (prices revert to where it began)
and up or down trends (a drift of {drift} of a minute's volatility per minute), with volatility
higher in trends. The features can see it, so the models can learn it; its parameters are in the
generated file's metadata, and the generator writes the true probability of every label class.
The other market (`--market control`: GARCH(1,1) volatility with Student-t shocks and nearly no
drift) is close to unpredictable by construction: a model that beats the baselines there would be
a bug, not a skill.
"""


def _truth_row(name: str, m: dict[str, Any]) -> str:
    bayes = m["bayes_ceiling"]
    return (
        f"| {name} | {m['model']['accuracy']:.3f} | {bayes['accuracy']:.3f} | {m['model']['log_loss']:.4f} "
        f"| {bayes['log_loss']:.4f} | {m['brier']:.4f} | {m['brier_vs_truth']:.4f} "
        f"| {m['ece_calibrated']:.3f} | {m['ece_calibrated_vs_truth']:.3f} |"
    )


def _span(pair: list[float], scale: float = 1.0, digits: int = 4) -> str:
    return f"[{pair[0] * scale:.{digits}f}, {pair[1] * scale:.{digits}f}]"


def _verdict(name: str, m: dict[str, Any], best_name: str, best: float) -> str:
    """One model's verdict: against the best baseline by the 95% interval of the log-loss
    margin (indistinguishable where it covers 0), and its distance to the Bayes ceiling."""
    loss = m["model"]["log_loss"]
    intervals = m.get("intervals")
    if intervals is None:  # a card written before intervals: the point estimates only
        beats = loss < best
        text = f"- {name}: log-loss {loss:.4f} vs the best baseline ({best_name}) {best:.4f}: " + (
            "**beats every baseline**" if beats else "**does not beat the best baseline**"
        )
    else:
        lo, hi = intervals["log_loss_minus_best_baseline"]
        if hi < 0:
            word = "**beats every baseline**"
        elif lo > 0:
            word = "**is worse than the best baseline**"
        else:
            word = "**indistinguishable from the best baseline** (the interval covers 0)"
        text = (
            f"- {name}: log-loss {loss:.4f} {_span(intervals['log_loss'])}; minus the best baseline ({best_name}, "
            f"{best:.4f}): {loss - best:+.4f} {_span(intervals['log_loss_minus_best_baseline'])}: {word}"
        )
    if "bayes_ceiling" in m:
        gap = m["bayes_ceiling"]["accuracy"] - m["model"]["accuracy"]
        text += f"; accuracy {gap * 100:.1f} points below the Bayes ceiling"
        if intervals is not None and "accuracy_below_bayes" in intervals:
            text += f" {_span(intervals['accuracy_below_bayes'], 100, 1)}"
    return text


def _fresh_section(models_dir: Path) -> str:
    """The models on fresh periods and seeds (metrics.json "fresh"), plainly."""
    path = models_dir / "metrics.json"
    fresh = json.loads(path.read_text()).get("fresh") if path.exists() else None
    if not fresh:
        return ""
    text = (
        "\n## On data the models never saw\n"
        f"Each model on {len(fresh)} fresh SYNTHETIC periods ({fresh[0]['days']} days from {fresh[0]['start']}, "
        f"seeds {', '.join(str(f['seed']) for f in fresh)}; `python -m kstrade train --evaluate --seed N` "
        "repeats one): its log-loss, and the log-loss of the best constant forecast of that period (its own "
        "class frequencies). *In interval*: of the figures (log-loss, accuracy), how many fall in the card's "
        "95% interval widened for a replicate (x sqrt 2).\n\n"
        "| model | fresh log-loss (min - max) | constant (min - max) | beats the constant | in interval |\n"
        "|---|---|---|---|---|\n"
    )
    names = [m["model"] for m in fresh[0]["models"]]
    inside = total = 0
    for name in names:
        rows = [m for f in fresh for m in f["models"] if m["model"] == name]
        losses = [r["log_loss"] for r in rows]
        constants = [r["constant_log_loss"] for r in rows]
        beats = sum(r["log_loss"] < r["constant_log_loss"] for r in rows)
        held = sum(r["log_loss_holds"] + r["accuracy_holds"] for r in rows)
        inside, total = inside + held, total + 2 * len(rows)
        text += (
            f"| {name} | {min(losses):.4f} - {max(losses):.4f} | {min(constants):.4f} - {max(constants):.4f} "
            f"| {beats} of {len(rows)} | {held} of {2 * len(rows)} |\n"
        )
    text += (
        f"\n{inside} of {total} figures fall in the card's replicate intervals. "
        + (
            "The intervals above are of one test slice, and periods differ more than its hours do (how much of "
            "a period trends decides how predictable it is): read them as a lower bound on the uncertainty."
            if inside < total
            else "The card's intervals hold on fresh data."
        )
        + "\n"
    )
    return text


def write_card(models_dir: Path) -> Path:
    manifests = [Manifest.read(p.parent) for p in manifest_paths(models_dir)]
    first = manifests[0]
    source = str(first.data.get("source", ""))
    edge = "planted_edge" in source
    from kstrade.ingest import planted

    text = _INTRO.format(
        market="the planted-edge market" if edge else "the control market (`kstrade.ingest.synthetic`)",
        market_note=_EDGE_NOTE.format(drift=planted.DRIFT) if edge else "",
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
        "| last-dir log-loss | logistic acc. | logistic log-loss | ECE raw | ECE calibrated |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    verdicts = []
    names = {}
    for m in manifests:
        name = names[m.model_version] = (
            f"{m.model_type} {m.symbols[0]}" if m.model_type == "lstm" else "transformer (all symbols)"
        )
        text += _row(f"{name} `{m.model_version}`", m.metrics) + "\n"
        baselines = {"always-flat": m.metrics["always_flat"], "last-direction": m.metrics["last_direction"]}
        if "logistic" in m.metrics:
            baselines["logistic"] = m.metrics["logistic"]
        best_name = min(baselines, key=lambda k: baselines[k]["log_loss"])
        best = baselines[best_name]["log_loss"]
        verdicts.append(_verdict(name, m.metrics, best_name.replace("_", "-"), best))
    if all("bayes_ceiling" in m.metrics for m in manifests):
        text += (
            "\nAgainst the truth (the same test slice):\n\n| model | accuracy | Bayes accuracy | log-loss "
            "| Bayes log-loss | Brier | Brier vs truth | ECE calibrated | ECE calibrated vs truth |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
        )
        for m in manifests:
            text += _truth_row(names[m.model_version], m.metrics) + "\n"
    text += "\n## Verdict, plainly\n" + "\n".join(verdicts) + "\n"
    text += (
        "\nLog-loss is the score that matters here: it judges the probabilities the signals stage trades on and "
        "punishes confident mistakes. Accuracy can sit above the baselines' while log-loss is worse (a model "
        "that names the more frequent move more often but is over-confident), so read both. Differences of "
        "a few thousandths are within noise: the brackets are 95% intervals (a circular block bootstrap of "
        "hour-long blocks of the test slice, so overlapping labels are not counted as independent). "
        + (
            "These models were trained on a market with a planted edge: that they find it shows the pipeline "
            "works end to end, not that they would find anything in a real market. Do not trade them; "
            "retrain on real data and re-read this card.\n"
            if edge
            else "On synthetic data whose returns are close to unpredictable by construction, a model that does "
            "not beat the baselines is the expected, honest outcome: do not trade these models; retrain on "
            "real data and re-read this card.\n"
        )
    )
    text += _fresh_section(models_dir)
    text += (
        "\n## Calibration\nEach model's calibrator maps its winning class's probability to the confidence the "
        "signals stage trades on: Platt scaling, or isotonic regression (scikit-learn) where that beats Platt. "
        "Both are fitted on the earlier two thirds of each symbol's calibration rows and scored on the last "
        "third by the log-loss of whether the winner was right; isotonic is kept only where the 95% "
        "block-bootstrap interval of Platt's loss minus its own lies above zero, then refitted on the whole "
        "slice (log-loss, a proper score, rather than ECE, whose bins can call a constant forecast perfect). "
        "The chosen calibrator is each manifest's `calibration` (read by the signals stage too); "
        "`calibration_fit.selection` holds both losses and the interval.\n"
        + "".join(f"- {names[m.model_version]}: {m.calibration.method}\n" for m in manifests)
        + "\n`reliability.png`: stated confidence (x) vs hit rate (y), 15 bins, the diagonal = perfect; the "
        "transformer before and after its calibrator and the first LSTM after its own (the legend names "
        "each, with its ECE); marker area ~ share of samples.\n"
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
        "(`--seed`, `--days`, `--market`, `--out`). The same seed gives byte-identical ONNX files; the inference stage "
        "picks a new version up by itself (hot reload) once its `manifest.json` changes.\n"
        "\n## Not done\n- No training on real 1-minute data (none ships; the EURUSD file is hourly).\n"
        "- A single walk-forward fold (train / calibration / test), not a rolling series of folds; the "
        "intervals are of this one test slice.\n"
        "- A prediction carries only its winning class and that class's probability; the signals stage splits "
        "the rest evenly between the other two classes (not the model's own distribution).\n"
    )
    path = models_dir / "MODEL_CARD.md"
    path.write_text(text)
    return path
