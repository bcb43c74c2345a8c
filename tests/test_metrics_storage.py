"""Storage round trips on SQLite and on a real PostgreSQL server, which this file's set-up
starts (installing the Debian package first if the machine has no PostgreSQL), then stops.

Set KSTRADE_TEST_POSTGRES_URL to use a server you already have instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import create_engine, text

from kstrade.metrics.storage import MetricsStore
from kstrade.schemas import Alert, Execution, PnlEvent, Prediction, Signal
from kstrade.schemas.models import (
    ModelType,
    OrderStatus,
    OrderType,
    PredictionOutput,
    Severity,
    Side,
    SignalDirection,
    SignalStage,
    Tier,
)

T0 = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)
#: Bounds on the set-up, so a machine without network fails in minutes, not hours.
INSTALL_TIMEOUT_S = 300
START_TIMEOUT_S = 60


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(versions[-1]).parent if versions else None


def _install_postgres() -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail("PostgreSQL is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
    ):
        subprocess.run(cmd, check=True, env=env, timeout=INSTALL_TIMEOUT_S, capture_output=True)


def _as_server_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: as root, run it as the package's `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    external = os.environ.get("KSTRADE_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    bindir = _pg_bin()
    if bindir is None:
        _install_postgres()
        bindir = _pg_bin()
        assert bindir is not None, "postgresql installed but initdb not found"
    home = Path(tempfile.mkdtemp(prefix="kstrade-pg-"))
    data, sockets = home / "data", home / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(sockets, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run(_as_server_user(initdb), check=True, capture_output=True, timeout=START_TIMEOUT_S)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                                    str(home / "server.log"), "-w", "-t", str(START_TIMEOUT_S), "start"]),
                   check=True, capture_output=True, timeout=START_TIMEOUT_S + 10)  # fmt: skip
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=START_TIMEOUT_S)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetricsStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metrics.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        with create_engine(url).begin() as conn:  # a clean schema for each test
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    s = MetricsStore(url)
    yield s
    s.close()


def test_every_table_round_trips(store: MetricsStore) -> None:
    signal_id = uuid4()
    signal = Signal(timestamp=T0, symbol="EURUSD", signal_id=signal_id, stage=SignalStage.FINAL,
                    direction=SignalDirection.SHORT, confidence=0.71, tier=Tier.A, entry_price=1.0850,
                    stop_loss=1.0870, take_profit=1.0810, position_size=0.5, ttl_seconds=300)  # fmt: skip
    pnl = PnlEvent(timestamp=T0 + timedelta(minutes=5), signal_id=signal_id, order_id="o-1", symbol="EURUSD",
                   side=Side.SELL, quantity=0.5, entry_price=1.0850, exit_price=1.0830, realized_pnl=96.5,
                   commission=3.5, currency="USD", balance=100_096.5)  # fmt: skip
    execution = Execution(timestamp=T0, signal_id=signal_id, order_id="o-1", execution_id="x-1", symbol="EURUSD",
                          side=Side.SELL, order_type=OrderType.MARKET, quantity=0.5, status=OrderStatus.FILLED,
                          fill_price=1.0851, slippage_bps=0.9, commission=3.5, latency_ms=41.0,
                          session="ftmo-1")  # fmt: skip
    prediction = Prediction(timestamp=T0, symbol="EURUSD", model_type=ModelType.TRANSFORMER, model_version="3",
                            prediction=PredictionOutput(direction="DOWN", probability=0.62, confidence=0.24),
                            inference_time_ms=2.5)  # fmt: skip
    alert = Alert(timestamp=T0, severity=Severity.CRITICAL, source="execution", code="CIRCUIT_BREAKER_OPEN",
                  message="3 losses in a row")  # fmt: skip
    store.signal(signal)
    store.trade(pnl)
    store.execution(execution)
    store.prediction(prediction, topic="predictions.transformer", partition=2, offset=12345678901)
    store.metric("latency_p99_ms", {"topic": "signals.final", "stage": "signals"}, T0, 4.25)
    store.alert(alert, {"subject": "execution"})
    assert store.flush() == {"trades": 1, "executions": 1, "signals": 1, "predictions": 1, "metric_samples": 1,
                             "alerts": 1}  # fmt: skip
    assert store.pending == 0

    [s] = store.rows("signals")
    assert (s["signal_id"], s["stage"], s["created_at"], s["tier"], s["confidence"], s["position_size"]) == (
        str(signal_id), "final", T0, "A", 0.71, 0.5)  # fmt: skip
    [t] = store.rows("trades")
    assert (t["closed_at"], t["side"], t["realized_pnl"], t["commission"], t["balance"]) == (
        T0 + timedelta(minutes=5), "SELL", 96.5, 3.5, 100_096.5)  # fmt: skip
    [x] = store.rows("executions")
    assert (x["execution_id"], x["status"], x["fill_price"], x["session"]) == ("x-1", "FILLED", 1.0851, "ftmo-1")
    [p] = store.rows("predictions")
    assert (p["offset"], p["model_type"], p["direction"], p["predicted_at"]) == (12345678901, "transformer", "DOWN", T0)
    [m] = store.rows("metric_samples")
    assert (m["name"], m["labels"], m["value"]) == ("latency_p99_ms", "stage=signals,topic=signals.final", 4.25)
    [a] = store.rows("alerts")
    assert (a["code"], a["severity"], a["extra"], a["raised_at"]) == ("CIRCUIT_BREAKER_OPEN", "CRITICAL",
                                                                      {"subject": "execution"}, T0)  # fmt: skip


def test_a_redelivered_message_is_stored_once(store: MetricsStore) -> None:
    pnl = PnlEvent(timestamp=T0, signal_id=uuid4(), order_id="o-9", symbol="BTC-USD", side=Side.BUY, quantity=1.0,
                   entry_price=100.0, exit_price=99.0, realized_pnl=-1.0, commission=0.0, currency="USD",
                   balance=999.0)  # fmt: skip
    store.trade(pnl)
    store.flush()
    store.trade(pnl)  # at-least-once delivery: the same event again, in a later batch
    store.trade(pnl)
    store.flush()
    assert len(store.rows("trades")) == 1


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path: Path) -> None:
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.metric("sharpe", {}, T0, 1.5)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE metric_samples"))  # the database loses the table mid-run
    with pytest.raises(Exception, match="metric_samples"):
        store.flush()
    assert store.pending == 1
    from kstrade.metrics.storage import schema

    schema.create_all(store.engine)
    store.flush()
    assert [r["value"] for r in store.rows("metric_samples")] == [1.5]
    store.close()


def test_a_long_outage_sheds_sampled_rows_first_and_never_trades(tmp_path: Path) -> None:
    store = MetricsStore(f"sqlite:///{tmp_path / 'm.db'}", max_buffered=4)
    for i in range(2):
        store.trade(PnlEvent(timestamp=T0, signal_id=uuid4(), order_id=f"o{i}", symbol="BTC-USD", side=Side.BUY,
                             quantity=1.0, entry_price=1.0, exit_price=2.0, realized_pnl=1.0, commission=0.0,
                             currency="USD", balance=1.0))  # fmt: skip
    p = Prediction(timestamp=T0, symbol="BTC-USD", model_type=ModelType.LSTM, model_version="1",
                   prediction=PredictionOutput(direction="UP", probability=0.5, confidence=0.0),
                   inference_time_ms=1.0)  # fmt: skip
    for offset in range(5):
        store.prediction(p, topic="predictions.lstm.BTC-USD", partition=0, offset=offset)
    store.metric("sharpe", {}, T0, 1.0)
    store.metric("sharpe", {}, T0 + timedelta(seconds=10), 2.0)
    store.flush()
    assert store.shed == {"predictions": 5}
    assert len(store.rows("trades")) == 2 and len(store.rows("metric_samples")) == 2
    store.close()
