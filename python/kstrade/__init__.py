"""kstrade: a real-time ML trading pipeline on Apache Kafka with a compiled Rust core.

Stages (ingest, features, inference, signals, execution, metrics) talk through a `Bus` with
Kafka semantics; `kstrade.bus` gives you one, on a real Kafka cluster or in-process.

From Python (`kstrade.api`): `kstrade.backtest(data)` replays your candles (a file or a polars
DataFrame) through every stage and `kstrade.run(days=7)` the SYNTHETIC market; both return a
`BacktestResult` of polars DataFrames and statistics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kstrade._native import __version__

if TYPE_CHECKING:
    from kstrade.api import BacktestResult, backtest
    from kstrade.api import run_synthetic as run

__all__ = ["BacktestResult", "__version__", "backtest", "run"]

#: What `import kstrade` offers without importing it up front (polars, the stages).
_LAZY = {"backtest": "backtest", "run": "run_synthetic", "BacktestResult": "BacktestResult"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kstrade import api

        return getattr(api, _LAZY[name])
    raise AttributeError(f"module 'kstrade' has no attribute {name!r}")
