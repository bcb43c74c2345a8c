"""The account as operators see it: equity, balance, open positions, today's realized P&L, the
headroom to both FTMO loss floors, the guardrail, operator and circuit-breaker states, and the
orders and refusals by code, on the execution service's own Prometheus endpoint
(`execution.prometheus_port`; the metrics collector only sees what reaches the bus).

The stage calls `observe` after every observation of the account; the gauges move when a
discrete value changes (balance, positions, states, today's P&L) and otherwise at most once a
second of stage-clock time, so the per-candle cost is a tuple comparison.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

from kstrade.execution.account import AccountSnapshot
from kstrade.execution.broker import BrokerReply, Outcome
from kstrade.execution.circuit import BreakerState, CircuitBreaker
from kstrade.execution.guardrails import AccountGuard, TradingState
from kstrade.execution.journal import JournalState

#: Continuous values (equity, headroom) move at most this often on the stage clock.
UPDATE_EVERY_NS = 1_000_000_000


def operator_halted(guard: AccountGuard) -> bool:
    """An operator's halt or flatten (control.execution) holds the account."""
    return getattr(guard, "operator", None) is not None


class AccountGauges:
    """The execution service's Prometheus registry for one account (label `account`)."""

    def __init__(self, account: str = "default", registry: CollectorRegistry | None = None) -> None:
        self.account = account
        r = self.registry = registry or CollectorRegistry()
        a = ["account"]
        self.equity = Gauge("kstrade_account_equity", "Balance + floating P&L (what FTMO checks)", a, registry=r)
        self.balance = Gauge("kstrade_account_balance", "Account balance (closed results)", a, registry=r)
        self.positions = Gauge(
            "kstrade_account_open_positions", "Open positions per symbol", [*a, "symbol"], registry=r
        )
        self.realized_today = Gauge(
            "kstrade_account_realized_pnl_today", "Realized P&L of the Prague trading day (FTMO day)", a, registry=r
        )
        self.daily_floor = Gauge(
            "kstrade_account_daily_loss_floor", "Today's floor: balance at Prague midnight - daily limit", a,
            registry=r,
        )  # fmt: skip
        self.daily_headroom = Gauge(
            "kstrade_account_daily_loss_headroom", "Equity - today's floor (<= 0: the daily loss is breached)", a,
            registry=r,
        )  # fmt: skip
        self.max_floor = Gauge("kstrade_account_max_loss_floor", "The maximum loss floor", a, registry=r)
        self.max_headroom = Gauge(
            "kstrade_account_max_loss_headroom", "Equity - the maximum loss floor (<= 0: breached, for good)", a,
            registry=r,
        )  # fmt: skip
        self.state = Gauge(
            "kstrade_execution_trading_state", "Guardrail trading state: 1 for the current one", [*a, "state"],
            registry=r,
        )  # fmt: skip
        self.operator = Gauge(
            "kstrade_execution_operator_halted", "1 while an operator's halt or flatten holds", a, registry=r
        )
        self.breaker = Gauge(
            "kstrade_execution_circuit_breaker_state", "Circuit breaker in front of the broker: 1 for the current one",
            [*a, "state"], registry=r,
        )  # fmt: skip
        self.observed = Gauge(
            "kstrade_execution_last_observation_seconds", "Stage-clock time the gauges were last updated", a,
            registry=r,
        )  # fmt: skip
        self.orders = Counter(
            "kstrade_execution_orders", "Signals decided, by journal state (FILLED, REJECTED, UNCERTAIN, DROPPED)",
            [*a, "status"], registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "kstrade_execution_rejections",
            "Refusals by code: source signal (no order: guardrail, sizing, expiry) or broker (order rejected)",
            [*a, "source", "code"], registry=r,
        )  # fmt: skip
        # Every state exported from the start, so a dashboard reads 0 rather than no data.
        for s in TradingState:
            self.state.labels(account, s.value).set(1 if s is TradingState.ACTIVE else 0)
        for b in BreakerState:
            self.breaker.labels(account, b.value).set(1 if b is BreakerState.CLOSED else 0)
        for j in (JournalState.FILLED, JournalState.REJECTED, JournalState.UNCERTAIN, JournalState.DROPPED):
            self.orders.labels(account, j.value)
        self.operator.labels(account).set(0)
        self._equity, self._balance = self.equity.labels(account), self.balance.labels(account)
        self._realized, self._observed = self.realized_today.labels(account), self.observed.labels(account)
        self._daily_floor, self._daily_headroom = self.daily_floor.labels(account), self.daily_headroom.labels(account)
        self._max_floor, self._max_headroom = self.max_floor.labels(account), self.max_headroom.labels(account)
        self._positions: dict[str, Gauge] = {}
        self._key: tuple[object, ...] | None = None
        self._last_ns: int | None = None
        #: The scrape endpoint, once `serve` started it.
        self.server: WSGIServer | None = None

    # -- from the stage --------------------------------------------------------------------------
    def observe(
        self, now_ns: int, account: AccountSnapshot | None, guard: AccountGuard, breaker: CircuitBreaker
    ) -> None:
        """After the guard observed `account`. None: the account is moving (positions being
        closed); the states are set now, the account's values at the next observation."""
        state, held, breaker_state = guard.state, operator_halted(guard), breaker.state(now_ns)
        realized = guard.day_profit.get(guard.daily.day, 0.0)
        if account is None:
            key: tuple[object, ...] = (None, state, held, breaker_state, realized)
        else:
            key = (account.balance, len(account.positions), state, held, breaker_state, realized, guard.floor)
        last = self._last_ns
        if key == self._key and last is not None and now_ns - last < UPDATE_EVERY_NS:
            return
        self._key = key
        if account is None:
            self._last_ns = None  # the next observation updates, whatever the time
        else:
            self._last_ns = now_ns
            self._account(account, guard)
        for s in TradingState:
            self.state.labels(self.account, s.value).set(1 if s is state else 0)
        for b in BreakerState:
            self.breaker.labels(self.account, b.value).set(1 if b is breaker_state else 0)
        self.operator.labels(self.account).set(1 if held else 0)
        self._realized.set(realized)
        self._observed.set(now_ns / 1e9)

    def _account(self, account: AccountSnapshot, guard: AccountGuard) -> None:
        self._equity.set(account.equity)
        self._balance.set(account.balance)
        daily, max_loss = guard.daily.floor, guard.max_loss.floor
        self._daily_floor.set(daily)
        self._daily_headroom.set(account.equity - daily)
        self._max_floor.set(max_loss)
        self._max_headroom.set(account.equity - max_loss)
        counts: dict[str, int] = dict.fromkeys(self._positions, 0)  # a symbol gone flat reads 0
        for p in account.positions:
            counts[p.symbol] = counts.get(p.symbol, 0) + 1
        for symbol, n in counts.items():
            child = self._positions.get(symbol)
            if child is None:
                child = self._positions[symbol] = self.positions.labels(self.account, symbol)
            child.set(n)

    def dropped(self, reason: str) -> None:
        """A signal that became no order (journal DROPPED with this reason)."""
        self.orders.labels(self.account, JournalState.DROPPED.value).inc()
        self.rejections.labels(self.account, "signal", reason).inc()

    def settled(self, reply: BrokerReply) -> None:
        """The broker's answer to an order (what the journal records it as)."""
        if reply.outcome is Outcome.FILLED and reply.fill is not None:
            self.orders.labels(self.account, JournalState.FILLED.value).inc()
        elif reply.outcome is Outcome.UNKNOWN:
            self.orders.labels(self.account, JournalState.UNCERTAIN.value).inc()
        else:
            self.orders.labels(self.account, JournalState.REJECTED.value).inc()
            self.rejections.labels(self.account, "broker", reply.code).inc()

    # -- the endpoint ----------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The text format a scrape returns."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Starts the scrape endpoint in a daemon thread; port 0 picks a free one."""
        self.server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return self.server
