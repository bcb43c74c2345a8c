"""Liveness and progress of a service (`kstrade.liveness`) against the real broker: a stage whose
handle hangs, or whose consumer fetches nothing while records wait, answers /readyz 503 and raises
one NO_PROGRESS alert on metrics.alerts within service.no_progress_s; a healthy one answers 200 on
/healthz and /readyz, reports its numbers and raises nothing; `python -m kstrade service` serves
the endpoint on a free loopback port and logs it (issue 18, "liveness and progress")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kstrade.broker import cluster
from kstrade.broker.local import free_port_block
from kstrade.bus import Bus, Consumer, Output, Record
from kstrade.bus.topics import METRICS_ALERTS, TopicSpec, create_all
from kstrade.codes import AlertCode
from kstrade.config import ServiceSettings
from kstrade.liveness import Liveness, watching
from kstrade.schemas import Alert, Codec, CodecError
from kstrade.stage import Stage, run_service

from .conftest import FAST_GROUP, make_topic

pytestmark = pytest.mark.kafka

#: Short enough for a test, long enough that a 2-core machine under load does not trip it.
NO_PROGRESS_S = 2.0
#: How late the alert or the 503 may come after no_progress_s: the alarm looks every 0.5 s,
#: the lag is probed every 0.5 s, and the alert needs a round trip to the broker.
SLACK_S = 3.0


class Gate(Stage):
    """Handles a record only once its gate is open: closed, the first record hangs the loop."""

    name: ClassVar[str] = "liveness"
    consumer_config: ClassVar[dict[str, str]] = {k: str(v) for k, v in FAST_GROUP.items()}

    def __init__(self, name: str, topic: str, *, open_: bool) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]  # one group per test
        self.topic = topic
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.entered_at: float | None = None  # wall time the first record reached handle
        self.handled: list[int] = []

    def inputs(self) -> list[str]:
        return [self.topic]

    def handle(self, record: Record) -> Iterable[Output]:
        if self.entered_at is None:
            self.entered_at = time.time()
        assert self.gate.wait(120), "the test never opened the gate"
        self.handled.append(record.offset)
        return ()


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def eventually(what: str, check: Any, timeout: float) -> float:
    """Seconds until `check()` is true (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def logged(capsys: pytest.CaptureFixture[str], line: str, timeout: float = 5.0) -> None:
    """Wait for `line` on this process's stderr (the alarm logs from its own thread)."""
    seen = ""

    def there() -> bool:
        nonlocal seen
        seen += capsys.readouterr().err
        return line in seen

    eventually(f"{line!r} logged", there, timeout)


@contextmanager
def service(bootstrap: str, stage: Stage, **settings: Any) -> Iterator[tuple[Liveness, str]]:
    """`stage` run as a service in a thread, as `python -m kstrade service` runs it: its liveness
    watched, its endpoint on a free loopback port."""
    bus = Bus.kafka(bootstrap)
    config = ServiceSettings(no_progress_s=NO_PROGRESS_S, lag_interval_s=0.5, **settings)
    liveness = Liveness.from_settings(stage.name, config)
    stop = threading.Event()
    with watching(bus, liveness, config) as endpoint:
        assert endpoint is not None and endpoint.url.startswith("http://127.0.0.1:")
        loop = threading.Thread(target=run_service, args=(bus, stage, stop), kwargs={"liveness": liveness})
        loop.start()
        try:
            yield liveness, endpoint.url
        finally:
            if isinstance(stage, Gate):
                stage.gate.set()  # a test that failed with the gate closed must not hang its loop
            stop.set()
            loop.join(60)
            assert not loop.is_alive()


def send(bootstrap: str, topic: str, n: int) -> None:
    producer = Bus.kafka(bootstrap).producer()
    for i in range(n):
        producer.send(topic, f"record {i}".encode(), key=b"k")
    producer.flush(30)


def alerts_reader(bootstrap: str, unique: str) -> Consumer:
    bus = Bus.kafka(bootstrap)
    create_all(bus.admin(), [TopicSpec(METRICS_ALERTS)])
    consumer = bus.consumer(f"test.liveness.alerts.{unique}")
    consumer.subscribe([METRICS_ALERTS])
    return consumer


def no_progress_alerts(consumer: Consumer, source: str, seconds: float) -> list[tuple[float, Alert]]:
    """NO_PROGRESS alerts from `source` that arrive within `seconds`, with their arrival (wall) time."""
    codec, out = Codec(Alert), []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for record in consumer.poll(100, 0.1):
            try:
                alert = codec.decode_record(record)
            except CodecError:
                continue  # another test's poison on the shared topic (these services write none)
            assert isinstance(alert, Alert)
            if alert.source == source and alert.code == AlertCode.NO_PROGRESS:
                out.append((time.time(), alert))
    return out


def gated(bootstrap: str, unique: str, kind: str, *, open_: bool) -> tuple[Gate, Consumer]:
    """A `Gate` stage named liveness.KIND.UNIQUE over a fresh one-partition topic of its own, and
    a reader of metrics.alerts subscribed before the stage runs."""
    topic = make_topic(Bus.kafka(bootstrap), f"test.liveness.{kind}.{unique}", partitions=1)
    alerts = alerts_reader(bootstrap, unique)
    return Gate(f"liveness.{kind}.{unique}", topic, open_=open_), alerts


def test_a_stage_whose_handle_hangs_is_not_ready_not_healthy_and_raises_no_progress_once(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stage, alerts = gated(kafka_bootstrap, unique, "hang", open_=False)
    name, topic = stage.name, stage.topic
    with service(kafka_bootstrap, stage, stuck_s=3.0) as (_, url):
        eventually("ready on an empty topic", lambda: get(url + "/readyz")[0] == 200, 30)
        send(kafka_bootstrap, topic, 5)
        eventually("the first record in handle", lambda: stage.entered_at is not None, 30)
        assert stage.entered_at is not None
        waited = eventually("/readyz 503", lambda: get(url + "/readyz")[0] == 503, NO_PROGRESS_S + SLACK_S)
        status, body = get(url + "/readyz")
        assert status == 503 and "no progress" in body["reason"] and body["progress"]["in_hand"] == 5, body
        print(f"/readyz 503 after {waited:.1f} s: {body['reason']}")
        raised = no_progress_alerts(alerts, name, NO_PROGRESS_S + SLACK_S)
        assert len(raised) == 1, raised
        at, alert = raised[0]
        late = at - stage.entered_at
        assert NO_PROGRESS_S - 0.2 <= late <= NO_PROGRESS_S + SLACK_S, late  # neither early nor late
        assert alert.severity == "CRITICAL" and "5 records wait" in alert.message, alert
        print(f"NO_PROGRESS {late:.1f} s after the stall began: {alert.message}")
        # the loop itself hangs: past stuck_s the process is no longer healthy either
        eventually("/healthz 503", lambda: get(url + "/healthz")[0] == 503, 3.0 + SLACK_S)
        assert "has not come round" in get(url + "/healthz")[1]["reason"]
        assert no_progress_alerts(alerts, name, 2.0) == []  # once per stall, not once per look
        stage.gate.set()
        eventually("ready again", lambda: get(url + "/readyz")[0] == 200, 30)
        assert get(url + "/healthz")[0] == 200
        progress = get(url + "/progress")[1]
        assert progress["records_handled"] == 5 and progress["last_record"]["offset"] == 4, progress
        assert stage.handled == [0, 1, 2, 3, 4]
        logged(capsys, f"{name}: moving again")


def test_a_consumer_that_fetches_nothing_while_records_wait_raises_no_progress_and_stays_healthy(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inference worker of issue 18: the loop comes round, polls nothing, lag grows."""
    stage, alerts = gated(kafka_bootstrap, unique, "paused", open_=True)
    name, topic = stage.name, stage.topic
    with service(kafka_bootstrap, stage) as (liveness, url):
        eventually("ready on an empty topic", lambda: get(url + "/readyz")[0] == 200, 30)
        assert liveness.runner is not None
        consumer = liveness.runner.consumer
        consumer.pause(consumer.assignment())  # it stops fetching (a lost coordinator does the same)
        send(kafka_bootstrap, topic, 7)
        sent_at = time.time()
        raised = no_progress_alerts(alerts, name, 0.5 + NO_PROGRESS_S + SLACK_S)
        assert len(raised) == 1, raised
        late = raised[0][0] - sent_at
        assert NO_PROGRESS_S - 0.2 <= late <= 0.5 + NO_PROGRESS_S + SLACK_S, late
        assert "7 records wait" in raised[0][1].message, raised[0][1]
        status, body = get(url + "/readyz")
        assert status == 503 and "no progress" in body["reason"] and body["progress"]["lag"] == 7, body
        assert get(url + "/healthz")[0] == 200  # the loop runs: alive, not ready
        assert stage.handled == []
        consumer.resume(consumer.assignment())
        eventually("ready again", lambda: get(url + "/readyz")[0] == 200, 30)
        assert stage.handled == list(range(7))
        logged(capsys, f"{name}: moving again")


def test_a_consumer_that_fetches_nothing_for_rejoin_after_s_is_replaced_and_consumes_again(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The self-healing half: the same stuck consumer, and nobody resumes it. After
    service.rejoin_after_s the loop replaces it; the new member rejoins the group, resumes from
    the committed offsets and handles every waiting record, each once."""
    stage, _ = gated(kafka_bootstrap, unique, "rejoin", open_=True)
    name, topic = stage.name, stage.topic
    rejoin_after_s = 4.0
    with service(kafka_bootstrap, stage, rejoin_after_s=rejoin_after_s) as (liveness, url):
        eventually("ready on an empty topic", lambda: get(url + "/readyz")[0] == 200, 30)
        send(kafka_bootstrap, topic, 3)
        eventually("the first records handled", lambda: stage.handled == [0, 1, 2], 30)
        assert liveness.runner is not None
        stuck = liveness.runner.consumer
        stuck.pause(stuck.assignment())  # fetches nothing from now on (a lost coordinator does the same)
        send(kafka_bootstrap, topic, 7)
        sent_at = time.monotonic()
        eventually("handled by a new consumer", lambda: len(stage.handled) == 10, rejoin_after_s + 30)
        healed = time.monotonic() - sent_at
        assert healed > rejoin_after_s - 0.5, healed  # not before it was due
        assert stage.handled == list(range(10))  # every record once: the first three not again
        assert liveness.runner.consumer is not stuck and liveness.rejoins == 1
        eventually("ready again", lambda: get(url + "/readyz")[0] == 200, 30)
        assert get(url + "/progress")[1]["rejoins"] == 1
        print(f"rejoined and consumed again {healed:.1f} s after the records were sent")
    logged(capsys, f"{name}: no record fetched for more than {rejoin_after_s:g} s while 7 wait: rejoining the group")


def test_a_member_left_with_nothing_assigned_while_its_groups_records_wait_is_alerted_then_rejoins(
    kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LSTM worker of a 60 s whole-cluster stop: its loop came round, it had no partition,
    its group's records waited, and nothing said so (its own lag was empty). Here its consumer is
    moved onto a topic that does not exist, so it holds nothing and keeps polling: the group's
    waiting records make it a stall (NO_PROGRESS, /readyz 503 naming it), and after
    rejoin_after_s a new member takes the partition and handles every waiting record once."""
    stage, alerts = gated(kafka_bootstrap, unique, "unassigned", open_=True)
    name, topic = stage.name, stage.topic
    rejoin_after_s = 8.0
    with service(kafka_bootstrap, stage, rejoin_after_s=rejoin_after_s) as (liveness, url):
        eventually("ready on an empty topic", lambda: get(url + "/readyz")[0] == 200, 30)
        send(kafka_bootstrap, topic, 3)
        eventually("the first records handled", lambda: stage.handled == [0, 1, 2], 30)
        assert liveness.runner is not None
        stranded = liveness.runner.consumer
        stranded.subscribe([f"{topic}.never-created"])  # a member of the group with nothing assigned
        eventually("nothing assigned", lambda: get(url + "/progress")[1]["lag_by_partition"] == {}, 30)
        send(kafka_bootstrap, topic, 7)
        sent_at = time.time()
        raised = no_progress_alerts(alerts, name, 1.0 + NO_PROGRESS_S + SLACK_S)
        assert len(raised) == 1, raised
        assert "no partition assigned while 7 records of the group wait" in raised[0][1].message, raised[0][1]
        print(f"NO_PROGRESS {raised[0][0] - sent_at:.1f} s after the records were sent: {raised[0][1].message}")
        status, body = get(url + "/readyz")
        assert status == 503 and "no partition assigned" in body["reason"], body
        assert body["progress"]["group_waiting"] == 7, body
        assert stage.handled == [0, 1, 2]
        eventually("handled by a new member", lambda: len(stage.handled) == 10, rejoin_after_s + 30)
        healed = time.time() - sent_at
        assert healed > rejoin_after_s - 0.5, healed
        assert stage.handled == list(range(10))  # every record once
        assert liveness.runner.consumer is not stranded and liveness.rejoins == 1
        eventually("ready again", lambda: get(url + "/readyz")[0] == 200, 30)
        print(f"rejoined and consumed again {healed:.1f} s after the records were sent")
    logged(capsys, f"{name}: no partition assigned for more than {rejoin_after_s:g} s while 7 records of the group")


def test_a_member_with_nothing_assigned_beside_a_member_that_commits_is_not_a_stall(
    kafka_bootstrap: str, unique: str
) -> None:
    """More members than partitions is normal (a scaled-out group): while another member
    consumes and commits the group's records, the idle one is not stalled: /readyz says it has
    no partition (not "no progress"), it raises nothing and does not rejoin."""
    stage, alerts = gated(kafka_bootstrap, unique, "spare", open_=True)
    name, topic = stage.name, stage.topic
    bus = Bus.kafka(kafka_bootstrap)
    # The busy member joins first (cooperative-sticky keeps its partition when the service joins)
    # and works slowly: it commits every record, so the group's records wait and move.
    busy = bus.consumer(stage.group, {k: str(v) for k, v in FAST_GROUP.items()})
    busy.subscribe([topic])
    eventually("the busy member has the partition", lambda: bool(busy.poll(10, 0.2) or busy.assignment()), 30)
    with service(kafka_bootstrap, stage, rejoin_after_s=4.0) as (liveness, url):
        eventually("the service has joined", lambda: get(url + "/progress")[1]["lag_by_partition"] == {}, 30)
        send(kafka_bootstrap, topic, 12)
        handled = 0
        deadline = time.monotonic() + NO_PROGRESS_S + SLACK_S + 4.0
        while time.monotonic() < deadline:
            for record in busy.poll(1, 0.1):
                handled += 1
                busy.commit([(record.topic, record.partition, record.offset + 1)])
                time.sleep(0.4)  # slow, but moving
            body = get(url + "/readyz")[1]
            assert body["reason"].startswith("no partitions assigned"), body
        assert handled >= 8, handled
        assert no_progress_alerts(alerts, name, 0.5) == []
        assert liveness.rejoins == 0 and stage.handled == []
    busy.close()


def test_with_the_cluster_away_a_service_is_alive_not_ready_cluster_unreachable_and_ready_again_after(
    tmp_path: Path, unique: str
) -> None:
    """Its own one-node cluster stopped under a running service: the lag probe fails, so
    /readyz answers 503 "cluster unreachable" while /healthz stays 200 (the loop comes round);
    the cluster started again, the service is ready and handles what is sent."""
    local = cluster(tmp_path / "kafka", nodes=1, base_port=free_port_block(1))
    local.start(timeout=120)
    try:
        bootstrap = local.bootstrap
        stage, _ = gated(bootstrap, unique, "unreachable", open_=True)
        with service(bootstrap, stage) as (_, url):
            eventually("ready", lambda: get(url + "/readyz")[0] == 200, 30)
            local.stop()
            waited = eventually(
                "cluster unreachable", lambda: "cluster unreachable" in get(url + "/readyz")[1]["reason"], 30
            )
            status, body = get(url + "/readyz")
            assert status == 503 and body["progress"]["lag_error"], body
            assert get(url + "/healthz")[0] == 200  # alive: the loop comes round, waiting
            print(f"/readyz 503 {waited:.1f} s after the stop: {body['reason']}")
            local.start(timeout=120)
            eventually("ready again", lambda: get(url + "/readyz")[0] == 200, 60)
            send(bootstrap, stage.topic, 4)
            eventually("records handled after the restart", lambda: stage.handled == [0, 1, 2, 3], 60)
    finally:
        local.stop()


def test_a_healthy_service_is_ready_reports_its_progress_and_raises_nothing(kafka_bootstrap: str, unique: str) -> None:
    stage, alerts = gated(kafka_bootstrap, unique, "healthy", open_=True)
    name, topic = stage.name, stage.topic
    with service(kafka_bootstrap, stage) as (_, url):
        eventually("ready on an empty topic", lambda: get(url + "/readyz")[0] == 200, 30)
        send(kafka_bootstrap, topic, 20)
        eventually("every record handled", lambda: get(url + "/progress")[1]["records_handled"] == 20, 30)
        # idle with nothing to do for longer than no_progress_s: still ready, no alert
        assert no_progress_alerts(alerts, name, NO_PROGRESS_S + 2.0) == []
        status, body = get(url + "/readyz")
        assert (status, body["reason"]) == (200, "caught up (lag 0)"), body
        assert get(url + "/healthz")[0] == 200
        progress = body["progress"]
        assert progress["lag"] == 0 and progress["lag_error"] is None and progress["in_hand"] == 0
        assert progress["last_record"]["topic"] == topic and progress["last_record"]["offset"] == 19
        assert progress["last_commit_at"] is not None and progress["lag_probed_at"] is not None
        assert get(url + "/nope")[0] == 404


def test_the_service_command_serves_health_on_a_logged_loopback_port(kafka_bootstrap: str, unique: str) -> None:
    env = {**os.environ, "KSTRADE_SYMBOLS": f'["L{unique}"]', "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "kstrade", "service", "features", "--bus", "kafka", "--bootstrap", kafka_bootstrap]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "consuming as kstrade.features" in proc.stderr.readline()
        line = proc.stderr.readline()
        found = re.search(r"features: health on (http://127\.0\.0\.1:\d+) ", line)
        assert found, line
        url = found.group(1)
        assert get(url + "/healthz")[0] == 200
        eventually("/readyz 200", lambda: get(url + "/readyz")[0] == 200, 60)
        assert get(url + "/progress")[1]["service"] == "features"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
