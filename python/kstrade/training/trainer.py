"""`python -m kstrade train`: trains the per-symbol LSTMs and the multi-symbol Transformer on the
bundled SYNTHETIC candles, exports them to ONNX, scores them against naive baselines, fits
a calibrator on a later slice (Platt, or isotonic where it beats Platt: `evaluation.choose_calibration`),
and writes models/ (ONNX, manifest, PyTorch reference outputs, reliability diagram, metrics).
Imports torch: the optional `train` extra."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from torch import nn

from kstrade.features import FEATURE_NAMES, FEATURE_VERSION
from kstrade.inference.manifest import MANIFEST_FORMAT, VERSION_DIGITS, Manifest, Scaler, SymbolScaler, sha256_of
from kstrade.inference.runtime import REFERENCE_FILE, LoadedModel, session_options
from kstrade.ingest import synthetic
from kstrade.progress import ProgressBars
from kstrade.training import dataset as ds
from kstrade.training import evaluation as ev
from kstrade.training import reevaluate
from kstrade.training.card import write_card
from kstrade.training.nets import DirectionLSTM, DirectionTransformer, LastStepLogistic

INPUT_NAME = "x"
OUTPUT_NAME = "probabilities"
MAX_BATCH = 64


@dataclass(frozen=True)
class TrainOptions:
    out: Path = Path("models")
    seed: int = 7
    window: int = 30
    data: ds.DataSpec = field(default_factory=ds.DataSpec)
    label: ds.LabelDefinition = field(default_factory=ds.LabelDefinition)
    split: ds.Split = field(default_factory=ds.Split)
    lstm_hidden: int = 32
    lstm_epochs: int = 4
    logistic_epochs: int = 10
    transformer_d: int = 32
    transformer_epochs: int = 3
    batch_size: int = 256
    train_stride: int = 2  # every other window: neighbours overlap almost entirely anyway
    threads: int = 2
    #: The candles the features are built on (`kstrade.config.BASE_INTERVALS`).
    base_interval: str = "1m"
    #: The manifests' `data` for models trained on candles from a file (`training.on_candles`);
    #: None: the SYNTHETIC market of `data`.
    data_info: dict[str, Any] | None = None


def _batches(n: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)  # shuffling inside the training slice only
    for i in range(0, n, size):
        yield order[i : i + size]


def _fit(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    xv: np.ndarray,
    yv: np.ndarray,
    epochs: int,
    opts: TrainOptions,
    label: str,
) -> dict[str, Any]:
    """Adam on cross-entropy; keeps the epoch with the best log-loss on the validation tail of
    the training slice (never on the calibration or test slices)."""
    generator = torch.Generator().manual_seed(opts.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xvt = torch.from_numpy(xv)
    best: tuple[float, dict[str, torch.Tensor], int] | None = None
    history = []
    columns = (TextColumn("  {task.description:<28}"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
               TimeElapsedColumn(), TextColumn("{task.fields[validation]}"))  # fmt: skip
    with ProgressBars(*columns) as bars:  # on a terminal only (`kstrade.progress`)
        for epoch in range(epochs):
            model.train()
            task = bars.add(f"{label} epoch {epoch + 1}/{epochs}", total=len(x), validation="")
            for idx in _batches(len(x), opts.batch_size, generator):
                optimiser.zero_grad()
                loss = loss_fn(model.logits(xt[idx]), yt[idx])  # type: ignore[operator]
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimiser.step()
                bars.update(task, advance=len(idx))
            model.eval()
            with torch.no_grad():
                pv = torch.cat([model(xvt[i : i + 4096]) for i in range(0, len(xv), 4096)]).numpy()
            val = ev.log_loss(pv, yv)
            bars.update(task, validation=f"validation log-loss {val:.4f}")
            history.append(round(val, 5))
            if best is None or val < best[0]:
                best = (val, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    return {"epochs": epochs, "best_epoch": best[2], "validation_log_loss_by_epoch": history}


def _export(model: nn.Module, example: np.ndarray, path: Path) -> None:
    """Dynamo export with a dynamic batch axis (exported at batch >= 2, as the reference says),
    as one self-contained file: a .data sidecar is folded back in."""
    x = torch.from_numpy(example)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (x,),
            str(raw),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}},
            verbose=False,
        )
        proto = onnx.load(str(raw), load_external_data=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    if any(p.name.endswith(".data") for p in path.parent.iterdir()):
        raise RuntimeError(f"an external-data sidecar was written next to {path}")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _predict(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    out = [session.run(None, {INPUT_NAME: x[i : i + MAX_BATCH]})[0] for i in range(0, len(x), MAX_BATCH)]
    return np.concatenate(out).astype(np.float64)


def _versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "opset": "",  # filled from the exported file
    }


@dataclass
class Slices:
    """Scaled windows of one model's symbols: fit / validation (tail of train) / calibration / test."""

    fit: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    calibration: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray, np.ndarray]  # windows, labels, previous direction
    train_labels_previous: tuple[np.ndarray, np.ndarray]
    scalers: dict[str, ds.Scaler]
    ranges: dict[str, dict[str, str]]
    symbols: list[str]
    #: The true class probabilities of the test windows (planted-edge data), else None.
    truth: np.ndarray | None = None
    #: Per calibration window: ev.FIT / HELD_OUT / PURGED, for the choice of calibrator.
    calibration_parts: np.ndarray | None = None


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(ms / 1000))


def _slices(series: list[ds.SymbolSeries], opts: TrainOptions) -> Slices:
    w, h = opts.window, opts.label.horizon_bars
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("xf", "yf", "xv", "yv", "xc", "yc", "cp", "xt", "yt", "pt", "ytr", "ptr", "tt")
    }
    scalers: dict[str, ds.Scaler] = {}
    ranges: dict[str, dict[str, str]] = {}
    for s in series:
        n = len(s.labels)
        (a0, a1), (b0, b1), (c0, c1) = opts.split.bounds(n)
        scaler = ds.Scaler.fit(s.features[a0:a1])
        scalers[s.symbol] = scaler
        x = scaler.transform(s.features)
        # Purge: a window's label looks h minutes ahead, so no slice ends within h rows of the next.
        v0 = a0 + int((a1 - a0) * 0.8)
        fit_ends = ds.window_ends(s.labels, a0, v0 - h, w, opts.train_stride)
        val_ends = ds.window_ends(s.labels, v0, a1 - h, w)
        cal_ends = ds.window_ends(s.labels, b0, b1 - h, w)
        test_ends = ds.window_ends(s.labels, c0, c1, w)
        parts["xf"].append(ds.gather_windows(x, fit_ends, w))
        parts["yf"].append(s.labels[fit_ends])
        parts["xv"].append(ds.gather_windows(x, val_ends, w))
        parts["yv"].append(s.labels[val_ends])
        parts["xc"].append(ds.gather_windows(x, cal_ends, w))
        parts["yc"].append(s.labels[cal_ends])
        parts["cp"].append(ev.calibration_parts(cal_ends, b0, b1, h))
        parts["xt"].append(ds.gather_windows(x, test_ends, w))
        parts["yt"].append(s.labels[test_ends])
        parts["pt"].append(s.previous[test_ends])
        if s.truth is not None:
            parts["tt"].append(s.truth[test_ends])
        train_ends = ds.window_ends(s.labels, a0, a1 - h, w)
        parts["ytr"].append(s.labels[train_ends])
        parts["ptr"].append(s.previous[train_ends])
        t = s.open_time_ms
        ranges[s.symbol] = {
            "train": f"{_iso(t[a0])} .. {_iso(t[a1 - 1])}",
            "calibration": f"{_iso(t[b0])} .. {_iso(t[b1 - 1])}",
            "test": f"{_iso(t[c0])} .. {_iso(t[c1 - 1])}",
        }
    known = parts.pop("tt")  # the true probabilities: only where the data knows them (SYNTHETIC)
    truth = np.concatenate(known) if all(s.truth is not None for s in series) else None
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Slices(
        (cat["xf"], cat["yf"]),
        (cat["xv"], cat["yv"]),
        (cat["xc"], cat["yc"]),
        (cat["xt"], cat["yt"], cat["pt"]),
        (cat["ytr"], cat["ptr"]),
        scalers,
        ranges,
        [s.symbol for s in series],
        truth,
        cat["cp"],
    )


def _logistic(sl: Slices, opts: TrainOptions) -> np.ndarray:
    """The logistic baseline's probabilities on the test windows, fitted as the models are."""
    torch.manual_seed(opts.seed)
    model = LastStepLogistic(sl.test[0].shape[2])
    _fit(model, *sl.fit, *sl.validation, opts.logistic_epochs, opts, "logistic baseline")
    with torch.no_grad():
        return torch.cat(
            [model(torch.from_numpy(sl.test[0][i : i + 4096])) for i in range(0, len(sl.test[0]), 4096)]
        ).numpy()


def _score(
    session: ort.InferenceSession, sl: Slices, logistic: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any], dict[str, ev.ReliabilityCurve]]:
    """Metrics on the test slice, baselines beside them (and the Bayes ceiling where the truth
    is known); the calibrator (Platt, or isotonic where it beats Platt) fitted on the calibration
    slice."""
    xc, yc = sl.calibration
    xt, yt, prev = sl.test
    pc, pt = _predict(session, xc), _predict(session, xt)
    parts = sl.calibration_parts if sl.calibration_parts is not None else np.zeros(len(yc), dtype=np.int8)
    choice = ev.choose_calibration(pc.max(axis=1), np.argmax(pc, axis=1) == yc, parts)
    ytr, ptr = sl.train_labels_previous
    freq = ev.class_frequencies(ytr)
    flat = ev.always_flat(yt, freq)
    has_prev = prev >= 0
    last = ev.last_direction(np.where(has_prev, prev, 1), freq, ptr, ytr)
    winner = pt.max(axis=1)
    correct = np.argmax(pt, axis=1) == yt
    calibrated = ev.calibrate(choice.calibrator, winner)
    metrics = {
        "slice": "test (last 20% of each symbol's rows, after calibration)",
        "samples": len(yt),
        "class_frequencies_test": [round(float(v), 4) for v in ev.class_frequencies(yt)],
        "model": {"accuracy": round(ev.accuracy(pt, yt), 4), "log_loss": round(ev.log_loss(pt, yt), 4)},
        "always_flat": {"accuracy": round(float(np.mean(yt == 1)), 4), "log_loss": round(ev.log_loss(flat, yt), 4)},
        "last_direction": {
            "accuracy": round(float(np.mean(np.where(has_prev, prev, 1) == yt)), 4),
            "log_loss": round(ev.log_loss(last, yt), 4),
        },
        "logistic": {"accuracy": round(ev.accuracy(logistic, yt), 4), "log_loss": round(ev.log_loss(logistic, yt), 4)},
        "brier": round(ev.brier(pt, yt), 4),
        "ece_raw": round(ev.ece(winner, correct), 4),
        "ece_calibrated": round(ev.ece(calibrated, correct), 4),
        "ece_note": "ECE (15 bins) of the winning class's probability vs whether it was right",
        "mean_confidence_calibrated": round(float(calibrated.mean()), 4),
    }
    metrics["beats_always_flat"] = bool(metrics["model"]["log_loss"] < metrics["always_flat"]["log_loss"])
    metrics["beats_last_direction"] = bool(metrics["model"]["log_loss"] < metrics["last_direction"]["log_loss"])
    metrics["beats_logistic"] = bool(metrics["model"]["log_loss"] < metrics["logistic"]["log_loss"])
    # 95% intervals (block bootstrap): the figures, and the model's margin over the best baseline.
    model_loss = ev.per_row_log_loss(pt, yt)
    baselines = {"always_flat": flat, "last_direction": last, "logistic": logistic}
    best = min(baselines, key=lambda k: metrics[k]["log_loss"])
    margin = model_loss - ev.per_row_log_loss(baselines[best], yt)
    metrics["intervals"] = {
        "method": f"circular block bootstrap, {ev.BOOTSTRAP_BLOCK}-row blocks, {ev.BOOTSTRAP_RESAMPLES} resamples, 95%",
        "log_loss": [round(v, 4) for v in ev.interval(model_loss)],
        "accuracy": [round(v, 4) for v in ev.interval((np.argmax(pt, axis=1) == yt).astype(float))],
        "best_baseline": best,
        "log_loss_minus_best_baseline": [round(v, 4) for v in ev.interval(margin)],
    }
    truth = sl.truth
    if truth is not None:  # the planted-edge market: how good could any model be?
        chosen = truth[np.arange(len(yt)), np.argmax(pt, axis=1)]
        metrics["bayes_ceiling"] = {
            "accuracy": round(ev.accuracy(truth, yt), 4),
            "log_loss": round(ev.log_loss(truth, yt), 4),
            "note": "the true class probabilities as the forecast: no model can do better on average",
        }
        metrics["brier_vs_truth"] = round(ev.brier(pt, truth), 4)
        gap = (np.argmax(truth, axis=1) == yt).astype(float) - (np.argmax(pt, axis=1) == yt).astype(float)
        metrics["intervals"]["accuracy_below_bayes"] = [round(v, 4) for v in ev.interval(gap)]
        metrics["ece_calibrated_vs_truth"] = round(ev.ece_against_truth(calibrated, chosen), 4)
    fit = {
        "method": choice.spec["method"],
        "on": "calibration slice (60-80% of each symbol's rows)",
        "samples": len(yc),
        "spec": choice.spec,
        "platt": {"a": choice.platt.a, "b": choice.platt.b},  # on the whole slice, chosen or not
        "selection": choice.selection,
    }
    curves = {
        "raw": ev.reliability_curve(winner, correct),
        "calibrated": ev.reliability_curve(calibrated, correct),
    }
    return metrics, fit, curves


def _finish(
    model: nn.Module, model_type: str, sl: Slices, directory: Path, opts: TrainOptions, training: dict[str, Any]
) -> tuple[Manifest, dict[str, ev.ReliabilityCurve]]:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    path = directory / "model.onnx"
    xt = sl.test[0]
    _export(model, xt[:2], path)
    session = _session(path)
    metrics, fit, curves = _score(session, sl, _logistic(sl, opts))
    versions = _versions()
    proto = onnx.load(str(path))
    versions["opset"] = str(max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))
    # Reference: PyTorch's answers on a few test windows, stored for the torch-free CI check.
    rng = np.random.default_rng(opts.seed)
    pick = np.sort(rng.choice(len(xt), size=8, replace=False))
    with torch.no_grad():
        expected = model(torch.from_numpy(xt[pick])).numpy()
    np.savez(directory / REFERENCE_FILE, x=xt[pick], probabilities=expected)
    calibration = fit.pop("spec")  # what the signals stage applies; `calibration_fit` says how it was chosen

    body: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "model_type": model_type,
        "symbols": sl.symbols,
        "file": path.name,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "classes": list(ds.CLASSES),
        "window": opts.window,
        "timeframe": opts.base_interval,
        **ds.feature_contract(opts.base_interval),
        "scaler": Scaler(per_symbol={s: SymbolScaler(**sc.as_dict()) for s, sc in sl.scalers.items()}).model_dump(),
        "label": opts.label.as_dict(),
        "calibration": calibration,
        "calibration_fit": fit,
        "data": {**opts.data_info, "ranges": sl.ranges}
        if opts.data_info  # candles from a file (`training.on_candles`)
        else {
            "synthetic": True,
            "source": f"SYNTHETIC 1m candles, {synthetic.generator(opts.data.market)}, seed {opts.data.seed}, "
            f"{opts.data.days} days from {opts.data.start:%Y-%m-%d}: not market data",
            "ranges": sl.ranges,
            "split": "by time per symbol: train 0-60% (last 20% of it for epoch selection), "
            "calibration 60-80%, test 80-100%; slices purged by the label horizon; never shuffled across",
        },
        "metrics": metrics,
        "training": {
            **training,
            "seed": opts.seed,
            "window": opts.window,
            "batch_size": opts.batch_size,
            "train_stride": opts.train_stride,
            "threads": opts.threads,
        },
        "versions": versions,
    }
    # Mirror the manifest (less what depends on the file's own bytes) into the ONNX metadata.
    del proto.metadata_props[:]
    for key, value in body.items():
        entry = proto.metadata_props.add()
        entry.key = f"kstrade.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    sha = sha256_of(path)
    manifest = Manifest.model_validate({**body, "sha256": sha, "model_version": sha[:VERSION_DIGITS]})
    manifest.write(directory)
    # The same checks the inference stage runs, now: sha256, features, shapes, and ONNX against
    # PyTorch on the reference windows. A model that fails them is never left in models/.
    LoadedModel.load(directory, base_interval=opts.base_interval)
    return manifest, curves


def _fresh(opts: TrainOptions) -> list[dict[str, Any]]:
    """The exported models on fresh periods and seeds (`reevaluate.FRESH_SEEDS`), torch-free:
    what the card's one test slice does not show."""
    out = []
    for seed in reevaluate.FRESH_SEEDS:
        data = replace(opts.data, seed=seed, start=reevaluate.FRESH_START, days=reevaluate.FRESH_DAYS)
        scores = reevaluate.fresh_scores(opts.out, data, opts.label)  # each model run once per period
        checks = {(c.model, c.figure): c for c in reevaluate.checks(scores)}
        models = []
        for f in scores:
            models.append({
                "model": f.model, "samples": f.samples, "log_loss": round(f.log_loss, 4),
                "accuracy": round(f.accuracy, 4), "constant_log_loss": round(f.constant_log_loss, 4),
                "log_loss_holds": checks[(f.model, "log_loss")].holds,
                "accuracy_holds": checks[(f.model, "accuracy")].holds,
            })  # fmt: skip
        out.append({"seed": seed, "start": f"{reevaluate.FRESH_START:%Y-%m-%d}", "days": reevaluate.FRESH_DAYS,
                    "models": models})  # fmt: skip
    return out


def train(opts: TrainOptions) -> list[Manifest]:
    """The whole `train` command; returns the manifests written."""
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    torch.set_num_threads(opts.threads)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()
    print(
        f"features {FEATURE_VERSION} ({len(FEATURE_NAMES)}) on SYNTHETIC candles: "
        f"{', '.join(opts.data.symbols)}, {opts.data.days} days, seed {opts.data.seed}",
        file=sys.stderr,
    )
    series = ds.load_series(opts.data, opts.label)
    features = len(FEATURE_NAMES)
    manifests: list[Manifest] = []
    curves: dict[str, ev.ReliabilityCurve] = {}
    # Wall times go to metrics.json, not the manifests: the same seed must give the same bytes.
    seconds: dict[str, float] = {}
    for s in series:
        sl = _slices([s], opts)
        torch.manual_seed(opts.seed)
        lstm = DirectionLSTM(features, opts.lstm_hidden)
        t0 = time.monotonic()
        info = _fit(lstm, *sl.fit, *sl.validation, opts.lstm_epochs, opts, f"lstm {s.symbol}")
        seconds[f"lstm/{s.symbol}"] = round(time.monotonic() - t0, 1)
        info["architecture"] = f"LSTM 1 layer, hidden {opts.lstm_hidden}, last step -> linear -> softmax"
        m, c = _finish(lstm, "lstm", sl, opts.out / "lstm" / s.symbol, opts, info)
        manifests.append(m)
        curves[f"lstm {s.symbol}"] = c["calibrated"]
        print(f"  lstm {s.symbol}: {m.model_version} {json.dumps(m.metrics['model'])}", file=sys.stderr)
    sl = _slices(series, opts)
    torch.manual_seed(opts.seed)
    transformer = DirectionTransformer(features, opts.window, opts.transformer_d)
    t0 = time.monotonic()
    info = _fit(transformer, *sl.fit, *sl.validation, opts.transformer_epochs, opts, "transformer")
    seconds["transformer"] = round(time.monotonic() - t0, 1)
    info["architecture"] = (
        f"Transformer encoder, 2 pre-norm layers, d {opts.transformer_d}, 4 heads, "
        "learned positions, last step -> linear -> softmax"
    )
    m, c = _finish(transformer, "transformer", sl, opts.out / "transformer", opts, info)
    manifests.append(m)
    curves["transformer (raw)"] = c["raw"]
    curves["transformer"] = c["calibrated"]
    # The diagram: the transformer before and after its calibrator, and the first LSTM after its own.
    shown = {
        "transformer, raw": curves["transformer (raw)"],
        f"transformer, {m.calibration.method}-calibrated": curves["transformer"],
    }
    lstm_first = manifests[0] if manifests[0].model_type == "lstm" else None
    if lstm_first is not None:
        shown[f"LSTM {lstm_first.symbols[0]}, {lstm_first.calibration.method}-calibrated"] = curves[
            f"lstm {lstm_first.symbols[0]}"
        ]
    ev.reliability_png(
        shown, opts.out / "reliability.png", f"Reliability on the test slice ({opts.data.market} market)"
    )
    summary = {
        "seconds": round(time.monotonic() - started, 1),
        "training_seconds": seconds,
        "options": json.loads(json.dumps(asdict(opts), default=str)),
        "models": {
            f"{m.model_type}{'/' + m.symbols[0] if m.model_type == 'lstm' else ''}": {
                "model_version": m.model_version,
                "metrics": m.metrics,
            }
            for m in manifests
        },
        "reliability_png_series": dict(zip(("blue", "orange", "green"), shown, strict=False)),
        "reliability_curves": {k: asdict(v) for k, v in curves.items()},
    }
    summary["fresh"] = _fresh(opts)
    (opts.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    ds.write_drift_references(opts.out, series, opts.split)
    write_card(opts.out)
    print(f"trained {len(manifests)} models in {summary['seconds']} s -> {opts.out}", file=sys.stderr)
    return manifests
