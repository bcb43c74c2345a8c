"""Operator commands to the execution stage over `control.execution`: the writing side, shared by
`python -m kstrade control` and the Telegram bot (the metrics collector).

    halt      no new orders until a resume; open positions keep their stops and targets
    flatten   close every open position at market, then halt
    resume    lift an operator's halt (a loss limit's halt stands: the FTMO rules decide that)

A command is a `ControlCommand` keyed by account (`execution.account`, or `*` for every account),
with who issued it, why and when. The execution stage applies each command once (its id is
journaled), keeps the hold across restarts, and acknowledges it on `metrics.alerts` as
`OPERATOR_HALT` / `OPERATOR_FLATTEN` / `OPERATOR_RESUME` with the state it left and the command's
id in the message: `AckWatch` waits for that line, so the operator learns whether an execution
process took the command, not only that the bus did.

Who may write the topic is the ACL model's business (`kstrade.bus.acl`): the operator principal
and the metrics collector (for Telegram), nobody else.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from datetime import UTC, datetime

from kstrade.bus import Bus, Consumer
from kstrade.bus.topics import CONTROL_EXECUTION, METRICS_ALERTS, OPERATOR_GROUPS
from kstrade.codes import AlertCode
from kstrade.schemas import Codec
from kstrade.schemas.models import Alert, ControlAction, ControlCommand

#: The acknowledgement code of each action, as the execution stage emits it.
ACK_CODES = {
    ControlAction.HALT: AlertCode.OPERATOR_HALT,
    ControlAction.RESUME: AlertCode.OPERATOR_RESUME,
    ControlAction.FLATTEN: AlertCode.OPERATOR_FLATTEN,
}


def operator_name() -> str:
    """Who is at the command line: `cli:<user>@<host>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def make_command(action: ControlAction | str, *, account: str, issued_by: str, reason: str) -> ControlCommand:
    return ControlCommand(
        timestamp=datetime.now(UTC), command_id=uuid.uuid4(), account=account, action=ControlAction(action.upper()),
        issued_by=issued_by, reason=reason,
    )  # fmt: skip


def publish(bus: Bus, command: ControlCommand, *, stage: str = "operator", timeout: float = 30.0) -> None:
    """Write the command and wait until the cluster has it (raises `BusError` if it does not)."""
    codec = Codec(ControlCommand)
    producer = bus.producer()
    now_ns = time.time_ns()
    producer.send(CONTROL_EXECUTION, codec.encode(command), key=command.account.encode(),
                  headers=codec.headers(now_ns, stage))  # fmt: skip
    producer.flush(timeout)


def settle_at_end(consumer: Consumer, *, settle_s: float = 1.0, timeout: float = 30.0) -> None:
    """Poll a consumer subscribed with `auto.offset.reset = latest` until it is assigned, and a
    moment more: its "latest" position is looked up once the partitions are assigned, and only
    what is written after that is what it will read."""
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(max_records=100, timeout=0.2)
    end = time.monotonic() + settle_s
    while time.monotonic() < end:
        consumer.poll(max_records=100, timeout=0.1)


class AckWatch:
    """Reads `metrics.alerts` from its end, to see the execution stage acknowledge a command.
    Open it before publishing: what is written after it is assigned is what it sees."""

    def __init__(self, bus: Bus, *, settle_s: float = 1.0) -> None:
        group = f"{OPERATOR_GROUPS}{uuid.uuid4().hex[:12]}"
        self.consumer: Consumer = bus.consumer(group, {"auto.offset.reset": "latest", "enable.auto.commit": "false"})
        self.consumer.subscribe([METRICS_ALERTS])
        settle_at_end(self.consumer, settle_s=settle_s)
        self._codec = Codec(Alert)

    def wait(self, command: ControlCommand, timeout: float) -> Alert | None:
        """The acknowledgement of `command`, or None if none came within `timeout` seconds."""
        code, marker = ACK_CODES[command.action], str(command.command_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.consumer.poll(max_records=500, timeout=0.2):
                try:
                    alert = self._codec.decode_record(record)
                except Exception:  # not ours to judge: the collector counts unreadable alerts
                    continue
                if isinstance(alert, Alert) and alert.code == code and marker in alert.message:
                    return alert
        return None

    def close(self) -> None:
        self.consumer.close()
