"""kstrade: a real-time ML trading pipeline on Apache Kafka with a compiled Rust core.

Stages (ingest, features, inference, signals, execution, metrics) talk through a `Bus` with
Kafka semantics; `kstrade.bus` gives you one, on a real Kafka cluster or in-process.
"""

from kstrade._native import __version__

__all__ = ["__version__"]
