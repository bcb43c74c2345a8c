"""Prop-firm guardrails (FTMO 2-Step by default, 1-Step as a preset): the daily and maximum loss
floors, the trading state (ACTIVE / REDUCING / HALTED), the pre-trade worst-case check, news
blackouts, the weekend close, open-position and order-rate limits, profit target and trading days.

Pure logic: every method takes the time from the caller (the stage clock) and the account as a
snapshot, so the same guard runs live, in replays and under property tests.
"""

from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from kstrade.codes import AlertCode, Drop
from kstrade.codes import TradingState as TradingState  # defined with the other codes; imported from here too
from kstrade.config import GuardrailSettings
from kstrade.execution.account import AccountSnapshot
from kstrade.execution.trading_day import next_midnight_ns, prague_midnight_ns, to_datetime, to_ns, trading_day

_MINUTE_NS = 60_000_000_000
#: A day roll more than this after the last observation did not see the midnight balance.
_LATE_ROLL_NS = 5 * _MINUTE_NS


#: The alert announcing a move to each state (HALTED is announced by the breach that caused it).
_STATE_ALERTS = {TradingState.ACTIVE: AlertCode.STATE_ACTIVE, TradingState.REDUCING: AlertCode.STATE_REDUCING}


@dataclass(frozen=True, slots=True)
class OperatorHold:
    """An operator's halt (`control.execution`): no new orders until an operator resumes;
    with `flatten`, every open position is closed as well, and kept closed, while it holds."""

    command_id: str
    issued_by: str
    reason: str
    issued_ns: int
    flatten: bool = False

    def snapshot(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "issued_by": self.issued_by, "reason": self.reason,
                "issued_ns": self.issued_ns, "flatten": self.flatten}  # fmt: skip

    @classmethod
    def restore(cls, data: dict[str, Any]) -> OperatorHold:
        return cls(str(data["command_id"]), str(data["issued_by"]), str(data["reason"]), int(data["issued_ns"]),
                   bool(data["flatten"]))  # fmt: skip


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """Something the trader must hear about; `flatten` asks the stage to close every position, or
    only those on `symbols` when it names some."""

    code: str
    severity: str
    message: str
    flatten: bool = False
    symbols: tuple[str, ...] = ()


class DailyLossGuard:
    """FTMO Maximum Daily Loss: each day's floor is the balance at Prague midnight minus a share
    of the initial capital (the first day starts from the initial capital)."""

    def __init__(self, rules: GuardrailSettings, start_ns: int) -> None:
        self.limit = rules.max_daily_loss_pct / 100 * rules.initial_balance
        self.day: date = trading_day(start_ns)
        self.day_start_balance = rules.initial_balance
        #: [start, end) of `_bounds_day` in epoch ns: a time inside is on that Prague day, so
        #: `roll` needs no time zone conversion on every event (recomputed when `day` changes).
        self._bounds_day: date | None = None
        self._bounds = (0, 0)

    @property
    def floor(self) -> float:
        return self.day_start_balance - self.limit

    def bounds(self) -> tuple[int, int]:
        """Prague midnight starting `day` and the one ending it, in epoch ns."""
        if self._bounds_day != self.day:
            try:
                self._bounds = (prague_midnight_ns(self.day), prague_midnight_ns(self.day + timedelta(days=1)))
            except OverflowError:  # the last day datetime knows: always convert
                self._bounds = (0, 0)
            self._bounds_day = self.day
        return self._bounds

    def roll(self, now_ns: int, balance: float) -> bool:
        """Start a new day if `now_ns` is past Prague midnight; True when it did."""
        start, end = self.bounds()
        if start <= now_ns < end:
            return False  # trading_day(now_ns) == self.day
        today = trading_day(now_ns)
        if today == self.day:
            return False
        self.day = today
        self.day_start_balance = balance
        return True


class MaxLossGuard:
    """FTMO Maximum Loss: static (2-Step: initial - 10%) or trailing at end of day (1-Step: highest
    end-of-day balance, at least the initial capital, - 10%; it only rises, intraday moves aside)."""

    def __init__(self, rules: GuardrailSettings) -> None:
        self.initial = rules.initial_balance
        self.limit = rules.max_loss_pct / 100 * rules.initial_balance
        self.trailing = rules.max_loss_mode == "trailing_eod"
        self.eod_high = rules.initial_balance

    @property
    def floor(self) -> float:
        return max(self.initial, self.eod_high) - self.limit

    def end_of_day(self, balance: float) -> None:
        if self.trailing:
            self.eod_high = max(self.eod_high, balance)


class OrderRateLimit:
    """At most `per_minute` orders in any rolling minute (a runaway signal loop cannot spam the broker)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.sent: deque[int] = deque()

    def allows(self, now_ns: int) -> bool:
        while self.sent and self.sent[0] <= now_ns - _MINUTE_NS:
            self.sent.popleft()
        return len(self.sent) < self.per_minute

    def record(self, now_ns: int) -> None:
        self.sent.append(now_ns)


@dataclass(frozen=True, slots=True)
class NewsEvent:
    time_ns: int
    currencies: tuple[str, ...]
    title: str = ""


class NewsBlackout:
    """FTMO funded accounts: no opening or closing targeted instruments from 2 minutes before to 2
    minutes after high-impact news. Calendar file: CSV with columns `time` (ISO-8601 with offset),
    `currencies` (space separated, e.g. "USD EUR"), `impact` (only `high` is kept) and `title`.
    A symbol is targeted when it contains one of the currencies (EURUSD, BTC-USD for USD)."""

    def __init__(self, events: list[NewsEvent], window_minutes: float) -> None:
        self.events = sorted(events, key=lambda e: e.time_ns)
        self.window_ns = int(window_minutes * _MINUTE_NS)

    @classmethod
    def from_file(cls, path: Path, window_minutes: float) -> NewsBlackout:
        events: list[NewsEvent] = []
        with path.open(newline="") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                try:
                    if row["impact"].strip().lower() != "high":
                        continue
                    moment = datetime.fromisoformat(row["time"].strip())
                    if moment.tzinfo is None:
                        raise ValueError("time needs a UTC offset")
                    currencies = tuple(c.upper() for c in row["currencies"].split())
                except (KeyError, ValueError, AttributeError) as exc:
                    raise ValueError(f"news calendar {path} line {n}: {exc}") from exc
                events.append(NewsEvent(to_ns(moment), currencies, row.get("title") or ""))
        return cls(events, window_minutes)

    def blocking(self, now_ns: int, symbol: str, lead_ns: int = 0) -> NewsEvent | None:
        """The event whose window (widened by `lead_ns` ahead of it) covers `now_ns` for `symbol`."""
        target = symbol.upper()
        for event in self.events:
            if event.time_ns - self.window_ns - lead_ns <= now_ns <= event.time_ns + self.window_ns and any(
                c in target for c in event.currencies
            ):
                return event
        return None

    def closing_time(self, now_ns: int, symbol: str, lead_ns: int) -> NewsEvent | None:
        """The event a position on `symbol` must be closed for now: within `lead_ns` before its
        window opens (inside the window, closing is itself forbidden)."""
        event = self.blocking(now_ns, symbol, lead_ns)
        if event is not None and now_ns < event.time_ns - self.window_ns:
            return event
        return None


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class WeekendClose:
    """FTMO funded accounts close positions before the weekend: from Friday `close` to Sunday
    `reopen`, Prague time, positions are flattened and nothing is opened."""

    def __init__(self, close: str, reopen: str) -> None:
        self.close = _minutes(close)
        self.reopen = _minutes(reopen)

    def closed(self, now_ns: int) -> bool:
        local = to_datetime(now_ns)
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()  # Monday 0 ... Sunday 6
        return (weekday == 4 and minute >= self.close) or weekday == 5 or (weekday == 6 and minute < self.reopen)


class AccountGuard:
    """Every guardrail of one account, composed. Call `observe` on every event (it rolls the
    Prague day and moves the trading state), `check_new_order` before every opening order."""

    def __init__(self, rules: GuardrailSettings, start_ns: int, news: NewsBlackout | None = None) -> None:
        self.rules = rules
        self.daily = DailyLossGuard(rules, start_ns)
        self.max_loss = MaxLossGuard(rules)
        self.rate = OrderRateLimit(rules.max_orders_per_minute)
        restricted = rules.funded and not rules.swing
        self.news = news if restricted else None
        self.weekend = WeekendClose(rules.weekend_close, rules.weekend_reopen) if restricted else None
        self.state = TradingState.ACTIVE
        self.halted_until_ns: int | None = None
        self.halted_for_good = False
        self.trading_days: set[date] = set()
        self.day_profit: dict[date, float] = {}
        self.target_announced = False
        self.last_seen_ns: int | None = None
        #: An operator's halt (or flatten): holds until an operator resumes, across restarts.
        self.operator: OperatorHold | None = None
        #: Moves whenever `trading_days` or `day_profit` may have changed (see `durable_key`).
        self._revision = 0
        #: Counts the changes made outside `observe` (an order, an opening, a close, an
        #: operator's hold or release, a restore). `observe` repeated at the same time, on the
        #: same account, with none of them between, finds what the last one found and changes
        #: nothing: the stage skips such a repeat (`ExecutionStage._observe`).
        self.changes = 0
        #: The account the last full observation read, and `changes` then (`_settled`).
        self._observed: tuple[AccountSnapshot, int] | None = None

    # -- floors ----------------------------------------------------------------------------------
    @property
    def floor(self) -> float:
        """The binding floor: equity must stay above both."""
        return max(self.daily.floor, self.max_loss.floor)

    def headroom(self, account: AccountSnapshot) -> float:
        """What a new order may lose to its stop, the smaller of two worst cases:

        - now: equity - the open positions' loss from their marks to their stops - the new
          order's loss must stay above today's floor and the maximum loss floor;
        - after midnight: positions carried into the next Prague day are measured against a
          floor of (balance at midnight - daily limit), and the trailing maximum loss floor may
          rise to (balance - limit). Losses from entry to stop of all open positions and the new
          one must fit below the balance above both of those floors.
        """
        slip = self.rules.stop_slippage_bps
        now = account.equity - account.open_worst_case(slip) - self.floor
        next_max_floor = self.max_loss.floor
        if self.max_loss.trailing:
            next_max_floor = max(self.max_loss.floor, account.balance - self.max_loss.limit)
        next_floor = max(account.balance - self.daily.limit, next_max_floor)
        overnight = account.balance - account.open_risk_from_entry(slip) - next_floor
        return min(now, overnight)

    # -- state -----------------------------------------------------------------------------------
    def observe(self, now_ns: int, account: AccountSnapshot) -> list[GuardEvent]:
        if self._settled(now_ns, account):
            self.last_seen_ns = now_ns
            return []
        events: list[GuardEvent] = []
        before = self.state
        if self.daily.roll(now_ns, account.balance):
            # FTMO: the new day's floor is measured from the balance at Prague midnight.
            self.max_loss.end_of_day(account.balance)
            if self.state is TradingState.HALTED and not self.halted_for_good:
                self.halted_until_ns = None
            midnight = prague_midnight_ns(self.daily.day)
            if self.last_seen_ns is not None and midnight - self.last_seen_ns > _LATE_ROLL_NS:
                # Not watching at midnight (down, or no events): stops or targets hit meanwhile at
                # the broker are already in this balance, so the floor may differ from FTMO's.
                events.append(GuardEvent(
                    AlertCode.DAY_START_LATE, "CRITICAL",
                    f"day {self.daily.day} started from the balance {account.balance:.2f} seen at "
                    f"{to_datetime(now_ns).isoformat()}: check it against the balance at Prague midnight",
                ))  # fmt: skip
        self.last_seen_ns = now_ns
        if self.halted_for_good:
            self.state = TradingState.HALTED
        elif account.equity <= self.max_loss.floor:
            self.state = TradingState.HALTED
            self.halted_for_good = True
            events.append(GuardEvent(
                AlertCode.MAX_LOSS_BREACHED, "CRITICAL",
                f"equity {account.equity:.2f} at or below the maximum loss floor {self.max_loss.floor:.2f}: "
                "flattening; no new orders, for good", flatten=True,
            ))  # fmt: skip
        elif self.halted_until_ns is not None and now_ns < self.halted_until_ns:
            self.state = TradingState.HALTED
        elif account.equity <= self.daily.floor:
            self.state = TradingState.HALTED
            self.halted_until_ns = next_midnight_ns(now_ns)
            events.append(GuardEvent(
                AlertCode.DAILY_LOSS_BREACHED, "CRITICAL",
                f"equity {account.equity:.2f} at or below today's floor {self.daily.floor:.2f}: flattening; "
                "no new orders until the next Prague midnight", flatten=True,
            ))  # fmt: skip
        else:
            self.halted_until_ns = None
            self.state = TradingState.REDUCING if self._near_a_limit(account) else TradingState.ACTIVE
        if self.operator is not None:
            self.state = TradingState.HALTED  # the loss rules above still run: their floors and events hold
        if self.state is not before and self.state is not TradingState.HALTED:
            severity = "WARNING" if self.state is TradingState.REDUCING else "INFO"
            events.append(GuardEvent(_STATE_ALERTS[self.state], severity, f"trading state {self.state.value}"))
        if self.news is not None:
            lead = int(self.rules.news_close_lead_minutes * _MINUTE_NS)
            targeted = tuple(sorted({
                p.symbol for p in account.positions if self.news.closing_time(now_ns, p.symbol, lead) is not None
            }))  # fmt: skip
            if targeted:
                events.append(GuardEvent(
                    AlertCode.NEWS_CLOSE, "INFO",
                    f"funded account: closing {', '.join(targeted)} before high-impact news",
                    flatten=True, symbols=targeted,
                ))  # fmt: skip
        if self.weekend is not None and self.weekend.closed(now_ns) and account.positions:
            events.append(
                GuardEvent(AlertCode.WEEKEND_CLOSE, "INFO", "funded account: closing before the weekend", True)
            )
        events += self._objectives(account)
        self._observed = (account, self.changes)
        return events

    def _settled(self, now_ns: int, account: AccountSnapshot) -> bool:
        """True when `observe` would only note the time: the same account object as the last
        full observation (a paper account's snapshot is the same object until it changes), no
        change to the guard since (`changes`), the same Prague day, no halt that ends in
        between, and no news or weekend close that could meet an open position. Then no day
        rolls, every state test finds what it found (the floors, the equity and the halts are
        the same; a breach found last time has set its halt already, whose end is still
        ahead), and the objectives are as they were: no event, and only `last_seen_ns` moves."""
        observed = self._observed
        if observed is None or observed[0] is not account or observed[1] != self.changes:
            return False
        if account.positions and (self.news is not None or self.weekend is not None):
            return False
        start, end = self.daily.bounds()
        if not start <= now_ns < end or self.last_seen_ns is None or not start <= self.last_seen_ns < end:
            return False
        until = self.halted_until_ns
        return until is None or now_ns < until

    def _near_a_limit(self, account: AccountSnapshot) -> bool:
        share = self.rules.reducing_at_pct / 100
        daily_used = (self.daily.day_start_balance - account.equity) / self.daily.limit
        max_used = (self.max_loss.floor + self.max_loss.limit - account.equity) / self.max_loss.limit
        return max(daily_used, max_used) >= share

    def _objectives(self, account: AccountSnapshot) -> list[GuardEvent]:
        target = self.rules.profit_target_pct / 100 * self.rules.initial_balance
        profit = account.balance - self.rules.initial_balance  # FTMO: counted on closed results
        if self.target_announced or profit < target or len(self.trading_days) < self.rules.min_trading_days:
            return []
        if not self.best_day_ok():
            return []
        self.target_announced = True
        return [GuardEvent(
            AlertCode.PROFIT_TARGET_REACHED, "INFO",
            f"profit {profit:.2f} >= target {target:.2f} over {len(self.trading_days)} trading days",
        )]  # fmt: skip

    def best_day_ok(self) -> bool:
        """1-Step Best Day rule: the best day is at most `best_day_pct` of the total profit."""
        if self.rules.best_day_pct is None:
            return True
        total = sum(self.day_profit.values())
        if total <= 0:
            return True
        return max(self.day_profit.values()) <= self.rules.best_day_pct / 100 * total

    # -- pre-trade -------------------------------------------------------------------------------
    def check_new_order(self, now_ns: int, account: AccountSnapshot, symbol: str, worst_loss: float) -> Drop | None:
        """None if an opening order that would lose `worst_loss` at its stop may go; else the
        stable code of the first rule that forbids it."""
        if self.operator is not None:
            return Drop.OPERATOR_HALTED
        if self.state is TradingState.HALTED:
            return Drop.TRADING_HALTED
        if self.state is TradingState.REDUCING:
            return Drop.REDUCING_ONLY
        if self.weekend is not None and self.weekend.closed(now_ns):
            return Drop.WEEKEND_CLOSE
        # nothing is opened that would have to be closed for the news a moment later
        lead = int(self.rules.news_close_lead_minutes * _MINUTE_NS)
        if self.news is not None and self.news.blocking(now_ns, symbol, lead) is not None:
            return Drop.NEWS_BLACKOUT
        if len(account.positions) >= self.rules.max_open_positions:
            return Drop.MAX_OPEN_POSITIONS
        if not self.rate.allows(now_ns):
            return Drop.ORDER_RATE_LIMIT
        # The worst case: every open stop hit, then this one, each with slippage: still above both floors.
        # Float noise of a cent per million is not a breach (sizes are rounded to whole steps).
        if self.headroom(account) - worst_loss < -1e-8 * self.rules.initial_balance:
            return Drop.WORST_CASE_BREACH
        return None

    @property
    def flattening(self) -> bool:
        """Every open position must be closed now: a loss limit halted trading, or an operator
        asked to flatten. (An operator's plain halt keeps positions, with their stops.)"""
        if self.operator is not None and self.operator.flatten:
            return True
        return self.state is TradingState.HALTED and (self.halted_for_good or self.halted_until_ns is not None)

    # -- operator control ----------------------------------------------------------------------------
    def hold(self, hold: OperatorHold) -> None:
        """An operator halts (or flattens): from now on no new order, until `release`. A halt
        after a flatten keeps flattening: the stricter command stands."""
        if self.operator is not None and self.operator.flatten and not hold.flatten:
            hold = OperatorHold(hold.command_id, hold.issued_by, hold.reason, hold.issued_ns, flatten=True)
        self.operator = hold
        self.state = TradingState.HALTED
        self.changes += 1

    def release(self) -> None:
        """An operator resumes: lifts the operator's hold only. A loss limit's halt stands (the
        next `observe` recomputes the state from the account)."""
        self.operator = None
        self.changes += 1

    def record_order(self, now_ns: int) -> None:
        self.rate.record(now_ns)
        self.changes += 1

    def record_open(self, now_ns: int) -> None:
        # FTMO: a day counts as a trading day when a position was opened on it.
        self.trading_days.add(trading_day(now_ns))
        self._revision += 1
        self.changes += 1

    def record_close(self, now_ns: int, realized: float) -> None:
        day = trading_day(now_ns)
        self.day_profit[day] = self.day_profit.get(day, 0.0) + realized
        self._revision += 1
        self.changes += 1

    # -- persistence across restarts --------------------------------------------------------------
    def durable_key(self) -> tuple[Any, ...]:
        """Cheap to compute, and equal for two moments whose `snapshot()`s restore guards that
        behave identically: save the snapshot when this changes, not on every event.

        Every field of the snapshot is in it as is (the trading days and daily profits through
        a revision count), except `last_seen_ns`, which moves on every event. A restored
        `last_seen_ns` is only ever read at the next day roll, to decide whether the day
        started late (no event within `_LATE_ROLL_NS` before Prague midnight). It is always on
        the guard's `day` (observe rolls first), so at that roll it is compared with the
        midnight ending that day (or a later one, where any time of the day is late, or an
        earlier one, where none is): only whether it is in the last `_LATE_ROLL_NS` of its day
        decides. The key holds that, so a snapshot saved at the first event of a day, and again
        at the first one in the day's last minutes, restores the same behaviour as one saved on
        every event.
        """
        seen = self.last_seen_ns
        late: bool | None = None
        if seen is not None:
            late = seen < self.daily.bounds()[1] - _LATE_ROLL_NS
        return (
            self.daily.day, self.daily.day_start_balance, self.max_loss.eod_high, self.halted_until_ns,
            self.halted_for_good, self.target_announced, late, self._revision, len(self.trading_days),
            len(self.day_profit), self.operator,
        )  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        return {
            "day": self.daily.day.isoformat(),
            "day_start_balance": self.daily.day_start_balance,
            "eod_high": self.max_loss.eod_high,
            "halted_until_ns": self.halted_until_ns,
            "halted_for_good": self.halted_for_good,
            "trading_days": sorted(d.isoformat() for d in self.trading_days),
            "day_profit": {d.isoformat(): v for d, v in self.day_profit.items()},
            "target_announced": self.target_announced,
            "last_seen_ns": self.last_seen_ns,
            "operator": None if self.operator is None else self.operator.snapshot(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.daily.day = date.fromisoformat(data["day"])
        self.daily.day_start_balance = float(data["day_start_balance"])
        self.max_loss.eod_high = float(data["eod_high"])
        self.halted_until_ns = data["halted_until_ns"]
        self.halted_for_good = bool(data["halted_for_good"])
        self.trading_days = {date.fromisoformat(d) for d in data["trading_days"]}
        self.day_profit = {date.fromisoformat(d): float(v) for d, v in data["day_profit"].items()}
        self.target_announced = bool(data["target_announced"])
        self.last_seen_ns = data.get("last_seen_ns")
        operator = data.get("operator")
        self.operator = None if operator is None else OperatorHold.restore(operator)
        self._revision += 1
        self.changes += 1
        if self.halted_for_good or self.halted_until_ns is not None or self.operator is not None:
            self.state = TradingState.HALTED
