"""The per-candle join under any arrival order: each candle decided at most once, a symbol's
candles in time order, predictions never mixed across candle times, nothing left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kstrade.schemas.models import PredictedDirection
from kstrade.signals.decision import ModelVote
from kstrade.signals.join import Key, MarketBook, PredictionJoin

T0 = datetime(2026, 1, 5, tzinfo=UTC)
DEADLINE = 2_000_000_000
SYMBOLS = ("BTC-USD", "ETH-USD")
MODELS = ("lstm", "transformer", "ensemble")  # "ensemble" has no weight: it must be ignored

arrival = st.one_of(
    st.tuples(st.just("prediction"), st.sampled_from(MODELS), st.sampled_from(SYMBOLS), st.integers(0, 5)),
    st.tuples(st.just("close"), st.just(""), st.sampled_from(SYMBOLS), st.integers(0, 5)),
    st.tuples(st.just("features"), st.just(""), st.sampled_from(SYMBOLS), st.integers(0, 5)),
    st.tuples(st.just("tick"), st.just(""), st.just(""), st.integers(0, 3)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(arrival, max_size=60))
# An older candle that starts waiting after a newer one must still be decided first.
@example([("prediction", "lstm", "BTC-USD", 2), ("tick", "", "", 1), ("prediction", "lstm", "BTC-USD", 1),
          ("tick", "", "", 1)])  # fmt: skip
def test_any_arrival_order_decides_each_candle_once_in_time_order(events: list[tuple[str, str, str, int]]) -> None:
    market = MarketBook()
    join = PredictionJoin({"lstm", "transformer"}, DEADLINE, market)
    now = 0
    decided: list[Key] = []
    votes_seen: dict[Key, set[str]] = {}

    def take(keys: list[Key]) -> None:
        for key in keys:
            context, _ = join.take(key)
            assert all(v.model_version == f"{m}@{key[1].isoformat()}" for m, v in context.votes.items())
            votes_seen[key] = set(context.votes)
            decided.append(key)

    for kind, model, symbol, n in events:
        t = T0 + timedelta(minutes=n)
        if kind == "tick":
            now += n * 1_000_000_000
            take(join.due(now))
        elif kind == "prediction":
            vote = ModelVote(model, f"{model}@{t.isoformat()}", PredictedDirection.UP, 0.6, 0.6)
            take(join.add(vote, symbol, t, now_ns=now, origin_ns=1))
        else:
            if kind == "close":
                market.add_close(symbol, t, 100.0)
            else:
                market.add_features(symbol, t, {"x": 1.0})
            take(join.ready((symbol, t)))
    take(join.due(now + DEADLINE))

    assert len(decided) == len(set(decided))  # at most one decision per candle
    assert not join.pending  # nothing waits forever
    for symbol in SYMBOLS:
        times = [t for s, t in decided if s == symbol]
        assert times == sorted(times)  # a symbol's candles in time order
    assert all(seen <= {"lstm", "transformer"} and seen for seen in votes_seen.values())
    predictions = sum(1 for e in events if e[0] == "prediction")
    used = sum(len(v) for v in votes_seen.values())
    stats = join.stats
    assert used + stats.late + stats.repeated + stats.ignored == predictions  # every prediction accounted for


def test_the_market_book_keeps_every_undecided_candle_up_to_its_backlog(caplog: pytest.LogCaptureFixture) -> None:
    decided: dict[str, datetime] = {}
    book = MarketBook(memory=4, decided_through=decided, backlog=10)
    minute = [T0 + timedelta(minutes=m) for m in range(40)]
    for m in range(12):  # nothing decided yet: kept up to the backlog, the oldest then forgotten
        book.add_close("BTC-USD", minute[m], float(m))
    assert [book.close("BTC-USD", minute[m]) for m in range(12)] == [None, None, *map(float, range(2, 12))]
    assert book.forgotten_undecided == 2
    assert not caplog.records  # warming up (nothing decided yet): let go quietly
    decided["BTC-USD"] = minute[9]  # decided through 9: those go while the book holds more than `memory`
    book.add_close("BTC-USD", minute[12], 12.0)
    kept = [m for m in range(13) if book.close("BTC-USD", minute[m]) is not None]
    assert kept == [9, 10, 11, 12] and book.forgotten_undecided == 2
    assert book.last_close_before("BTC-USD", minute[10]) == 9.0
    for m in range(13, 40):  # decided as they come: the book stays at `memory`
        decided["BTC-USD"] = minute[m - 1]
        book.add_close("BTC-USD", minute[m], float(m))
    assert [m for m in range(40) if book.close("BTC-USD", minute[m]) is not None] == [36, 37, 38, 39]
    assert book.forgotten_undecided == 2
    for m in range(40, 60):  # the models stop: undecided candles pile up past the backlog
        book.add_close("BTC-USD", T0 + timedelta(minutes=m), float(m))
    kept = [m for m in range(60) if book.close("BTC-USD", T0 + timedelta(minutes=m)) is not None]
    assert kept == list(range(50, 60))  # the newest `backlog` undecided; 39..49 forgotten
    assert book.forgotten_undecided == 2 + 11
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "forgetting the price of 2026-01-05T00:39:00+00:00 (1 so far)" in warnings[0]
