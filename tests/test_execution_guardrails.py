"""FTMO guardrails with worked examples: floors, Prague midnight (daylight-saving days included),
trading states, the worst-case check, news, weekend, limits and objectives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kstrade.config import ConfigError, GuardrailSettings, load
from kstrade.execution.account import AccountSnapshot, Position
from kstrade.execution.guardrails import AccountGuard, TradingState
from kstrade.execution.trading_day import next_midnight_ns, trading_day
from kstrade.schemas.models import Side


def ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).astimezone(UTC).timestamp()) * 1_000_000_000


def flat(balance: float, equity: float | None = None) -> AccountSnapshot:
    return AccountSnapshot(balance, balance if equity is None else equity)


def eurusd_long(mark: float = 1.1000, stop: float = 1.0950, qty: float = 1.0) -> Position:
    return Position("t1", "ks-1", "EURUSD", Side.BUY, qty, 1.1000, stop, 1.1100, mark, 100_000)


RULES = GuardrailSettings(stop_slippage_bps=0.0)
MONDAY = ns("2026-01-05T10:00:00+01:00")


def test_presets_and_overrides() -> None:
    two = GuardrailSettings()
    assert (two.max_daily_loss_pct, two.max_loss_mode, two.profit_target_pct) == (5.0, "static", 10.0)
    one = GuardrailSettings(preset="ftmo_1step")
    assert (one.max_daily_loss_pct, one.max_loss_mode, one.best_day_pct) == (3.0, "trailing_eod", 50.0)
    assert GuardrailSettings(preset="ftmo_1step", max_daily_loss_pct=4.0).max_daily_loss_pct == 4.0
    with pytest.raises(ConfigError, match=r"execution\.guardrails\.max_loss_typo"):
        load(None, execution={"guardrails": {"max_loss_typo": 1}})


def test_mt5_password_is_never_read_from_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "k.toml"
    f.write_text('[execution]\nmt5_password = "hunter2"\n')
    with pytest.raises(ConfigError, match="mt5_password"):
        load(f)


def test_prague_midnight_on_ordinary_and_daylight_saving_days() -> None:
    # Winter (CET, +1): midnight of 6 Jan is 5 Jan 23:00 UTC.
    assert next_midnight_ns(MONDAY) == ns("2026-01-05T23:00:00+00:00")
    # 29 Mar 2026, clocks go forward: the day starts 28 Mar 23:00 UTC and lasts 23 hours.
    assert next_midnight_ns(ns("2026-03-28T12:00:00+00:00")) == ns("2026-03-28T23:00:00+00:00")
    assert next_midnight_ns(ns("2026-03-29T12:00:00+00:00")) == ns("2026-03-29T22:00:00+00:00")
    # 25 Oct 2026, clocks go back: the day starts 24 Oct 22:00 UTC and lasts 25 hours.
    assert next_midnight_ns(ns("2026-10-24T12:00:00+00:00")) == ns("2026-10-24T22:00:00+00:00")
    assert next_midnight_ns(ns("2026-10-25T12:00:00+00:00")) == ns("2026-10-25T23:00:00+00:00")
    # The broker's server time (Prague + 1) plays no part: 23:30 UTC on 5 Jan is already the 6th.
    assert str(trading_day(ns("2026-01-05T23:30:00+00:00"))) == "2026-01-06"


@pytest.mark.parametrize(
    "midnight_utc", ["2026-01-05T23:00:00+00:00", "2026-03-28T23:00:00+00:00", "2026-10-24T22:00:00+00:00"]
)
def test_daily_floor_resets_exactly_at_prague_midnight(midnight_utc: str) -> None:
    midnight = ns(midnight_utc)
    guard = AccountGuard(RULES, midnight - 3_600_000_000_000)
    guard.observe(midnight - 3_600_000_000_000, flat(100_000))
    assert guard.daily.floor == 95_000  # first day: initial capital - 5%
    guard.observe(midnight - 1, flat(102_000))  # one nanosecond before: same day, same floor
    assert guard.daily.floor == 95_000
    guard.observe(midnight, flat(102_000))  # midnight: balance 102 000 - 5 000
    assert guard.daily.floor == 97_000
    guard.observe(midnight + 3_600_000_000_000, flat(104_000))
    assert guard.daily.floor == 97_000  # intraday balance does not move it


def test_daily_breach_halts_until_midnight_and_flattens() -> None:
    guard = AccountGuard(RULES, MONDAY)
    events = guard.observe(MONDAY, flat(100_000, 95_000))  # equity at the floor
    assert guard.state is TradingState.HALTED
    assert [(e.code, e.flatten) for e in events] == [("DAILY_LOSS_BREACHED", True)]
    assert guard.check_new_order(MONDAY, flat(100_000), "EURUSD", 0.0) == "TRADING_HALTED"
    # equity recovers the same day: still halted (FTMO: the day is lost)
    guard.observe(MONDAY + 3_600_000_000_000, flat(100_000))
    assert guard.state is TradingState.HALTED
    # the next Prague midnight (5 Jan 23:00 UTC) lifts it; the new floor is 95 000 - 5 000
    guard.observe(ns("2026-01-05T23:00:00+00:00"), flat(95_000))
    assert guard.state is TradingState.ACTIVE
    assert guard.daily.floor == 90_000


def test_max_loss_breach_halts_for_good() -> None:
    rules = GuardrailSettings(max_daily_loss_pct=20.0, stop_slippage_bps=0.0)
    guard = AccountGuard(rules, MONDAY)
    guard.observe(MONDAY, flat(100_000, 89_999))
    assert guard.state is TradingState.HALTED and guard.halted_for_good
    guard.observe(ns("2026-01-07T10:00:00+01:00"), flat(95_000))
    assert guard.state is TradingState.HALTED


def test_trailing_end_of_day_maximum_loss() -> None:
    guard = AccountGuard(GuardrailSettings(preset="ftmo_1step"), MONDAY)
    assert guard.max_loss.floor == 90_000
    guard.observe(MONDAY, flat(100_000, 108_000))  # intraday equity high: no effect
    assert guard.max_loss.floor == 90_000
    guard.observe(ns("2026-01-06T00:00:00+01:00"), flat(103_000))  # end of day balance 103 000
    assert guard.max_loss.floor == 93_000
    guard.observe(ns("2026-01-07T00:00:00+01:00"), flat(101_000))  # lower end of day: floor stays
    assert guard.max_loss.floor == 93_000
    assert guard.daily.floor == 101_000 - 3_000


def test_reducing_near_a_limit() -> None:
    guard = AccountGuard(RULES, MONDAY)
    guard.observe(MONDAY, flat(100_000, 96_001))  # 3 999 of 5 000 used: < 80 %
    assert guard.state is TradingState.ACTIVE
    events = guard.observe(MONDAY, flat(100_000, 96_000))  # 4 000 of 5 000 = 80 %
    assert guard.state is TradingState.REDUCING
    assert [e.code for e in events] == ["STATE_REDUCING"]
    assert guard.check_new_order(MONDAY, flat(100_000, 96_000), "EURUSD", 0.0) == "REDUCING_ONLY"


def test_worst_case_check_counts_open_stops_and_the_new_stop() -> None:
    guard = AccountGuard(RULES, MONDAY)
    account = AccountSnapshot(100_000, 100_000, (eurusd_long(),))  # 1 lot, 50 pips to its stop: 500
    guard.observe(MONDAY, account)
    # 100 000 - 500 - 95 000 = 4 500 left for the new order's loss to its stop
    assert guard.headroom(account) == pytest.approx(4_500)
    assert guard.check_new_order(MONDAY, account, "EURUSD", 4_500) is None
    assert guard.check_new_order(MONDAY, account, "EURUSD", 4_501) == "WORST_CASE_BREACH"


def test_worst_case_includes_stop_slippage() -> None:
    guard = AccountGuard(GuardrailSettings(stop_slippage_bps=10.0), MONDAY)
    account = AccountSnapshot(100_000, 100_000, (eurusd_long(),))
    # the stop fills 10 bps worse: 1.0950 * 0.999 = 1.093905; loss (1.1 - 1.093905) * 100 000 = 609.5
    assert guard.headroom(account) == pytest.approx(5_000 - 609.5)


def test_positions_carried_over_midnight_are_checked_against_tomorrows_floor() -> None:
    # Closed profits lifted the balance to 110 000 today; today's floor is still 95 000, but any
    # position kept overnight meets a floor of 110 000 - 5 000 tomorrow: only 5 000 may be at risk.
    guard = AccountGuard(RULES, MONDAY)
    guard.observe(MONDAY, flat(110_000))
    assert guard.headroom(flat(110_000)) == pytest.approx(5_000)
    assert guard.check_new_order(MONDAY, flat(110_000), "EURUSD", 5_001) == "WORST_CASE_BREACH"


def test_open_positions_and_order_rate_limits() -> None:
    guard = AccountGuard(GuardrailSettings(max_open_positions=1, max_orders_per_minute=2), MONDAY)
    assert guard.check_new_order(MONDAY, AccountSnapshot(100_000, 100_000, (eurusd_long(),)), "EURUSD", 0) == (
        "MAX_OPEN_POSITIONS"
    )
    guard.record_order(MONDAY)
    guard.record_order(MONDAY + 1)
    assert guard.check_new_order(MONDAY + 2, flat(100_000), "EURUSD", 0) == "ORDER_RATE_LIMIT"
    assert guard.check_new_order(MONDAY + 60_000_000_001, flat(100_000), "EURUSD", 0) is None


def test_news_blackout_for_funded_accounts(tmp_path: Path) -> None:
    calendar = tmp_path / "news.csv"
    calendar.write_text(
        "time,currencies,impact,title\n"
        "2026-01-09T14:30:00+01:00,USD,high,Non-farm payrolls\n"
        "2026-01-09T10:00:00+01:00,EUR,low,Something minor\n"
    )
    from kstrade.execution.guardrails import NewsBlackout

    news = NewsBlackout.from_file(calendar, 2.0)
    funded = AccountGuard(GuardrailSettings(funded=True), MONDAY, news)
    nfp = ns("2026-01-09T14:30:00+01:00")
    minute = 60_000_000_000
    assert funded.check_new_order(nfp - 2 * minute, flat(100_000), "EURUSD", 0) == "NEWS_BLACKOUT"
    # nor in the 5 minutes before the window, when it would have to be closed again at once
    assert funded.check_new_order(nfp - 7 * minute, flat(100_000), "EURUSD", 0) == "NEWS_BLACKOUT"
    assert funded.check_new_order(nfp - 7 * minute - 1, flat(100_000), "EURUSD", 0) is None
    assert funded.check_new_order(nfp + 2 * minute, flat(100_000), "BTC-USD", 0) == "NEWS_BLACKOUT"
    assert funded.check_new_order(nfp + 2 * minute + 1, flat(100_000), "EURUSD", 0) is None
    assert funded.check_new_order(nfp, flat(100_000), "EURGBP", 0) is None  # not targeted
    assert funded.check_new_order(ns("2026-01-09T10:00:00+01:00"), flat(100_000), "EURGBP", 0) is None  # low impact
    # targeted positions are closed before the window opens (closing inside it is a breach too)
    eurusd, eurgbp = eurusd_long(), Position("t2", "ks-2", "EURGBP", Side.BUY, 1, 0.86, 0.85, 0.87, 0.86, 100_000)
    book = AccountSnapshot(100_000, 100_000, (eurusd, eurgbp))
    assert [e.code for e in funded.observe(nfp - 7 * minute - 1, book)] == []
    [close] = funded.observe(nfp - 7 * minute, book)
    assert (close.code, close.flatten, close.symbols) == ("NEWS_CLOSE", True, ("EURUSD",))
    assert funded.observe(nfp - 2 * minute, book) == []  # inside the window: too late, closing is forbidden
    swing = AccountGuard(GuardrailSettings(funded=True, swing=True), MONDAY, news)
    assert swing.check_new_order(nfp, flat(100_000), "EURUSD", 0) is None
    challenge = AccountGuard(GuardrailSettings(), MONDAY, news)
    assert challenge.check_new_order(nfp, flat(100_000), "EURUSD", 0) is None


def test_weekend_close_for_funded_accounts() -> None:
    guard = AccountGuard(GuardrailSettings(funded=True), MONDAY)
    friday_late = ns("2026-01-09T21:45:00+01:00")
    assert guard.check_new_order(friday_late - 1_000_000_000, flat(100_000), "EURUSD", 0) is None
    assert guard.check_new_order(friday_late, flat(100_000), "EURUSD", 0) == "WEEKEND_CLOSE"
    assert guard.check_new_order(ns("2026-01-11T23:04:00+01:00"), flat(100_000), "EURUSD", 0) == "WEEKEND_CLOSE"
    assert guard.check_new_order(ns("2026-01-11T23:05:00+01:00"), flat(100_000), "EURUSD", 0) is None
    events = guard.observe(friday_late, AccountSnapshot(100_000, 100_000, (eurusd_long(),)))
    assert [(e.code, e.flatten) for e in events] == [("WEEKEND_CLOSE", True)]


def test_profit_target_needs_minimum_trading_days() -> None:
    guard = AccountGuard(RULES, MONDAY)
    for day in range(3):
        guard.record_open(MONDAY + day * 86_400_000_000_000)
    assert guard.observe(MONDAY + 3 * 86_400_000_000_000, flat(110_000)) == []  # 3 days only
    guard.record_open(MONDAY + 3 * 86_400_000_000_000)
    codes = [e.code for e in guard.observe(MONDAY + 3 * 86_400_000_000_000, flat(110_000))]
    assert codes == ["PROFIT_TARGET_REACHED"]
    assert guard.observe(MONDAY + 3 * 86_400_000_000_000, flat(110_000)) == []  # once


def test_best_day_rule_1step() -> None:
    guard = AccountGuard(GuardrailSettings(preset="ftmo_1step"), MONDAY)
    guard.record_close(MONDAY, 6_000)
    guard.record_close(MONDAY + 86_400_000_000_000, 4_000)
    assert not guard.best_day_ok()  # 6 000 > 50 % of 10 000
    guard.record_close(MONDAY + 2 * 86_400_000_000_000, 2_000)
    assert guard.best_day_ok()  # 6 000 <= 50 % of 12 000


def test_state_survives_a_restart() -> None:
    guard = AccountGuard(RULES, MONDAY)
    guard.observe(MONDAY, flat(100_000, 94_000))
    guard.record_open(MONDAY)
    again = AccountGuard(RULES, MONDAY)
    again.restore(guard.snapshot())
    assert again.state is TradingState.HALTED
    assert again.halted_until_ns == guard.halted_until_ns == ns("2026-01-05T23:00:00+00:00")
    assert again.trading_days == guard.trading_days


def test_a_day_started_long_after_midnight_is_flagged() -> None:
    guard = AccountGuard(RULES, MONDAY)
    guard.observe(ns("2026-01-05T23:58:00+01:00"), flat(100_000))
    assert guard.observe(ns("2026-01-06T00:00:01+01:00"), flat(100_000)) == []  # watching: on time
    guard.observe(ns("2026-01-06T22:00:00+01:00"), flat(100_000))
    # down from 22:00 to 08:00: stops may have filled at the broker before the day's balance is seen
    [late] = guard.observe(ns("2026-01-07T08:00:00+01:00"), flat(97_000))
    assert (late.code, late.severity) == ("DAY_START_LATE", "CRITICAL")
    restored = AccountGuard(RULES, MONDAY)
    restored.restore(guard.snapshot())
    assert restored.last_seen_ns == ns("2026-01-07T08:00:00+01:00")
