"""The inference stages: `features.aggregated.{symbol}` in, one prediction per feature vector out
(`predictions.lstm.{symbol}` from the symbol's LSTM, `predictions.transformer` from the shared
Transformer), each stage in its own consumer group. Models reload while the stream runs.

A prediction needs a whole window of vectors (30 for the shipped models). With a `state_dir`,
each symbol's window is checkpointed before every commit (one JSON file per stage, written
atomically) and restored at start, so a restarted worker predicts from its first vector instead
of staying silent for 29 per symbol. A vector at or before a window's newest (redelivered after
a crash between checkpoint and commit) was already predicted: it is skipped, as any repeat is.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from kstrade.bus import Batch, Bus, MessageError, Output, Record
from kstrade.bus.topics import METRICS_ALERTS, PREDICTIONS_TRANSFORMER, features_aggregated, predictions_lstm
from kstrade.clock import EPOCH
from kstrade.codes import AlertCode, DeadLetter, ModelRefusal
from kstrade.config import Settings
from kstrade.inference.manifest import ModelRefused, resolved_models_dir
from kstrade.inference.runtime import LoadedModel
from kstrade.schemas.models import (
    Alert,
    FeatureVector,
    ModelType,
    PredictedDirection,
    Prediction,
    PredictionOutput,
    Severity,
)
from kstrade.stage import Stage, save_state

#: Fewer vectors than this in a poll go the record-at-a-time way (live, usually one per symbol).
_BATCH_FROM = 8

_DIRECTIONS = (PredictedDirection.DOWN, PredictedDirection.FLAT, PredictedDirection.UP)

log = logging.getLogger(__name__)


class FeatureWindow:
    """One symbol's last `length` feature vectors, oldest first, in a preallocated array.

    Every vector is written twice, at `i` and `i + length` of a buffer twice the window's
    length, so the window is always one contiguous slice of it (`rows`): a push writes one row
    instead of shifting the whole window."""

    def __init__(self, length: int, features: int) -> None:
        self._buffer = np.zeros((2 * length, features), dtype=np.float32)
        self.length = length
        self._head = 0  # where the next vector goes; the window starts there
        self.count = 0
        self.last_time_us = -1

    @property
    def rows(self) -> np.ndarray:
        """The window, oldest first: a view into the buffer (valid until the next push)."""
        return self._buffer[self._head : self._head + self.length]

    def push(self, time_us: int, values: np.ndarray) -> bool:
        """Appends the vector of a newer candle; False for a candle already seen (a redelivery
        after a rebalance): it must neither enter the window twice nor be predicted twice."""
        if time_us <= self.last_time_us:
            return False
        head = self._head
        self._buffer[head] = values
        self._buffer[head + self.length] = values
        self._head = head + 1 if head + 1 < self.length else 0
        self.count = min(self.count + 1, self.length)
        self.last_time_us = time_us
        return True

    @property
    def full(self) -> bool:
        return self.count == self.length

    def snapshot(self) -> dict[str, object]:
        """The window as plain data (the rows as base64 of their float32 bytes: exact)."""
        rows = self.rows
        return {
            "shape": list(rows.shape),
            "count": self.count,
            "last_time_us": self.last_time_us,
            "rows": base64.b64encode(rows.tobytes()).decode("ascii"),
        }

    def restore(self, state: dict[str, object]) -> bool:
        """Takes a snapshot back into the preallocated array; False (window left empty) when
        its shape is not this window's: the model's window or feature count changed."""
        if state["shape"] != list(self.rows.shape):
            return False
        rows = np.frombuffer(base64.b64decode(str(state["rows"])), dtype=np.float32).reshape(self.rows.shape)
        self._head = 0
        self._buffer[: self.length] = rows
        self._buffer[self.length :] = rows
        self.count = int(str(state["count"]))
        self.last_time_us = int(str(state["last_time_us"]))
        return True

    def scaled_into(self, mean: np.ndarray, inv_std: np.ndarray, out: np.ndarray) -> np.ndarray:
        rows = self.rows
        np.subtract(rows, mean, out=out[0])
        np.multiply(out[0], inv_std, out=out[0])
        return out


class _BatchHistory:
    """What the windows of a batch's symbols hold, told as it goes (`before` the first push of a
    symbol, then every push), so that every full window of the batch can be cut out of one array
    at the end (`rows`): per symbol, its window before the batch, then its vectors of the batch."""

    def __init__(self, windows: dict[str, FeatureWindow]) -> None:
        self._windows = windows
        self._start: dict[str, np.ndarray] = {}  # per symbol: its window's rows before the batch
        self._pushed: dict[str, list[int]] = {}  # per symbol: rows of the decoded vectors pushed
        self._full: list[tuple[str, int]] = []  # per full window, in order: symbol, its pushes so far

    def before(self, symbol: str, window: FeatureWindow) -> None:
        if symbol not in self._start:
            self._start[symbol] = window.rows.copy()
            self._pushed[symbol] = []

    def pushed(self, symbol: str, row: int, full: bool) -> None:
        pushed = self._pushed[symbol]
        pushed.append(row)
        if full:
            self._full.append((symbol, len(pushed)))

    def rows(self, vectors: np.ndarray) -> tuple[np.ndarray, dict[str, slice], list[int]]:
        """One array of every symbol's rows (window before the batch, then its pushes), where
        each symbol's rows lie in it, and for each full window, in order, where its newest row
        lies in it."""
        parts: list[np.ndarray] = []
        blocks: dict[str, slice] = {}
        at = 0
        for symbol, start in self._start.items():
            pushed = self._pushed[symbol]
            parts += [start, vectors[pushed]]
            blocks[symbol] = slice(at, at + len(start) + len(pushed))
            at += len(start) + len(pushed)
        # The newest row before the batch is the last of the window it started with.
        ends = [blocks[symbol].start + len(self._start[symbol]) - 1 + n for symbol, n in self._full]
        return np.concatenate(parts), blocks, ends


def _manifest_stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What a new version changes: the manifest and the ONNX files beside it (name, mtime, size)."""
    stamp = []
    for path in sorted(directory.glob("*")):
        if path.name == "manifest.json" or path.suffix == ".onnx":
            try:
                st = path.stat()
            except OSError:
                continue
            stamp.append((path.name, st.st_mtime_ns, st.st_size))
    return tuple(stamp)


class ModelSlot:
    """The one reference through which a model serves, and its reload: the candidate is loaded,
    checked and warmed up on a background thread; the stage swaps it in between two records."""

    def __init__(self, directory: Path, executor: ThreadPoolExecutor, base_interval: str = "1m") -> None:
        self.directory = directory
        self.base_interval = base_interval
        # At start-up a refusal is fatal, by design.
        self.model = LoadedModel.load(directory, base_interval=base_interval)
        self._executor = executor
        self._stamp = _manifest_stamp(directory)
        self._pending: Future[LoadedModel] | None = None
        # request() may come from another thread (an operator, a control message); settle()
        # runs on the stage's thread. The lock keeps one load in flight at a time.
        self._lock = threading.Lock()

    def poll_files(self) -> None:
        """Starts a background load if the directory changed since the last look."""
        stamp = _manifest_stamp(self.directory)
        if stamp != self._stamp and not self.pending:
            self._stamp = stamp
            self.request()

    def request(self) -> None:
        with self._lock:
            if self._pending is None:
                self._pending = self._executor.submit(
                    LoadedModel.load, self.directory, base_interval=self.base_interval
                )

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def wait(self, timeout: float = 60.0) -> None:
        """Blocks until a requested load finished (tests, and a clean shutdown)."""
        if self._pending is not None:
            self._pending.exception(timeout)

    def settle(self) -> tuple[LoadedModel, LoadedModel] | ModelRefused | None:
        """If the background load finished: swap and return (old, new), or return why it was
        refused (the old model keeps serving). None while nothing finished."""
        with self._lock:
            pending = self._pending
            if pending is None or not pending.done():
                return None
            self._pending = None
        try:
            candidate = pending.result()
        except ModelRefused as exc:
            return exc
        except Exception as exc:  # anything else a broken file can raise: refused all the same
            return ModelRefused(ModelRefusal.MODEL_UNLOADABLE, f"{self.directory}: {exc!r}")
        old = self.model
        if candidate.manifest == old.manifest:
            return None  # the same model again (e.g. a file touched or restored): nothing to swap
        if candidate.window != old.window:
            return ModelRefused(
                ModelRefusal.WINDOW_MISMATCH,
                f"{self.directory}: window {candidate.window}, the running model's is {old.window}",
            )
        missing = set(old.scalers) - set(candidate.scalers)
        if missing:
            return ModelRefused(
                ModelRefusal.UNKNOWN_SYMBOL, f"{self.directory}: no scaler for {', '.join(sorted(missing))}"
            )
        self.model = candidate  # the swap: one reference; the next record uses the new model
        return old, candidate


class InferenceStage(Stage):
    """Shared by both model types; subclasses say which models serve which symbols."""

    model_type: ClassVar[ModelType]

    STATE_VERSION = 1

    def __init__(
        self,
        models_dir: Path,
        symbols: Sequence[str],
        *,
        reload_check_seconds: float = 2.0,
        state_dir: Path | None = None,
        base_interval: str = "1m",
    ) -> None:
        super().__init__()
        self.symbols = list(symbols)
        #: The candles the features come from: a model trained on another interval is refused.
        self.base_interval = base_interval
        self.reload_check_seconds = reload_check_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-reload")
        self.slots: dict[str, ModelSlot] = self._slots(models_dir)
        self._windows: dict[str, FeatureWindow] = {}
        self._inputs: dict[str, np.ndarray] = {}
        for symbol, slot in self.slots.items():
            model = slot.model
            if symbol not in model.scalers:
                raise ModelRefused(
                    ModelRefusal.UNKNOWN_SYMBOL, f"{slot.directory}: the model was not trained for {symbol}"
                )
            self._windows[symbol] = FeatureWindow(model.window, len(model.manifest.feature_names))
            self._inputs[symbol] = np.empty((1, model.window, len(model.manifest.feature_names)), dtype=np.float32)
        self._next_check = time.monotonic() + reload_check_seconds
        self._alerts: list[Alert] = []
        self.duplicates = 0
        self._dirty = False
        self.state_file = None if state_dir is None else Path(state_dir).expanduser() / f"{self.name}-state.json"
        if self.state_file is not None and self.state_file.exists():
            self._restore(self.state_file)

    @classmethod
    def from_settings(cls, settings: Settings, bus: Bus | None = None) -> Self:
        """One inference stage as configured: the models directory (`resolved_models_dir`: the
        shipped models where a relative one is not here), symbols, reload cadence, checkpoints
        and base interval."""
        s = settings.inference
        return cls(
            resolved_models_dir(settings),
            settings.symbols,
            reload_check_seconds=s.reload_check_seconds,
            state_dir=s.state_dir,
            base_interval=settings.base_interval,
        )

    # -- state ---------------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text())
            if state.get("version") != self.STATE_VERSION:
                raise ValueError(f"state version {state.get('version')} is not this build's")
            for symbol, saved in state["windows"].items():
                window = self._windows.get(symbol)
                if window is not None and not window.restore(saved):
                    log.warning("%s: %s's saved window does not fit the model's: it warms up again", self.name, symbol)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot restore the {self.name} state from {path}: {exc}") from exc

    def checkpoint(self) -> None:
        if self.state_file is None or not self._dirty:
            return
        state = {
            "version": self.STATE_VERSION,
            "windows": {symbol: window.snapshot() for symbol, window in self._windows.items()},
        }
        save_state(self.state_file, state)
        self._dirty = False

    def _slots(self, models_dir: Path) -> dict[str, ModelSlot]:
        raise NotImplementedError

    @staticmethod
    def topic_for(symbol: str) -> str:
        raise NotImplementedError

    def inputs(self) -> list[str]:
        return self.inputs_for(self.symbols)

    @classmethod
    def inputs_for(cls, symbols: Sequence[str], base_interval: str = "1m") -> list[str]:
        return [features_aggregated(s) for s in symbols]  # the same topics on any base interval

    @classmethod
    def outputs_for(cls, symbols: Sequence[str]) -> list[str]:
        """Topics it emits to (dead letters aside): what its principal may write (`kstrade.bus.acl`)."""
        return [*dict.fromkeys(cls.topic_for(s) for s in symbols), METRICS_ALERTS]

    def distinct_slots(self) -> list[ModelSlot]:
        seen: dict[int, ModelSlot] = {}
        for slot in self.slots.values():
            seen.setdefault(id(slot), slot)
        return list(seen.values())

    def request_reload(self) -> None:
        """Load every model directory again now (the control-topic path would call this)."""
        for slot in self.distinct_slots():
            slot.request()

    # -- the hot path -----------------------------------------------------------------------------
    def handle(self, record: Record) -> Iterable[Output]:
        self._settle_reloads()
        vector = self.decode(record, FeatureVector)
        slot = self.slots.get(vector.symbol)
        if slot is None:
            raise MessageError(DeadLetter.UNKNOWN_SYMBOL, f"no {self.model_type.value} model serves {vector.symbol!r}")
        model = slot.model
        manifest = model.manifest
        if vector.version != manifest.feature_version:
            raise MessageError(
                DeadLetter.FEATURE_VERSION_MISMATCH,
                f"features {vector.version}, model {model.version} was trained on {manifest.feature_version}",
            )
        if vector.names != manifest.feature_names:
            raise MessageError(
                DeadLetter.FEATURE_NAMES_MISMATCH,
                f"{len(vector.names)} features that differ from the {len(manifest.feature_names)} "
                f"model {model.version} was trained on",
            )
        with np.errstate(over="ignore"):  # a double beyond float32 becomes inf: reported just below
            values = np.asarray(vector.values, dtype=np.float32)
        finite = np.isfinite(values)
        if not finite.all():
            bad = manifest.feature_names[int(np.argmin(finite))]
            raise MessageError(DeadLetter.NON_FINITE_FEATURE, f"{bad} is not finite (or overflows float32)")
        window = self._windows[vector.symbol]
        time_us = (vector.timestamp - EPOCH) // timedelta(microseconds=1)
        if not window.push(time_us, values):
            self.duplicates += 1
            return ()
        self._dirty = True
        if not window.full:
            return ()  # warming up: a prediction needs a whole window
        mean, inv_std = model.scalers[vector.symbol]
        x = window.scaled_into(mean, inv_std, self._inputs[vector.symbol])
        started = time.perf_counter()
        probabilities = model.probabilities(x)[0]
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        winner = int(np.argmax(probabilities))
        probability = min(max(float(probabilities[winner]), 0.0), 1.0)
        prediction = Prediction(
            timestamp=vector.timestamp,
            symbol=vector.symbol,
            model_type=self.model_type,
            model_version=model.version,
            prediction=PredictionOutput(
                direction=_DIRECTIONS[winner],
                probability=probability,
                confidence=min(max(model.calibrator(probability), 0.0), 1.0),
            ),
            inference_time_ms=elapsed_ms,
        )
        return (
            self.emit(
                self.topic_for(vector.symbol),
                prediction,
                key=vector.symbol.encode(),
                origin_ns=self.origin_ns(record),
            ),
        )

    def warm_up(self, symbol: str, open_ms: np.ndarray, rows: np.ndarray, names: Sequence[str], version: str) -> int:
        """The feature vectors of the history before a replay's period (`FeatureStage.warm_up`)
        into the symbol's window, so the period's first vector gets a prediction. Nothing is
        predicted or emitted. A model that does not serve the symbol, or reads other features,
        is left cold (the live path then says why, as it always does). Returns vectors pushed."""
        slot = self.slots.get(symbol)
        window = self._windows.get(symbol)
        if slot is None or window is None:
            return 0
        manifest = slot.model.manifest
        if list(names) != list(manifest.feature_names) or version != manifest.feature_version:
            return 0
        length = window.length
        pushed = 0
        for t, row in zip(open_ms[-length:].tolist(), rows[-length:], strict=True):
            pushed += window.push(t * 1000, row.astype(np.float32))
        self._dirty = self._dirty or pushed > 0
        return pushed

    # -- many vectors at once -------------------------------------------------------------------
    def handle_batch(self, batch: Batch) -> Iterable[Output]:
        """`handle` for a whole poll: the vectors decoded natively in one call, every full
        window scaled into one input array, one model call per model, the predictions encoded
        in one call and emitted in the order of their vectors. The model's outputs do not depend
        on the batch size (single-threaded kernels: tests/test_pipeline_batch.py checks it). A
        vector that is anything but plainly valid takes `handle`'s path in its place, in order,
        so bad input is dead-lettered exactly as `handle` does it."""
        records = batch.records
        if len(records) < _BATCH_FROM:
            return list(batch.each(self.handle))
        self._settle_reloads()
        fv = self.codec(FeatureVector)
        cols = fv.decode_batch([r.value or b"" for r in records], errors="skip")
        plain = np.zeros(len(records), dtype=bool)
        decoded = np.full(len(records), -1, dtype=np.int64)
        rows = cols["rows"]
        decoded[rows] = np.arange(len(rows))
        names = cols.get("names")
        values = cols["values"]
        if names is not None and values.ndim == 2:
            with np.errstate(over="ignore"):
                as32 = values.astype(np.float32)
            finite = np.isfinite(values).all(axis=1) & np.isfinite(as32).all(axis=1)
            micros = cols["timestamp"].astype(np.int64)
            for i, row in enumerate(rows.tolist()):
                slot = self.slots.get(cols["symbol"][i])
                plain[row] = bool(
                    finite[i]
                    and slot is not None
                    and cols["version"][i] == slot.model.manifest.feature_version
                    and fv.plain_headers(records[row])
                )
            if not all(names == slot.model.manifest.feature_names for slot in self.distinct_slots()):
                plain[:] = False
        # In order: plain vectors enter their windows; a full window is a row of the model input.
        wanted: list[tuple[int, str, int]] = []  # (record index, symbol, window time in us)
        # Per model slot: the scaled windows, in order, written straight into the model's input
        # (at most one per record), and how many so far.
        staged: dict[int, tuple[np.ndarray, int]] = {}
        order: list[tuple[int, list[Output] | None]] = []  # per record: its outputs, or None: predicted
        # When every record is plain, the windows are gathered after the loop, all at once
        # (`_gather`): a numpy call per window lets the GIL go and waits to get it back.
        history = _BatchHistory(self._windows) if plain.all() else None
        for k, record in enumerate(records):
            if not plain[k]:
                order.append((k, list(batch.each(self.handle, [record]))))
                continue
            i = int(decoded[k])
            symbol = cols["symbol"][i]
            window = self._windows[symbol]
            if history is not None:
                history.before(symbol, window)
            if not window.push(int(micros[i]), as32[i]):
                self.duplicates += 1
                continue
            self._dirty = True
            if history is not None:
                history.pushed(symbol, i, window.full)
            if not window.full:
                continue
            wanted.append((k, symbol, int(micros[i])))
            order.append((k, None))
            if history is not None:
                continue
            slot = self.slots[symbol]
            model = slot.model
            mean, inv_std = model.scalers[symbol]
            inputs, n = staged.get(id(slot)) or (np.empty((len(records), *window.rows.shape), dtype=np.float32), 0)
            window.scaled_into(mean, inv_std, inputs[n : n + 1])
            staged[id(slot)] = (inputs, n + 1)
        if history is not None:
            staged = self._gather(history, as32, wanted)
        predicted = self._run_models(staged, wanted, records)
        out: list[Output] = []
        for k, outputs in order:
            out += predicted[k] if outputs is None else outputs
        return out

    def _gather(
        self, history: _BatchHistory, vectors: np.ndarray, wanted: list[tuple[int, str, int]]
    ) -> dict[int, tuple[np.ndarray, int]]:
        """Every full window of the batch, scaled, per model slot in the order of `wanted`: each
        row scaled once (a row stands in up to `window` windows), then one gather per slot. Each
        element is computed as `FeatureWindow.scaled_into` computes it ((x - mean) * inv_std in
        float32, per symbol), so the model sees the same bits."""
        rows, blocks, ends = history.rows(vectors)
        for symbol, block in blocks.items():
            mean, inv_std = self.slots[symbol].model.scalers[symbol]
            np.subtract(rows[block], mean, out=rows[block])
            np.multiply(rows[block], inv_std, out=rows[block])
        per_slot: dict[int, list[int]] = {}
        for n, (_, symbol, _) in enumerate(wanted):
            per_slot.setdefault(id(self.slots[symbol]), []).append(n)
        staged: dict[int, tuple[np.ndarray, int]] = {}
        for slot in self.distinct_slots():
            picked = per_slot.get(id(slot))
            if not picked:
                continue
            length = slot.model.window
            last = np.asarray([ends[n] for n in picked], dtype=np.int64)
            staged[id(slot)] = (rows[last[:, None] + np.arange(1 - length, 1, dtype=np.int64)], len(picked))
        return staged

    def _run_models(
        self, staged: dict[int, tuple[np.ndarray, int]], wanted: list[tuple[int, str, int]], records: list[Record]
    ) -> dict[int, list[Output]]:
        """One model call per model for the scaled windows `staged` per slot (the first n rows
        of its input); the outputs by record index."""
        # Per slot: each row's winning class and its probability (as Python ints and floats),
        # and the call's time per window.
        results: dict[int, tuple[list[int], list[float], float]] = {}
        for slot in self.distinct_slots():
            inputs, n = staged.get(id(slot)) or (None, 0)
            if inputs is None or not n:
                continue
            started = time.perf_counter()
            probabilities = slot.model.probabilities(inputs[:n])
            share_ms = (time.perf_counter() - started) * 1000.0 / n
            winners = probabilities.argmax(axis=1)
            tops = probabilities[np.arange(len(winners)), winners]
            results[id(slot)] = (winners.tolist(), tops.tolist(), share_ms)
        taken: dict[int, int] = {}
        codec = self.codec(Prediction)
        values: list[dict[str, object]] = []
        where: list[tuple[int, str, int]] = []
        for k, symbol, time_us in wanted:
            slot = self.slots[symbol]
            winners, tops, share_ms = results[id(slot)]
            n = taken.get(id(slot), 0)
            taken[id(slot)] = n + 1
            model = slot.model
            winner = winners[n]
            probability = min(max(tops[n], 0.0), 1.0)
            values.append({
                "timestamp": time_us, "symbol": symbol, "model_type": self.model_type.value,
                "model_version": model.version,
                "prediction": {"direction": _DIRECTIONS[winner].value, "probability": probability,
                               "confidence": min(max(model.calibrator(probability), 0.0), 1.0)},
                "inference_time_ms": share_ms,
            })  # fmt: skip
            where.append((k, symbol, time_us))
        encoded = codec.encode_values(values)
        out: dict[int, list[Output]] = {}
        topics: dict[str, tuple[str, bytes]] = {}  # per symbol: its topic and key
        for (k, symbol, _), data in zip(where, encoded, strict=True):
            origin = self.origin_ns(records[k])
            topic, key = topics.get(symbol) or topics.setdefault(symbol, (self.topic_for(symbol), symbol.encode()))
            out[k] = [Output(topic, data, key=key, headers=codec.headers(origin, self.name), origin_ns=origin)]
        return out

    # -- hot reload -------------------------------------------------------------------------------
    def on_time(self, now_ns: int) -> Iterable[Output]:
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.reload_check_seconds
            for slot in self.distinct_slots():
                slot.poll_files()
        self._settle_reloads()
        alerts, self._alerts = self._alerts, []
        return [self.emit(METRICS_ALERTS, a, key=self.name.encode(), origin_ns=now_ns) for a in alerts]

    def _settle_reloads(self) -> None:
        for slot in self.distinct_slots():
            outcome = slot.settle()
            if outcome is None:
                continue
            now = EPOCH + timedelta(microseconds=self.clock.now_ns() // 1000)
            if isinstance(outcome, ModelRefused):
                self._alerts.append(
                    Alert(
                        timestamp=now,
                        severity=Severity.CRITICAL,
                        source=self.name,
                        code=outcome.code,
                        message=f"{slot.directory}: new model refused, {slot.model.version} keeps serving: "
                        f"{outcome.message}",
                    )
                )
            else:
                old, new = outcome
                self._alerts.append(
                    Alert(
                        timestamp=now,
                        severity=Severity.INFO,
                        source=self.name,
                        code=AlertCode.MODEL_RELOADED,
                        message=f"{slot.directory}: {old.version} -> {new.version}",
                    )
                )

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class LSTMInference(InferenceStage):
    """One LSTM per symbol (models/lstm/{symbol}/) -> predictions.lstm.{symbol}."""

    name = "inference.lstm"
    model_type = ModelType.LSTM

    def _slots(self, models_dir: Path) -> dict[str, ModelSlot]:
        return {s: ModelSlot(models_dir / "lstm" / s, self._executor, self.base_interval) for s in self.symbols}

    @staticmethod
    def topic_for(symbol: str) -> str:
        return predictions_lstm(symbol)


class TransformerInference(InferenceStage):
    """One Transformer for every symbol (models/transformer/) -> predictions.transformer."""

    name = "inference.transformer"
    model_type = ModelType.TRANSFORMER

    def _slots(self, models_dir: Path) -> dict[str, ModelSlot]:
        slot = ModelSlot(models_dir / "transformer", self._executor, self.base_interval)
        return dict.fromkeys(self.symbols, slot)

    @staticmethod
    def topic_for(symbol: str) -> str:
        return PREDICTIONS_TRANSFORMER


def inference_stages(settings: Settings) -> list[InferenceStage]:
    """Both inference stages as the configuration describes them (`InferenceStage.from_settings`)."""
    return [kind.from_settings(settings) for kind in (LSTMInference, TransformerInference)]
