"""`python -m kstrade train --data FILE|eurusd --interval 1h`: the per-symbol LSTMs and the
Transformer trained on candles from a file (REAL market data, e.g. the bundled EURUSD 1h), with
the same splits, baselines, calibration and checks as the SYNTHETIC training (`trainer`), written
beside the 1m models (models/1h/) with their own MODEL_CARD.md. Imports torch: the `train` extra.

The label follows the base interval: the direction of the close 5 candles later (5 hours on 1h
candles), FLAT within +-5 bps; the models see 30 candles (30 hours) of features."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from kstrade.features import BASE_INTERVAL_MS
from kstrade.inference.manifest import Manifest
from kstrade.training import dataset as ds
from kstrade.training import trainer as tr
from kstrade.training.nets import DirectionLSTM, DirectionTransformer

#: Candles ahead the label looks, on any base interval (5 minutes on 1m, as the 1m models).
HORIZON_BARS = 5
EURUSD_SOURCE = (
    "REAL market data: EURUSD 1h ask candles of 2017 (gym-anytrading FOREX_EURUSD_1H_ASK, MIT; "
    "kstrade/data/eurusd_1h_ask.csv)"
)


@dataclass(frozen=True)
class CandleData:
    """Candles to train on and where they came from (the manifests and the card say it)."""

    frame: pl.DataFrame  # open_time_ms, symbol, open, high, low, close, volume
    source: str
    #: REAL (market data: the bundled EURUSD, a download), IMPORTED (your file: market data as far
    #: as its maker says), SYNTHETIC (`data synth`).
    kind: str

    @property
    def real(self) -> bool:
        return self.kind != "SYNTHETIC"


def _provenance(path: Path) -> tuple[str, str]:
    """(kind, words) from a file's or a store's Parquet metadata (`kstrade.data`, `kstrade.synthetic`)."""
    from kstrade.data.store import DATA, SOURCE, CandleStore, read_metadata

    files = CandleStore(path).files(None) if path.is_dir() else [path] if path.suffix == ".parquet" else []
    meta = read_metadata(files[0]) if files else {}
    if meta.get("kstrade.synthetic") == "true":
        return "SYNTHETIC", f"SYNTHETIC candles ({meta.get('kstrade.generator', 'kstrade.ingest.synthetic')}): {path}"
    if meta.get(DATA) == "REAL":
        return "REAL", f"REAL market data from {meta.get(SOURCE, 'a download')}: {path}"
    return "IMPORTED", f"IMPORTED candles (market data as far as the file's maker says): {path}"


def read_training_candles(data: str, symbols: list[str] | None = None) -> CandleData:
    """`eurusd` (the bundled REAL EURUSD 1h), a candle file or a candle store (`data download`)."""
    from kstrade.data.store import read_candles
    from kstrade.ingest.replay import eurusd_1h_candles, normalise

    if data == "eurusd" and not Path(data).exists():
        frame = eurusd_1h_candles()
        kind, source = "REAL", EURUSD_SOURCE
    else:
        frame = normalise(read_candles(Path(data)), what=data)
        kind, source = _provenance(Path(data))
    if symbols:
        missing = sorted(set(symbols) - set(frame["symbol"].unique().to_list()))
        if missing:
            raise ValueError(f"{data} holds no candles of {', '.join(missing)}")
        frame = frame.filter(pl.col("symbol").is_in(symbols))
    return CandleData(frame, source, kind)


def options_for(out: Path, base_interval: str, seed: int = 7) -> tr.TrainOptions:
    """The training options on `base_interval` candles: on 1m those of the SYNTHETIC training; on
    1h, short runs over every window (a year of hourly candles is ~6,000 rows)."""
    if base_interval not in BASE_INTERVAL_MS:
        raise ValueError(f"--interval {base_interval}: models are trained on {' or '.join(BASE_INTERVAL_MS)} candles")
    bar_minutes = BASE_INTERVAL_MS[base_interval] // 60_000
    label = ds.LabelDefinition(horizon_minutes=HORIZON_BARS * bar_minutes, bar_minutes=bar_minutes)
    if base_interval == "1m":
        return tr.TrainOptions(out=out, seed=seed, label=label)
    return tr.TrainOptions(
        out=out, seed=seed, label=label, base_interval=base_interval, lstm_epochs=6, transformer_epochs=6,
        batch_size=64, train_stride=1,
    )  # fmt: skip


def train_on_candles(data: CandleData, opts: tr.TrainOptions) -> list[Manifest]:
    """Train, export, check and score every model on `data`; write metrics.json, the drift
    references and MODEL_CARD.md into `opts.out`. Returns the manifests."""
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    torch.set_num_threads(opts.threads)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()
    frame = data.frame.sort("open_time_ms")
    symbols = frame["symbol"].unique(maintain_order=True).to_list()
    first, last = frame["open_time_ms"].min(), frame["open_time_ms"].max()
    info: dict[str, Any] = {
        "synthetic": data.kind == "SYNTHETIC",
        "real": data.kind == "REAL",
        "kind": data.kind,
        "source": data.source,
        "interval": opts.base_interval,
        "candles": frame.height,
        "first": tr._iso(int(first)),  # type: ignore[arg-type]
        "last": tr._iso(int(last)),  # type: ignore[arg-type]
        "split": "by time per symbol: train 0-60% (last 20% of it for epoch selection), calibration 60-80%, "
        "test 80-100%; slices purged by the label horizon; never shuffled across",
    }
    opts = replace(opts, data_info=info)
    print(f"{data.source}: {frame.height:,} {opts.base_interval} candles of {', '.join(symbols)}", file=sys.stderr)
    series = [ds.symbol_series(frame.filter(pl.col("symbol") == s), s, opts.label, opts.base_interval) for s in symbols]
    features = series[0].features.shape[1]
    manifests: list[Manifest] = []
    for s in series:
        sl = tr._slices([s], opts)
        torch.manual_seed(opts.seed)
        lstm = DirectionLSTM(features, opts.lstm_hidden)
        fit = tr._fit(lstm, *sl.fit, *sl.validation, opts.lstm_epochs, opts, f"lstm {s.symbol}")
        fit["architecture"] = f"LSTM 1 layer, hidden {opts.lstm_hidden}, last step -> linear -> softmax"
        manifest, _ = tr._finish(lstm, "lstm", sl, opts.out / "lstm" / s.symbol, opts, fit)
        manifests.append(manifest)
    sl = tr._slices(series, opts)
    torch.manual_seed(opts.seed)
    transformer = DirectionTransformer(features, opts.window, opts.transformer_d)
    fit = tr._fit(transformer, *sl.fit, *sl.validation, opts.transformer_epochs, opts, "transformer")
    fit["architecture"] = (
        f"Transformer encoder, 2 pre-norm layers, d {opts.transformer_d}, 4 heads, "
        "learned positions, last step -> linear -> softmax"
    )
    manifest, _ = tr._finish(transformer, "transformer", sl, opts.out / "transformer", opts, fit)
    manifests.append(manifest)
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "data": info,
        "models": {
            f"{m.model_type}{'/' + m.symbols[0] if m.model_type == 'lstm' else ''}": {
                "model_version": m.model_version,
                "metrics": m.metrics,
            }
            for m in manifests
        },
    }
    (opts.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    ds.write_drift_references(opts.out, series, opts.split)
    write_candle_card(opts.out, manifests, info, opts)
    print(f"trained {len(manifests)} models in {summary['seconds']} s -> {opts.out}", file=sys.stderr)
    return manifests


def _verdict(metrics: dict[str, Any]) -> str:
    """What the test figures allow one to say, in words (no more than they allow)."""
    intervals = metrics.get("intervals", {})
    margin = intervals.get("log_loss_minus_best_baseline") or [0.0, 0.0]
    blocks = metrics["samples"] / 360
    if margin[1] >= 0:
        return "no edge shown: its log-loss is not below the best naive baseline's within the interval."
    return (
        f"log-loss below the best baseline's within the interval, but on one symbol over one stretch of weeks and "
        f"about {blocks:.0f} bootstrap blocks: too little to call it an edge, and nothing here says it pays "
        "its spread."
    )


def _row(name: str, figures: dict[str, Any]) -> str:
    return f"| {name} | {figures['accuracy']:.4f} | {figures['log_loss']:.4f} |"


def write_candle_card(out: Path, manifests: list[Manifest], info: dict[str, Any], opts: tr.TrainOptions) -> Path:
    """MODEL_CARD.md of models trained on candles from a file: the data (REAL), the label, and
    each model's test figures beside the naive baselines, with bootstrap intervals."""
    kind = info.get("kind", "REAL" if info["real"] else "SYNTHETIC")
    label = manifests[0].label
    lines = [
        f"# Model card: LSTM and Transformer on {kind} {opts.base_interval} candles",
        "",
        f"**Data: {kind}.** {info['source']}: {info['candles']:,} candles, {info['first']} .. {info['last']}.",
        "",
        f"Trained by `python -m kstrade train --data ... --interval {opts.base_interval}`; served by a pipeline "
        f'with `base_interval = "{opts.base_interval}"` (features on {opts.base_interval} candles and the '
        "timeframes built from them; a model is refused features of another base interval).",
        "",
        "## What is predicted",
        f"- {label['target']}: UP above +{label['dead_band']:.4%}, DOWN below -{label['dead_band']:.4%}, FLAT "
        f"between; horizon {label.get('horizon_bars', label['horizon_minutes'])} candles "
        f"({label['horizon_minutes']} minutes).",
        f"- Input: the last {opts.window} feature vectors ({len(manifests[0].feature_names)} features, "
        f"{manifests[0].feature_version}, scaled per symbol on its training slice).",
        f"- Split: {info['split']}.",
        "",
        "## Honest numbers (test slice, never seen in training or calibration)",
        "Hourly FX direction is close to a coin flip: read the intervals, not the point figures. A model that "
        "does not beat the best baseline's log-loss with an interval below zero has shown no edge.",
        "",
    ]
    for m in manifests:
        metrics = m.metrics
        name = m.model_type + (f" {m.symbols[0]}" if m.model_type == "lstm" else f" ({', '.join(m.symbols)})")
        intervals = metrics.get("intervals", {})
        lines += [
            f"### {name} (version {m.model_version})",
            f"Test: {metrics['samples']:,} windows, {', '.join(r['test'] for r in m.data['ranges'].values())}; "
            f"class frequencies DOWN/FLAT/UP {metrics.get('class_frequencies_test')}.",
            "",
            "| forecast | accuracy | log-loss |",
            "|---|---|---|",
            _row("this model", metrics["model"]),
            _row("always FLAT (the training class frequencies as probabilities)", metrics["always_flat"]),
            _row("last direction", metrics["last_direction"]),
            _row("logistic regression on the last vector", metrics["logistic"]),
            "",
            f"- 95% intervals ({intervals.get('method', 'bootstrap')}): log-loss {intervals.get('log_loss')}, "
            f"accuracy {intervals.get('accuracy')}; log-loss minus the best baseline "
            f"({intervals.get('best_baseline')}): {intervals.get('log_loss_minus_best_baseline')}.",
            f"- Calibration: {m.calibration.method} fitted on the calibration slice; ECE raw {metrics.get('ece_raw')}, "
            f"calibrated {metrics.get('ece_calibrated')}.",
            f"- Verdict: {_verdict(metrics)}",
            "",
        ]
    lines += [
        "## Not done",
        "- One year of one symbol: a few thousand test windows at most; no walk-forward retraining.",
        "- Ask prices only (no spread model in training); the backtest's paper broker adds its slippage.",
        "- No claim of profitability: `python -m kstrade backtest --data eurusd` replays the test period "
        "through the whole pipeline and reports what the signals did there.",
        "",
    ]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
