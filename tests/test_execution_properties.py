"""A state machine over random price paths and signal streams through the real execution stage:
no order is ever sent while halted or that fails the worst-case check, equity never falls below a
floor by more than the gaps and market-close slippage the paper broker reports, the daily floor
resets exactly at Prague midnight (daylight-saving days included), and a redelivered signal never
reaches the broker twice."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kstrade.config import ExecutionSettings, GuardrailSettings, SymbolSettings
from kstrade.execution import BrokerReply, OrderRequest, PaperBroker
from kstrade.schemas.models import Side, Signal

from .test_execution_stage import Harness, ns

SLIP_BPS = 5.0  # paper fills and the guard's stop model agree: the worst case is exact
COMMISSION = 5.0  # per BTC per side
INITIAL = 100_000.0
DAILY_LIMIT = 0.05 * INITIAL
MAX_FLOOR = 0.90 * INITIAL
PRAGUE = ZoneInfo("Europe/Prague")
# Starts a few hours before ordinary and daylight-saving Prague midnights.
STARTS = [datetime(2026, 1, 6, 18, tzinfo=UTC), datetime(2026, 3, 28, 18, tzinfo=UTC),
          datetime(2026, 10, 24, 17, tzinfo=UTC)]  # fmt: skip


def prague_date(t_ns: int) -> Any:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).astimezone(PRAGUE).date()


class SpyBroker(PaperBroker):
    """The paper broker, checking every order that reaches it against the rules, computed here
    from first principles (not with the guard's own code)."""

    def __init__(self) -> None:
        super().__init__(INITIAL, slippage_bps=SLIP_BPS)
        self.machine: ExecutionMachine | None = None
        self.violations: list[str] = []

    def send(self, request: OrderRequest, now_ns: int) -> BrokerReply:
        m = self.machine
        assert m is not None
        if m.halted_until is not None and prague_date(now_ns) < m.halted_until:
            self.violations.append(f"order sent while halted until {m.halted_until}")
        if m.halted_for_good:
            self.violations.append("order sent after the maximum loss was breached")
        s = SLIP_BPS / 10_000
        account = self.account(now_ns)
        open_loss = sum(
            (p.mark - p.stop_loss * (1 - s)) * p.quantity + COMMISSION * p.quantity
            if p.side is Side.BUY
            else (p.stop_loss * (1 + s) - p.mark) * p.quantity + COMMISSION * p.quantity
            for p in account.positions
        )
        long = request.side is Side.BUY
        fill = request.reference_price * (1 + s if long else 1 - s)
        stop_fill = request.stop_loss * (1 - s if long else 1 + s)
        new_loss = abs(fill - stop_fill) * request.quantity + 2 * COMMISSION * request.quantity
        floor = max(m.day_start_balance - DAILY_LIMIT, MAX_FLOOR)
        if account.equity - open_loss - new_loss < floor - 1e-6:
            self.violations.append(f"worst case {account.equity - open_loss - new_loss:.2f} below floor {floor:.2f}")
        return super().send(request, now_ns)


class ExecutionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.broker = SpyBroker()
        self.broker.machine = self
        cfg = ExecutionSettings(
            guardrails=GuardrailSettings(stop_slippage_bps=SLIP_BPS, max_orders_per_minute=100),
            symbols={"BTC-USD": SymbolSettings(value_per_unit=1.0, volume_step=0.001, volume_min=0.001,
                                               volume_max=1_000.0, commission_per_lot=COMMISSION)},
            paper_slippage_bps=SLIP_BPS, max_risk_pct=2.0, kelly_fraction=0.5,
        )  # fmt: skip
        self.h = Harness(Path(self.dir.name) / "orders.sqlite3", cfg, self.broker)
        self.price = 50_000.0
        self.now = datetime(2026, 1, 6, tzinfo=UTC)
        self.day: Any = None
        self.day_start_balance = INITIAL
        self.halted_until: Any = None
        self.halted_for_good = False
        self.signals: list[Signal] = []

    def teardown(self) -> None:
        self.h.journal.close()
        self.dir.cleanup()

    @initialize(start=st.sampled_from(STARTS))
    def start(self, start: datetime) -> None:
        self.now = start
        self.day = prague_date(ns(start))
        self._candle(self.price, self.price)

    def _advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        today = prague_date(ns(self.now))
        if today != self.day:
            # FTMO: the floor is measured from the balance at Prague midnight (nothing happened
            # between the last event and midnight, so it is the balance now).
            self.day = today
            self.day_start_balance = self.broker.balance

    def _candle(self, open_: float, close: float, wick: float = 0.0) -> None:
        high = max(open_, close) * (1 + wick)
        low = min(open_, close) * (1 - wick)
        self.h.candle(self.now, open_, high, low, close)
        self.price = close

    @rule(
        minutes=st.one_of(st.integers(1, 30), st.integers(60, 900)),
        gap=st.one_of(st.just(0.0), st.floats(-0.01, 0.01), st.floats(-0.08, 0.08)),
        move=st.floats(-0.03, 0.03),
        wick=st.floats(0, 0.01),
    )
    def tick(self, minutes: int, gap: float, move: float, wick: float) -> None:
        self._advance(minutes)
        open_ = self.price * (1 + gap)
        self._candle(open_, open_ * (1 + move), wick)

    @rule(
        long=st.booleans(),
        p=st.floats(0.3, 0.9),
        stop_pct=st.floats(0.002, 0.03),
        rr=st.floats(0.5, 3.0),
        seconds=st.integers(1, 59),
    )
    def signal(self, long: bool, p: float, stop_pct: float, rr: float, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        entry = self.price
        sl = entry * (1 - stop_pct) if long else entry * (1 + stop_pct)
        tp = entry * (1 + stop_pct * rr) if long else entry * (1 - stop_pct * rr)
        self._advance(0)
        self.signals.append(self.h.signal(self.now, entry, sl, tp, p=p))

    @precondition(lambda self: bool(self.signals))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        sig = data.draw(st.sampled_from(self.signals))
        before = self.broker.sent
        self.h.send("signals.final", sig, ns(self.now))
        assert self.broker.sent == before, "a redelivered signal reached the broker again"

    @invariant()
    def no_forbidden_order(self) -> None:
        assert self.broker.violations == []

    @invariant()
    def daily_floor_resets_at_prague_midnight(self) -> None:
        if self.day is None:
            return
        guard = self.h.stage.guard
        assert guard.daily.day == self.day
        assert abs(guard.daily.floor - (self.day_start_balance - DAILY_LIMIT)) < 1e-6

    @invariant()
    def equity_stays_above_the_floor_but_for_gaps(self) -> None:
        if self.day is None:
            return
        equity = self.broker.account(0).equity
        floor = max(self.day_start_balance - DAILY_LIMIT, MAX_FLOOR)
        allowance = self.broker.gap_loss + self.broker.close_slippage
        assert equity >= floor - allowance - 1e-6, (equity, floor, allowance)
        # what the guard must have done: halt for the day (or for good) and flatten
        if equity <= MAX_FLOOR:
            self.halted_for_good = True
        elif equity <= self.day_start_balance - DAILY_LIMIT:
            self.halted_until = self.day + timedelta(days=1)
        if self.halted_for_good or (self.halted_until is not None and self.day < self.halted_until):
            assert self.broker.positions == {}


ExecutionMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestExecutionStateMachine = ExecutionMachine.TestCase
