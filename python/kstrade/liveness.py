"""Liveness and progress of one service process: whether its loop comes round, whether it makes
progress while records wait, an HTTP endpoint that says so, and a NO_PROGRESS alert once per stall.

The service loop (`stage.run_service`) reports to a `Liveness`: a beat each round (and while it
waits out a cluster outage), a consumer-lag probe every `lag_interval_s` (not every round: a
probe asks the broker), and its runner's counters (records handled, the last one, the batch in
hand, the last commit). Everything else runs in other threads and only reads, so a stage whose
`handle` hangs is still seen, and said to be stuck:

- `/healthz`: 200 while the loop comes round; 503 once it has not for `stuck_s`, or is stopping.
- `/readyz`: 200 when the lag is known, partitions are assigned and records are handled while
  any wait; 503 with the reason otherwise (starting, cluster unreachable, no partitions, no
  progress for N s while records wait, stopping).
- `/progress`: the numbers. Every body is JSON and carries them.

Stalled means: records wait (lag > 0 by position, or a batch polled and not finished) and none
was handled for `no_progress_s`, or the loop itself has not come round for that long. The
`StallAlarm` publishes one CRITICAL `NO_PROGRESS` alert on `metrics.alerts` when a stall starts,
logs it, and logs a recovery line when the service moves again.

A stall of the consumer itself (the loop comes round, records wait, nothing is fetched) that
lasts `rejoin_after_s` is healed by the loop: it replaces its consumer, which rejoins the group
and resumes from the committed offsets (`fetch_stalled`; counted as `rejoins` in /progress).

A member with nothing assigned has no lag of its own, so the loop also watches its group
(`GroupBacklog`, asked only while the assignment is empty): records waiting on the group's
input partitions while the group's committed offsets do not move means no member consumes them
(a member left unassigned after a whole-cluster restart, or a peer that holds partitions and
does not poll). That is a stall like any other (/readyz 503, NO_PROGRESS) and, after
`rejoin_after_s`, a rejoin.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple

from kstrade.bus import Bus, BusError, Consumer, Producer
from kstrade.bus.topics import METRICS_ALERTS
from kstrade.codes import AlertCode, BusCode
from kstrade.schemas import Alert, Codec
from kstrade.schemas.models import Severity

if TYPE_CHECKING:
    from kstrade.bus import StageRunner
    from kstrade.config import ServiceSettings

#: The group's side, asked while this member has nothing assigned: (records waiting on the
#: group's input partitions, the sum of the group's committed offsets there), or None if the
#: topics are not known (a pattern subscription).
GroupBacklog = Callable[[], tuple[int, int] | None]


class Verdict(NamedTuple):
    ok: bool
    reason: str


def _iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


class Liveness:
    """What one service's loop reports, and the judgements made from it (from any thread)."""

    def __init__(
        self,
        name: str,
        *,
        no_progress_s: float = 60.0,
        stuck_s: float = 120.0,
        lag_interval_s: float = 5.0,
        rejoin_after_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.no_progress_s = no_progress_s
        self.stuck_s = stuck_s
        self.lag_interval_s = lag_interval_s
        self.rejoin_after_s = rejoin_after_s
        self.rejoins = 0
        self._rejoined_at: float | None = None
        self._clock = clock
        self.started_at = clock()
        # Monotonic seconds are what is judged; wall time is only for showing them.
        self._wall_offset = time.time() - self.started_at
        self.runner: StageRunner | None = None
        self._stop: threading.Event | None = None
        self.stopping = False
        self.beat_at = self.started_at
        #: The last lag probe: per "topic[partition]", when, and why it failed (None: it did not).
        self.lag: dict[str, int] | None = None
        self.lag_at: float | None = None
        self.lag_error: str | None = None
        #: Since when consecutive probes have seen lag > 0 (None: the last one saw none).
        self.lag_since: float | None = None
        self._next_probe = 0.0
        self._group_backlog: GroupBacklog | None = None
        #: While nothing is assigned: records waiting in the group, and since when they have
        #: waited with the group's committed offsets standing still (None: not so).
        self.group_waiting: int | None = None
        self.unassigned_since: float | None = None
        self._group_committed: int | None = None

    @classmethod
    def from_settings(cls, name: str, settings: ServiceSettings) -> Liveness:
        return cls(
            name, no_progress_s=settings.no_progress_s, stuck_s=settings.stuck_s,
            lag_interval_s=settings.lag_interval_s, rejoin_after_s=settings.rejoin_after_s,
        )  # fmt: skip

    # -- the loop's side (one thread: the service loop) -------------------------------------------
    def attach(self, runner: StageRunner, stop: threading.Event, group_backlog: GroupBacklog | None = None) -> None:
        self.runner, self._stop = runner, stop
        self._group_backlog = group_backlog
        runner.on_wait = self.beat
        self.beat()

    def beat(self) -> None:
        self.beat_at = self._clock()

    def probe(self) -> None:
        """The consumer's lag, at most once per `lag_interval_s` (the consumer is the loop's: only
        the loop thread may ask it)."""
        now = self._clock()
        if self.runner is None or now < self._next_probe:
            return
        self._next_probe = now + self.lag_interval_s
        try:
            lag = self.runner.consumer.lag(self.runner.lag_timeout)  # the loop waits with it
        except BusError as exc:
            self.lag_error, self.lag_at = str(exc), self._clock()
            return
        self.lag = {f"{topic}[{partition}]": n for (topic, partition), n in sorted(lag.items())}
        self.lag_error, self.lag_at = None, self._clock()
        if sum(lag.values()) > 0:
            if self.lag_since is None:
                self.lag_since = now
        else:
            self.lag_since = None
        self._probe_group(now, assigned=bool(lag))

    def _probe_group(self, now: float, *, assigned: bool) -> None:
        """While nothing is assigned: does the group have records waiting that nobody commits?"""
        if assigned or self._group_backlog is None:
            self.group_waiting = self.unassigned_since = self._group_committed = None
            return
        try:
            backlog = self._group_backlog()
        except BusError as exc:
            self.lag_error = f"group offsets: {exc}"
            return
        if backlog is None:
            return
        waiting, committed = backlog
        self.group_waiting = waiting
        if waiting <= 0 or committed != self._group_committed:
            # Nothing waits, or another member is committing: not a stall (yet).
            self.unassigned_since = now if waiting > 0 else None
        elif self.unassigned_since is None:
            self.unassigned_since = now
        self._group_committed = committed

    def stopped(self) -> None:
        self.stopping = True

    def fetch_stalled(self) -> bool:
        """The loop comes round (it is asking), records wait on the consumer's partitions, none
        is in hand, and none was handled for `rejoin_after_s` (nor since the last rejoin): the
        consumer fetches nothing. Asked by the loop, before each poll."""
        runner = self.runner
        if runner is None or runner.in_hand or self.lag_error is not None:
            return False
        waits_since = self.lag_since if self.lag_since is not None else self.unassigned_since
        if waits_since is None:
            return False
        now = self._clock()
        since = max(waits_since, runner.last_handled_at or self.started_at, self._rejoined_at or 0.0)
        return now - since > self.rejoin_after_s

    def fetch_stall_reason(self) -> str:
        if self.lag_since is None and self.unassigned_since is not None:
            return (f"no partition assigned for more than {self.rejoin_after_s:g} s while {self.waiting()} records "
                    f"of the group wait and no member commits")  # fmt: skip
        return f"no record fetched for more than {self.rejoin_after_s:g} s while {self.waiting()} wait"

    def rejoined(self) -> None:
        """The loop replaced its consumer: the lag is probed again before anything is judged."""
        self.rejoins += 1
        self._rejoined_at = self._clock()
        self.lag, self.lag_since, self._next_probe = None, None, 0.0
        self.group_waiting = self.unassigned_since = self._group_committed = None

    # -- judgements (any thread) ------------------------------------------------------------------
    def _is_stopping(self) -> bool:
        return self.stopping or (self._stop is not None and self._stop.is_set())

    def waiting(self) -> int:
        """Records known to wait: the lag at the last probe plus the batch in hand."""
        in_hand = self.runner.in_hand if self.runner is not None else 0
        if not self.lag and self.unassigned_since is not None:
            return (self.group_waiting or 0) + in_hand  # nothing assigned: the group's waiting records
        return sum((self.lag or {}).values()) + in_hand

    def stalled_for(self) -> float:
        """Seconds without progress: since records began to wait (or the last record was handled,
        if later), or since the loop last came round, whichever is longer. 0 when nothing waits."""
        now = self._clock()
        loop = now - self.beat_at
        runner = self.runner
        if runner is None:
            return loop
        waits = [t for t in (runner.in_hand_since, self.lag_since, self.unassigned_since) if t is not None]
        if not waits:
            return loop
        since = max(min(waits), runner.last_handled_at or self.started_at)
        return max(loop, now - since)

    def health(self) -> Verdict:
        if self._is_stopping():
            return Verdict(False, "stopping")
        quiet = self._clock() - self.beat_at
        if quiet > self.stuck_s:
            return Verdict(False, f"the loop has not come round for {quiet:.0f} s (stuck_s {self.stuck_s:g})")
        return Verdict(True, "the loop runs")

    def readiness(self) -> Verdict:
        if self._is_stopping():
            return Verdict(False, "stopping")
        stalled = self.stalled_for()
        if stalled > self.no_progress_s:
            return Verdict(False, self._stall_reason(stalled))
        if self.lag_error is not None:
            return Verdict(False, f"cluster unreachable: {self.lag_error}")
        if self.lag is None:
            return Verdict(False, "starting: lag not probed yet")
        if not self.lag:
            return Verdict(False, "no partitions assigned (joining the group, or more members than partitions)")
        waiting = self.waiting()
        return Verdict(True, f"making progress ({waiting} records waiting)" if waiting else "caught up (lag 0)")

    def _stall_reason(self, stalled: float) -> str:
        loop = self._clock() - self.beat_at
        if loop >= stalled and not self.waiting():
            return f"no progress for {stalled:.0f} s: the loop has not come round"
        if not self.lag and self.unassigned_since is not None:
            return (f"no progress for {stalled:.0f} s: no partition assigned while {self.waiting()} records of the "
                    f"group wait and no member commits them")  # fmt: skip
        return f"no progress for {stalled:.0f} s while {self.waiting()} records wait"

    def progress(self) -> dict[str, Any]:
        """The numbers: last record handled (time, offsets), last commit, lag, records handled."""
        now, wall, runner = self._clock(), self._wall_offset, self.runner

        def at(t: float | None) -> str | None:
            return None if t is None else _iso(t + wall)

        last = runner.last_record if runner is not None else None
        return {
            "service": self.name,
            "started_at": at(self.started_at),
            "loop_round_at": at(self.beat_at),
            "records_handled": runner.handled if runner is not None else 0,
            "last_record": None
            if last is None or runner is None
            else {
                "topic": last[0],
                "partition": last[1],
                "offset": last[2],
                "timestamp": _iso(last[3] / 1000),
                "handled_at": at(runner.last_handled_at),
            },
            "last_commit_at": at(runner.committed_at if runner is not None else None),
            "in_hand": runner.in_hand if runner is not None else 0,
            "lag": sum(self.lag.values()) if self.lag is not None else None,
            "lag_by_partition": self.lag,
            "lag_probed_at": at(self.lag_at),
            "lag_error": self.lag_error,
            "group_waiting": self.group_waiting,
            "stalled_for_s": round(self.stalled_for(), 3),
            "rejoins": self.rejoins,
            "no_progress_s": self.no_progress_s,
            "age_s": round(now - self.started_at, 3),
        }


def group_backlog(bus: Bus, inputs: Sequence[str] | str, consumer: Callable[[], Consumer],
                  timeout: float = 5.0) -> GroupBacklog | None:  # fmt: skip
    """The `GroupBacklog` of a member subscribed to `inputs`: end offsets of every partition of
    those topics (the admin client) against the group's committed offsets there (the member's
    consumer, the current one: a rejoin replaces it). A partition the group never committed
    counts from 0 (services read from the earliest offset). None for a pattern subscription."""
    if isinstance(inputs, str):
        return None
    topics = list(inputs)
    admin = bus.admin()

    def backlog() -> tuple[int, int]:
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            try:
                for partition, end in enumerate(admin.end_offsets(topic, timeout)):
                    ends[(topic, partition)] = end
            except BusError as exc:
                if exc.code != BusCode.UNKNOWN_TOPIC:  # a topic not created yet holds nothing
                    raise
        if not ends:
            return 0, 0
        waiting = committed_sum = 0
        for topic, partition, offset in consumer().committed(list(ends), timeout):
            done = offset if offset is not None and offset >= 0 else 0
            waiting += max(0, ends[(topic, partition)] - done)
            committed_sum += done
        return waiting, committed_sum

    return backlog


class StallAlarm:
    """Watches a `Liveness` in its own thread: one NO_PROGRESS alert per stall, on metrics.alerts
    with the service's name as source, and a log line when the service moves again."""

    def __init__(self, liveness: Liveness, producer: Producer, *, every_s: float | None = None) -> None:
        self.liveness = liveness
        self.producer = producer
        self.every_s = every_s if every_s is not None else min(1.0, liveness.no_progress_s / 4)
        self.codec = Codec(Alert)
        self.stalled = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kstrade-liveness-{liveness.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            self.check()

    def check(self) -> None:
        live = self.liveness
        if live._is_stopping():
            return
        stalled = live.stalled_for()
        name = live.name
        if stalled > live.no_progress_s and not self.stalled:
            self.stalled = True
            reason = live._stall_reason(stalled)
            print(f"{name}: NO_PROGRESS: {reason}", file=sys.stderr, flush=True)
            self._publish(f"{name}: {reason} (no_progress_s {live.no_progress_s:g})")
        elif self.stalled and stalled <= live.no_progress_s:
            self.stalled = False
            handled = live.runner.handled if live.runner is not None else 0
            print(f"{name}: moving again: {handled} records handled, {live.waiting()} waiting",
                  file=sys.stderr, flush=True)  # fmt: skip

    def _publish(self, message: str) -> None:
        name = self.liveness.name
        now_ns = time.time_ns()
        alert = Alert(
            timestamp=datetime.fromtimestamp(now_ns / 1e9, UTC), severity=Severity.CRITICAL, source=name,
            code=AlertCode.NO_PROGRESS, message=message,
        )  # fmt: skip
        try:
            self.producer.send(METRICS_ALERTS, self.codec.encode(alert), key=AlertCode.NO_PROGRESS.encode(),
                               headers=self.codec.headers(now_ns, name))  # fmt: skip
            self.producer.flush(5.0)
        except BusError as exc:  # the cluster may be what stalls us: the producer keeps trying
            print(f"{name}: NO_PROGRESS alert not acknowledged yet: {exc}", file=sys.stderr, flush=True)


class HealthEndpoint:
    """`/healthz`, `/readyz` and `/progress` of one `Liveness`, served from a daemon thread."""

    def __init__(self, liveness: Liveness, addr: str = "127.0.0.1", port: int = 0) -> None:
        live = liveness

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/progress":
                    status, body = 200, live.progress()
                elif path in ("/healthz", "/readyz"):
                    verdict = live.health() if path == "/healthz" else live.readiness()
                    status = 200 if verdict.ok else 503
                    body = {"status": "ok" if verdict.ok else "unavailable", "reason": verdict.reason,
                            "progress": live.progress()}  # fmt: skip
                else:
                    status, body = 404, {"error": f"no {path}: try /healthz, /readyz or /progress"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
                return

        self.server = ThreadingHTTPServer((addr, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"kstrade-health-{liveness.name}", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def watching(bus: Bus, liveness: Liveness, settings: ServiceSettings) -> Iterator[HealthEndpoint | None]:
    """The alarm and (when enabled) the endpoint of `liveness` for as long as the block runs;
    logs where the endpoint listens."""
    alarm = StallAlarm(liveness, bus.producer())
    endpoint = (
        HealthEndpoint(liveness, settings.health_addr, settings.health_port) if settings.health_endpoint else None
    )
    alarm.start()
    if endpoint is not None:
        endpoint.start()
        print(f"{liveness.name}: health on {endpoint.url} (/healthz /readyz /progress)", file=sys.stderr, flush=True)
    try:
        yield endpoint
    finally:
        liveness.stopped()
        if endpoint is not None:
            endpoint.close()
        alarm.close()
