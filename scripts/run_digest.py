"""A digest of everything a `run` writes: per topic, the count and a SHA-256 of every record
(partition, offset, key, value, headers, timestamp), and a SHA-256 of each run-directory
Parquet file. Two revisions that print the same digest wrote the same bytes: the check a
refactor or a faster path must pass ("no behaviour change"). Measurements of wall time are left
out, as in tests/test_pipeline_batch.py: a prediction's `inference_time_ms` and a dead letter's
`dlq.time_ns`.

    python scripts/run_digest.py --days 2 [--record] > before.txt   # at the old revision
    python scripts/run_digest.py --days 2 [--record] > after.txt    # at the new one
    diff before.txt after.txt

`--record` runs every stage record by record (`batched=False`). SYNTHETIC candles (the default
run's planted-edge market); the default tier bands unless `--low-tiers` (more orders).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from kstrade import app
from kstrade.bus import Bus, Record
from kstrade.config import Settings, SignalSettings, TierBands
from kstrade.report.recorder import RunRecorder
from kstrade.schemas import Codec
from kstrade.schemas.models import Prediction

FILES = ("signals.parquet", "orders.parquet", "executions.parquet", "pnl.parquet", "trades.parquet", "equity.parquet")


class _Everything(RunRecorder):
    """The run's recorder, also hashing every record of every topic as the run goes (the run
    deletes what every reader has read after each chunk)."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.everything = bus.consumer("digest.everything", {"auto.offset.reset": "earliest"})
        self.everything.subscribe_pattern("^[^_].*")
        self.rows: dict[str, list[tuple[Any, ...]]] = {}
        self.prediction = Codec(Prediction)

    def read(self) -> int:
        while records := self.everything.poll(10_000, 0.0):
            for r in records:
                self.rows.setdefault(r.topic, []).append(self._row(r))
        self.everything.commit()
        return super().read()

    def _row(self, r: Record) -> tuple[Any, ...]:
        value = r.value
        if value is not None and r.topic.startswith("predictions."):
            fields = self.prediction.decode_value(value)
            fields["inference_time_ms"] = 0.0
            value = self.prediction.encode_value(fields)
        headers = tuple(h for h in r.headers if h[0] != "dlq.time_ns")
        return (r.partition, r.offset, r.key, value, headers, r.timestamp_ms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--record", action="store_true", help="every stage record by record")
    parser.add_argument("--low-tiers", action="store_true", help="tier bands 0.5/0.45/0.34: more orders")
    args = parser.parse_args()
    made: list[_Everything] = []

    def recorder(bus: Bus) -> _Everything:
        made.append(_Everything(bus))
        return made[-1]

    app.RunRecorder = recorder  # type: ignore[misc,assignment]
    settings = Settings()
    if args.low_tiers:
        settings = Settings(signals=SignalSettings(tiers=TierBands(a=0.5, b=0.45, c=0.34)))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        options = app.RunOptions(out=out, days=args.days, seed=args.seed, live_view=False, batched=not args.record)
        summary = app.run(settings, options, log=lambda _: None)
        print(f"# candles {summary['candles']}, final signals {summary['signals_final']}, "
              f"trades closed {summary['trades_closed']}", file=sys.stderr)  # fmt: skip
        for topic, rows in sorted(made[-1].rows.items()):
            digest = hashlib.sha256(repr(sorted(rows, key=lambda row: (row[0], row[1]))).encode()).hexdigest()
            print(f"{topic} {len(rows)} {digest[:16]}")
        for name in FILES:
            print(f"{name} {hashlib.sha256((out / name).read_bytes()).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
