"""The shared clock and retry helper."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstrade.clock import EventClock
from kstrade.retry import Backoff, retry


@given(st.lists(st.integers(min_value=0, max_value=2**62), max_size=50))
def test_event_time_never_goes_backwards(events: list[int]) -> None:
    clock = EventClock()
    seen = 0
    for e in events:
        clock.advance_to(e)
        assert clock.now_ns() == max(seen, e)
        seen = clock.now_ns()


@given(
    initial=st.floats(0.01, 5),
    factor=st.floats(1, 4),
    cap=st.floats(5, 120),
    jitter=st.floats(0, 0.5),
    seed=st.integers(0, 2**32),
)
def test_backoff_grows_is_capped_and_jittered_within_bounds(
    initial: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    b = Backoff(initial, factor, cap, jitter, attempts=8)
    delays = list(b.delays(random.Random(seed)))
    assert len(delays) == 8
    for n, d in enumerate(delays):
        base = min(cap, initial * factor**n)
        assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


def test_retry_waits_on_the_given_clock_and_gives_up_with_the_last_error() -> None:
    clock = EventClock()
    calls: list[int] = []

    def flaky() -> str:
        calls.append(clock.now_ns())
        if len(calls) < 3:
            raise ConnectionError(f"down #{len(calls)}")
        return "up"

    seen: list[int] = []
    assert (
        retry(flaky, Backoff(1.0, 2.0, 10.0, 0.0, attempts=5), clock=clock, on_retry=lambda n, e, d: seen.append(n))
        == "up"
    )
    assert calls == [0, 1_000_000_000, 3_000_000_000]  # waited 1 s then 2 s, in event time
    assert seen == [1, 2]

    def always_down() -> None:
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):
        retry(always_down, Backoff(0.1, 2.0, 1.0, 0.0, attempts=2), clock=EventClock())
    with pytest.raises(KeyError):  # errors outside retry_on are not retried
        retry(lambda: {}["x"], Backoff(attempts=5), retry_on=(ConnectionError,), clock=EventClock())
