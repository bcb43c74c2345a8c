"""The dashboard's reader: one background thread that follows the pipeline's topics from their
start in a consumer group of its own (`kstrade.dashboard.<random>`) and hands each poll to the
`DashboardView`. It never commits: no stage's group, nor its own, ever sees an offset from it,
so a dashboard started twice reads everything twice and disturbs nothing. Every few seconds it
also looks at every topic's end offsets (the message counts) and at how far it is behind."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from kstrade.bus import Bus, BusError, Consumer

from .view import FOLLOWED, FOLLOWED_RE, DashboardView

log = logging.getLogger(__name__)

#: The dashboard's consumer groups: made afresh each start, under this prefix (what an ACL grants).
DASHBOARD_GROUPS = "kstrade.dashboard."


def new_group() -> str:
    return f"{DASHBOARD_GROUPS}{uuid.uuid4().hex[:12]}"


class TopicFollower:
    """Reads the followed topics into `view` until `stop`. `look_interval_s`: how often the topic
    counts and the lag are measured (each is a request per topic or partition on Kafka)."""

    def __init__(
        self,
        bus: Bus,
        view: DashboardView,
        *,
        group: str | None = None,
        poll_timeout_s: float = 0.5,
        look_interval_s: float | None = None,
    ) -> None:
        self.bus, self.view = bus, view
        self.group = group or view.group or new_group()
        view.group = self.group
        self.poll_timeout_s = poll_timeout_s
        self.look_interval_s = look_interval_s if look_interval_s is not None else (2.0 if bus.transport == "memory"
                                                                                   else 10.0)  # fmt: skip
        self._stop = threading.Event()
        self._look_now = threading.Event()
        self._looked = threading.Condition()
        self._looks = 0
        self._thread: threading.Thread | None = None

    def start(self) -> TopicFollower:
        self._thread = threading.Thread(target=self._run, name="kstrade-dashboard-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_caught_up(self, timeout: float = 30.0) -> bool:
        """Wait until a look taken after this call finds nothing left to read (tests, tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._looked:
                wanted = self._looks + 1
                self._look_now.set()
                while self._looks < wanted and time.monotonic() < deadline:
                    self._looked.wait(deadline - time.monotonic())
                if self._looks >= wanted and self.view.behind == 0:
                    return True
        return False

    def _run(self) -> None:
        # Never a commit (auto-commit off, and no commit call): the group only names a reader.
        consumer = self.bus.consumer(self.group, {"auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            consumer.subscribe_pattern(FOLLOWED)
            last_look, read_since_look = 0.0, False
            while not self._stop.is_set():
                try:
                    records = consumer.poll(2000, self.poll_timeout_s)
                except BusError as exc:  # the cluster away: say so, and keep trying
                    self._failed(f"reading: {exc}")
                    self._stop.wait(1.0)
                    continue
                if records:
                    self.view.apply(records)
                    read_since_look = True
                now = time.monotonic()
                # Look on the interval, when a waiter asks, and soon after a burst of records ends
                # (so the counts follow what was just read without a request per poll).
                settled = not records and read_since_look and now - last_look >= self.look_interval_s / 4
                if now - last_look >= self.look_interval_s or settled or (not records and self._look_now.is_set()):
                    self._look_now.clear()
                    last_look, read_since_look = now, False
                    self._look(consumer)
        finally:
            consumer.close()

    def _failed(self, message: str) -> None:
        if self.view.reader_error != message:
            log.warning("dashboard: %s", message)
        self.view.reader_error = message

    def _look(self, consumer: Consumer) -> None:
        try:
            admin = self.bus.admin()
            counts = {t: sum(admin.end_offsets(t, 5.0)) for t in admin.list_topics(5.0) if not t.startswith("__")}
            lag = consumer.lag(5.0)
            owned = {t for t, _ in lag}
            behind = sum(lag.values()) + sum(
                n for t, n in counts.items() if t not in owned and FOLLOWED_RE.match(t) is not None
            )
            self.view.reader_error = None
            self.view.set_offsets(counts, behind)
        except BusError as exc:
            self._failed(f"counting: {exc}")
        finally:
            with self._looked:
                self._looks += 1
                self._looked.notify_all()
