"""The per-service ACLs derived from the stages (`kstrade.bus.acl`), secrets kept out of what the
command line prints, and the endpoints that must stay on loopback. No broker here: the ACLs on a
real SASL_SSL cluster are in test_reliability_security.py."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest
from pydantic import ValidationError

from kstrade.bus import acl
from kstrade.bus.acl import Acl, Operation, Pattern, Resource
from kstrade.bus.topics import CONTROL_EXECUTION, METRICS_ALERTS, dlq_topic, pipeline_topics
from kstrade.config import ExecutionSettings, MetricsSettings
from kstrade.metrics.prometheus import MetricsExporter
from kstrade.services import STAGES

SYMBOLS = ["BTC-USD", "ETH-USD"]
#: The topics several services write by design: alerts (every service raises its own NO_PROGRESS)
#: and operator commands.
SHARED = {METRICS_ALERTS, CONTROL_EXECUTION}


def _writes(acls: list[Acl]) -> set[str]:
    return {a.name for a in acls if a.resource is Resource.TOPIC and a.operation is Operation.WRITE}


def _reads(acls: list[Acl]) -> set[str]:
    return {a.name for a in acls if a.resource is Resource.TOPIC and a.operation is Operation.READ}


def test_every_service_has_a_principal_and_the_stage_classes_are_the_services() -> None:
    assert set(acl.declared_stages()) == set(STAGES)
    by_service = acl.pipeline_acls(SYMBOLS)
    assert set(by_service) == {*STAGES, "ingest", "operator", "dashboard"}
    for service, acls in by_service.items():
        assert {a.principal for a in acls} == {f"User:kstrade-{service.replace('.', '-')}"}


def test_features_gets_exactly_its_inputs_group_outputs_and_dead_letters() -> None:
    got = set(acl.pipeline_acls(SYMBOLS)["features"])
    user = "User:kstrade-features"
    expected = {Acl(user, Resource.GROUP, "kstrade.features", Operation.READ)}
    for s in SYMBOLS:
        expected |= {
            Acl(user, Resource.TOPIC, f"market.candles.{s}.1m", Operation.READ),
            Acl(user, Resource.TOPIC, f"features.aggregated.{s}", Operation.WRITE),
            Acl(user, Resource.TOPIC, f"dlq.market.candles.{s}.1m", Operation.WRITE),
        }
    expected.add(Acl(user, Resource.TOPIC, METRICS_ALERTS, Operation.WRITE))  # its own NO_PROGRESS
    assert got == expected


def test_each_topic_has_one_writer_and_each_stage_reads_what_it_declares() -> None:
    by_service = acl.pipeline_acls(SYMBOLS, lag_groups=["kstrade.features"])
    writers: dict[str, set[str]] = defaultdict(set)
    for service, acls in by_service.items():
        for topic in _writes(acls):
            writers[topic].add(service)
    for topic, who in writers.items():
        if topic.startswith("dlq."):  # written by the stages that read it; not the observer, not ingest
            source = topic.removeprefix("dlq.")
            readers = {
                s
                for s, acls in by_service.items()
                if source in _reads(acls) and s not in ("metrics", "ingest", "dashboard")
            }
            assert who == readers, (topic, who)
        else:
            assert len(who) == 1 or topic in SHARED, (topic, who)
    assert writers["dlq.market.candles.BTC-USD.1m"] == {"features", "signals", "execution"}
    assert writers[METRICS_ALERTS] == {"ingest", *STAGES}  # every service: its NO_PROGRESS, at least
    # the command line, the Telegram bot and the dashboard's operator buttons
    assert writers[CONTROL_EXECUTION] == {"operator", "metrics", "dashboard"}
    everything = {t for name in pipeline_topics(SYMBOLS) for t in (name, dlq_topic(name))}
    assert set(writers) <= everything  # nothing outside the catalogue
    # Every topic a stage reads has a writer (the observer also reads features.technical/multi_tf,
    # catalogue topics nothing writes today).
    # (The dashboard, an observer too, reads what it shows, from the same catalogue.)
    observers = ("metrics", "dashboard")
    read = {t for s, acls in by_service.items() if s not in observers for t in _reads(acls) if not t.startswith("dlq.")}
    assert read <= set(writers), read - set(writers)
    assert _reads(by_service["dashboard"]) <= everything
    assert _writes(by_service["dashboard"]) == {CONTROL_EXECUTION}
    for service, acls in by_service.items():
        if service in ("ingest", "metrics", "operator", "dashboard"):
            continue
        stage = acl.declared_stages()[service]
        assert _reads(acls) == set(stage.inputs_for(SYMBOLS))
        assert {dlq_topic(t) for t in _reads(acls)} <= _writes(acls)
    metrics = by_service["metrics"]
    assert not any(t.startswith("dlq.") for t in _writes(metrics))  # an observer: no dead letters
    assert "dlq.features.aggregated.BTC-USD" in _reads(metrics) and "metrics.latency" not in _reads(metrics)
    # it may read another group's commits (lag) but not join it: DESCRIBE, never READ
    assert Acl("User:kstrade-metrics", Resource.GROUP, "kstrade.features", Operation.DESCRIBE) in metrics
    for service, acls in by_service.items():  # the only group each may join is its own
        joins = {a.name for a in acls if a.resource is Resource.GROUP and a.operation is Operation.READ}
        own = {"ingest": {"kstrade.ingest.resume."}, "operator": {"kstrade.operator."},
               "dashboard": {"kstrade.dashboard."}}  # fmt: skip
        assert joins == own.get(service, {f"kstrade.{service}"})


def test_no_cluster_rights_no_create_and_only_the_throwaway_groups_are_prefixes() -> None:
    every = [a for acls in acl.pipeline_acls(SYMBOLS).values() for a in acls]
    assert {a.operation for a in every} <= {Operation.READ, Operation.WRITE, Operation.DESCRIBE}
    assert {a.resource for a in every} == {Resource.TOPIC, Resource.GROUP}
    prefixed = [a for a in every if a.pattern is Pattern.PREFIXED]
    assert sorted(prefixed) == [
        Acl("User:kstrade-dashboard", Resource.GROUP, "kstrade.dashboard.", Operation.READ, Pattern.PREFIXED),
        Acl("User:kstrade-ingest", Resource.GROUP, "kstrade.ingest.resume.", Operation.READ, Pattern.PREFIXED),
        Acl("User:kstrade-operator", Resource.GROUP, "kstrade.operator.", Operation.READ, Pattern.PREFIXED),
    ]
    assert not [a for a in every if "*" in a.name]


def test_on_a_1h_base_the_stages_read_the_1h_candle_topics() -> None:
    hourly = acl.pipeline_acls(SYMBOLS, base_interval="1h")
    for service in ("features", "signals", "execution"):
        reads = _reads(hourly[service])
        assert "market.candles.BTC-USD.1h" in reads and "market.candles.BTC-USD.1m" not in reads, service
        assert "dlq.market.candles.BTC-USD.1h" in _writes(hourly[service]), service
    assert _reads(hourly["inference.lstm"]) == _reads(acl.pipeline_acls(SYMBOLS)["inference.lstm"])


def test_a_new_symbol_changes_the_acls_with_the_topics() -> None:
    before = acl.pipeline_acls(SYMBOLS)
    after = acl.pipeline_acls([*SYMBOLS, "XRP-USD"])
    assert "features.aggregated.XRP-USD" in _writes(after["features"]) - _writes(before["features"])
    assert "predictions.lstm.XRP-USD" in _reads(after["signals"]) - _reads(before["signals"])


def test_the_stages_emit_only_to_the_topics_they_declare() -> None:
    """The whole pipeline on the memory bus (two days of SYNTHETIC minutes): every record a stage
    emits (its `stage` header) lands on a topic its principal may write."""
    from .test_reliability_poison import _frame, _run

    with tempfile.TemporaryDirectory() as out:
        run = _run(Path(out), _frame(), None)
    allowed = {name: _writes(acls) for name, acls in acl.pipeline_acls(["BTC-USD", "ETH-USD"]).items()}
    emitted: dict[str, set[str]] = defaultdict(set)
    for record in run.records:
        stage = dict(record.headers).get("stage")
        assert stage is not None, record.topic
        emitted[stage.decode()].add(record.topic)
    print({s: len(t) for s, t in emitted.items()})
    assert {"features", "inference.lstm", "inference.transformer", "signals", "ingest", "metrics"} <= set(emitted)
    for stage, topics in emitted.items():
        assert topics <= allowed[stage], (stage, topics - allowed[stage])


def test_the_command_line_prints_the_derived_acls(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('symbols = ["BTC-USD"]\n')
    run = [sys.executable, "-m", "kstrade", "acl", "show", "--config", str(config)]
    shown = subprocess.run([*run, "--service", "execution"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    expected = sorted(str(a) for a in acl.pipeline_acls(["BTC-USD"])["execution"])
    assert sorted(shown.stdout.splitlines()) == expected
    assert "User:kstrade-execution ALLOW WRITE TOPIC LITERAL trades.orders.pending" in expected
    wrong = subprocess.run([*run, "--service", "nobody"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown service" in wrong.stderr


def test_config_show_redacts_every_secret_from_the_environment(tmp_path: Path) -> None:
    secrets = {
        "KSTRADE_BUS__SASL_PASSWORD": "bus-pw-7f3a9c",
        "KSTRADE_EXECUTION__MT5_PASSWORD": "mt5-pw-1b2d4e",
        "KSTRADE_METRICS__TELEGRAM__BOT_TOKEN": "tg-token-9e8d7c",
        "KSTRADE_INGEST__COINBASE__JWT": "jwt-5a6b7c",
    }
    env = {**os.environ, **secrets, "KSTRADE_BUS__SASL_USERNAME": "kstrade-features"}
    shown = subprocess.run(
        [sys.executable, "-m", "kstrade", "config", "show"], capture_output=True, text=True, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    for value in secrets.values():
        assert value not in shown.stdout + shown.stderr
    for key in ("sasl_password", "mt5_password", "bot_token", "jwt"):  # TOML: never written, a comment
        assert f'# {key} = "**********"  (a secret: from the environment only)' in shown.stdout, key


def test_the_prometheus_endpoint_and_the_mt5linux_bridge_default_to_loopback() -> None:
    assert MetricsSettings().prometheus_addr == "127.0.0.1"
    assert ExecutionSettings().mt5linux_host == "127.0.0.1"
    with pytest.raises(ValidationError):
        ExecutionSettings(mt5linux_host="0.0.0.0")  # type: ignore[arg-type]  # RPyC classic: never off-host
    server = MetricsExporter().serve(0, MetricsSettings().prometheus_addr)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
