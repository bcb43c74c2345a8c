"""The one retry/backoff helper: exponential backoff with jitter, bounded in attempts.

Used wherever a remote may be briefly unavailable (the exchange feed, REST backfill, the
broker of record). Jitter spreads reconnects so many clients do not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from kstrade.clock import Clock, WallClock

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry n (from 0): min(max_delay, initial * factor**n), then +/- jitter."""

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.2  # fraction of the delay, drawn uniformly in [-jitter, +jitter]
    attempts: int | None = 3  # retries after the first try; None retries forever

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.max_delay < self.initial or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid backoff {self}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rng = rng or random.Random()
        n = 0
        while self.attempts is None or n < self.attempts:
            base = min(self.max_delay, self.initial * self.factor**n)
            yield base * (1 + rng.uniform(-self.jitter, self.jitter))
            n += 1


def retry(
    action: Callable[[], T],
    backoff: Backoff,
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    clock: Clock | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run `action`; on an exception in `retry_on`, wait and try again. The last error is raised
    when the attempts run out. `on_retry(attempt, error, delay)` is told of each retry."""
    clock = clock or WallClock()
    delays = backoff.delays(rng)
    attempt = 0
    while True:
        try:
            return action()
        except retry_on as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            clock.sleep(delay)
