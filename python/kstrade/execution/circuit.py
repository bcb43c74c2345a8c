"""The circuit breaker in front of the broker: after N consecutive failed sends it opens (no
orders go out, an alert is raised), and after a cooldown it half-opens to let one trial through;
a success closes it, a failure opens it again for another cooldown.
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    def __init__(self, failures: int = 5, cooldown_s: float = 60.0) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("failures must be >= 1 and cooldown_s > 0")
        self.threshold = failures
        self.cooldown_ns = int(cooldown_s * 1e9)
        self.consecutive = 0
        self.opened_ns: int | None = None
        self._state = BreakerState.CLOSED

    def state(self, now_ns: int) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self.opened_ns is not None
            and now_ns >= self.opened_ns + self.cooldown_ns
        ):
            self._state = BreakerState.HALF_OPEN
        return self._state

    def allows(self, now_ns: int) -> bool:
        return self.state(now_ns) is not BreakerState.OPEN

    def success(self) -> None:
        self.consecutive = 0
        self.opened_ns = None
        self._state = BreakerState.CLOSED

    def failure(self, now_ns: int) -> bool:
        """Count a failed send; True when this failure opened the breaker."""
        self.consecutive += 1
        half_open = self.state(now_ns) is BreakerState.HALF_OPEN
        if half_open or (self._state is BreakerState.CLOSED and self.consecutive >= self.threshold):
            self._state = BreakerState.OPEN
            self.opened_ns = now_ns
            return True
        return False
