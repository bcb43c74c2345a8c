"""Storage of trades, signals, sampled predictions, metrics and alerts in any SQLAlchemy database
(SQLite by default). Rows are buffered and written in batches; a redelivered message (at-least-
once) is written once, thanks to natural primary keys and insert-or-ignore."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    create_engine,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from kstrade.schemas import Alert, Execution, PnlEvent, Prediction, Signal


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on every backend (SQLite keeps no zone: it stores UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


schema = MetaData()

trades = Table(
    "trades",
    schema,
    Column("signal_id", String(36), primary_key=True),
    Column("order_id", String(128), primary_key=True),
    Column("closed_at", UtcDateTime(), primary_key=True),
    Column("symbol", String(64), nullable=False, index=True),
    Column("side", String(4), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("entry_price", Float, nullable=False),
    Column("exit_price", Float, nullable=False),
    Column("realized_pnl", Float, nullable=False),
    Column("commission", Float, nullable=False),
    Column("currency", String(8), nullable=False),
    Column("balance", Float, nullable=False),
)

executions = Table(
    "executions",
    schema,
    Column("execution_id", String(128), primary_key=True),
    Column("signal_id", String(36), nullable=False, index=True),
    Column("order_id", String(128), nullable=False),
    Column("executed_at", UtcDateTime(), nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("status", String(24), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("fill_price", Float, nullable=False),
    Column("slippage_bps", Float, nullable=False),
    Column("commission", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("session", String(64), nullable=False),
)

signals = Table(
    "signals",
    schema,
    Column("signal_id", String(36), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False, index=True),
    Column("symbol", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("tier", String(1)),
    Column("entry_price", Float, nullable=False),
    Column("stop_loss", Float, nullable=False),
    Column("take_profit", Float, nullable=False),
    Column("position_size", Float),
)

predictions = Table(
    "predictions",
    schema,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("predicted_at", UtcDateTime(), nullable=False, index=True),
    Column("symbol", String(64), nullable=False),
    Column("model_type", String(16), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("probability", Float, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("inference_time_ms", Float, nullable=False),
)

metric_samples = Table(
    "metric_samples",
    schema,
    Column("name", String(128), primary_key=True),
    Column("labels", String(512), primary_key=True),  # canonical "k=v,k=v", sorted by key
    Column("sampled_at", UtcDateTime(), primary_key=True),
    Column("value", Float, nullable=False),
)

alerts = Table(
    "alerts",
    schema,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("raised_at", UtcDateTime(), nullable=False, index=True),
    Column("severity", String(8), nullable=False),
    Column("source", String(64), nullable=False),
    Column("code", String(64), nullable=False),
    Column("message", String(2000), nullable=False),
    Column("extra", JSON),
)


#: Tables whose buffered rows may be dropped when the database is unreachable for long.
_SHED_ORDER = ("predictions", "metric_samples")


#: An insert compiled for SQLite: its SQL, (position, bind processor) where a column has one, and
#: the row keys in parameter order.
_Compiled = tuple[str, list[tuple[int, Any]], tuple[str, ...]]


def labels_key(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


class MetricsStore:
    """A database and a buffer of rows per table; `flush` writes them in one transaction."""

    def __init__(self, url: str, *, engine: Engine | None = None, max_buffered: int = 200_000) -> None:
        self.engine = engine or create_engine(url, future=True, pool_pre_ping=True)
        schema.create_all(self.engine)
        self._rows: dict[str, list[dict[str, Any]]] = {t: [] for t in schema.tables}
        self.max_buffered = max_buffered
        self.shed: dict[str, int] = {}
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def _shed(self) -> None:
        """While the database is away the buffer must stay bounded: the oldest sampled
        predictions, then metric samples, make room. Trades, executions, signals and alerts
        are never shed (they are also on their topics for a week)."""
        for table in _SHED_ORDER:
            excess = self.pending - self.max_buffered
            if excess <= 0:
                return
            rows = self._rows[table]
            n = min(excess, len(rows))
            if n:
                del rows[:n]
                self.shed[table] = self.shed.get(table, 0) + n

    @property
    def pending(self) -> int:
        return sum(map(len, self._rows.values()))

    def trade(self, e: PnlEvent) -> None:
        self._rows["trades"].append(
            {"signal_id": str(e.signal_id), "order_id": e.order_id, "closed_at": e.timestamp, "symbol": e.symbol,
             "side": e.side.value, "quantity": e.quantity, "entry_price": e.entry_price, "exit_price": e.exit_price,
             "realized_pnl": e.realized_pnl, "commission": e.commission, "currency": e.currency,
             "balance": e.balance}
        )  # fmt: skip

    def execution(self, e: Execution) -> None:
        self._rows["executions"].append(
            {"execution_id": e.execution_id, "signal_id": str(e.signal_id), "order_id": e.order_id,
             "executed_at": e.timestamp, "symbol": e.symbol, "side": e.side.value, "status": e.status.value,
             "quantity": e.quantity, "fill_price": e.fill_price, "slippage_bps": e.slippage_bps,
             "commission": e.commission, "latency_ms": e.latency_ms, "session": e.session}
        )  # fmt: skip

    def signal(self, s: Signal | Mapping[str, Any]) -> None:
        """A signal, or its fields as `signals.wire.read_signal` gives them."""
        f = s if isinstance(s, Mapping) else dict(s)
        tier = f["tier"]
        self._rows["signals"].append(
            {"signal_id": str(f["signal_id"]), "stage": f["stage"].value, "created_at": f["timestamp"],
             "symbol": f["symbol"], "direction": f["direction"].value, "confidence": f["confidence"],
             "tier": tier.value if tier is not None else None, "entry_price": f["entry_price"],
             "stop_loss": f["stop_loss"], "take_profit": f["take_profit"], "position_size": f["position_size"]}
        )  # fmt: skip

    def prediction(self, p: Prediction, *, topic: str, partition: int, offset: int) -> None:
        self._rows["predictions"].append(
            {"topic": topic, "partition": partition, "offset": offset, "predicted_at": p.timestamp,
             "symbol": p.symbol, "model_type": p.model_type.value, "model_version": p.model_version,
             "direction": p.prediction.direction.value, "probability": p.prediction.probability,
             "confidence": p.prediction.confidence, "inference_time_ms": p.inference_time_ms}
        )  # fmt: skip

    def metric(self, name: str, labels: Mapping[str, str], at: datetime, value: float) -> None:
        self._rows["metric_samples"].append(
            {"name": name, "labels": labels_key(labels), "sampled_at": at, "value": value}
        )

    def alert(self, a: Alert, extra: Mapping[str, Any] | None = None) -> None:
        self._rows["alerts"].append(
            {"raised_at": a.timestamp, "severity": a.severity.value, "source": a.source, "code": a.code,
             "message": a.message, "extra": dict(extra) if extra else None}
        )  # fmt: skip

    def _insert_ignoring_duplicates(self, table: Table, rows: Sequence[dict[str, Any]]) -> Any:
        dialect = self.engine.dialect.name
        if table is alerts:
            return insert(table)  # surrogate key: every alert is its own row
        if dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        return insert(table).prefix_with("IGNORE") if dialect in ("mysql", "mariadb") else insert(table)

    def _sqlite_insert(self, table: Table, keys: tuple[str, ...]) -> _Compiled:
        """SQLite: the insert-or-ignore statement's SQL for rows with `keys`, compiled once, and
        the bind processors of the columns that have one (datetimes, JSON), by position. A replay
        writes tens of thousands of rows, and SQLAlchemy's per-row work for an executemany costs
        twice what SQLite itself does."""
        cached = self._compiled.get((table.name, keys))
        if cached is None:
            dialect = self.engine.dialect
            compiled = self._insert_ignoring_duplicates(table, []).compile(dialect=dialect, column_keys=list(keys))
            order = compiled.positiontup or []
            if sorted(order) != sorted(keys):
                raise RuntimeError(f"unexpected parameters for {table.name}: {order}")
            procs = [
                (i, p)
                for i, k in enumerate(order)
                if (p := table.c[k].type.dialect_impl(dialect).bind_processor(dialect))
            ]
            cached = self._compiled[(table.name, keys)] = (compiled.string, procs, tuple(order))
        return cached

    def flush(self) -> dict[str, int]:
        """Writes every buffered row; returns rows offered per table. On error the buffer is
        kept for the next flush (bounded by `max_buffered`: see `_shed`)."""
        offered: dict[str, int] = {}
        self._shed()
        sqlite_fast = self.engine.dialect.name == "sqlite" and self.engine.dialect.paramstyle == "qmark"
        with self.engine.begin() as conn:
            for name, rows in self._rows.items():
                if not rows:
                    continue
                table = schema.tables[name]
                keys = tuple(rows[0])
                if sqlite_fast and all(len(r) == len(keys) for r in rows):
                    sql, procs, order = self._sqlite_insert(table, keys)
                    params = []
                    for row in rows:
                        values = [row[k] for k in order]
                        for i, proc in procs:
                            values[i] = proc(values[i])
                        params.append(tuple(values))
                    conn.exec_driver_sql(sql, params)
                else:
                    conn.execute(self._insert_ignoring_duplicates(table, rows), rows)
                offered[name] = len(rows)
        for name in offered:
            self._rows[name] = []
        return offered

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every stored row of a table, in primary-key order (for reports and tests)."""
        t = schema.tables[table]
        with self.engine.connect() as conn:
            result = conn.execute(select(t).order_by(*t.primary_key.columns))
            return [dict(r._mapping) for r in result]

    def close(self) -> None:
        self.engine.dispose()
