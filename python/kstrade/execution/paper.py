"""The paper broker (the default): fills market orders at the latest price plus an adverse
slippage model and a commission, tracks balance, equity and positions, and closes positions at
their stop loss or take profit as later prices cross them (at the open if the price gaps past).

With a `state_path` the paper account (balance, positions, fills, unreported closes) is written
to a JSON file after every change, so a restarted service finds its paper positions, and can
reconcile an order it sent just before dying, as it would with a real broker. Not `durable` (a
replay's run directory), it is written once, by `close`: a backtest is run again, not recovered.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kstrade.codes import BrokerCode, ExitReason
from kstrade.execution.account import AccountSnapshot, Position
from kstrade.execution.broker import BrokerReply, ClosedTrade, Fill, OrderRequest, Outcome
from kstrade.schemas.models import Candle, Side


@dataclass(slots=True)
class _Open:
    position: Position
    open_commission: float
    commission_per_lot: float
    order_id: str


class PaperBroker:
    name = "paper"

    def __init__(
        self,
        balance: float,
        *,
        slippage_bps: float = 2.0,
        state_path: Path | str | None = None,
        durable: bool = True,
    ) -> None:
        self.state_path = Path(state_path).expanduser() if state_path is not None else None
        self.durable = durable
        self._unsaved = False
        self.balance = balance
        self.slippage_bps = slippage_bps
        self.prices: dict[str, float] = {}
        self.positions: dict[str, _Open] = {}
        self.fills: dict[str, Fill] = {}
        #: Each fill as its JSON entry, encoded once: fills never change, and re-encoding every
        #: fill of the account on every save made a long replay quadratic in its trades.
        self._fill_entries: dict[str, str] = {}
        self._closed: list[ClosedTrade] = []
        self._seq = 0
        #: Orders that reached this broker (what the no-duplicate tests count).
        self.sent = 0
        #: Loss beyond the stop (with modeled slippage): price gaps past a stop.
        self.gap_loss = 0.0
        #: Slippage paid on closes at market (flattening), beyond the mark.
        self.close_slippage = 0.0
        #: The account as `account` last built it; None once the balance, a position or a mark
        #: changed. The stage reads the account two or three times per candle, mostly unchanged,
        #: and tells by identity that nothing moved between two reads (`ExecutionStage.handle`).
        self._account: AccountSnapshot | None = None
        if self.state_path is not None and self.state_path.exists():
            self._load(self.state_path)

    # -- persistence -----------------------------------------------------------------------------
    def _save(self) -> None:
        if self.state_path is None:
            return
        if not self.durable:
            self._unsaved = True  # written by `close`
            return
        self._write(sync=True)

    def close(self) -> None:
        """Writes what a non-durable account has not written yet."""
        if self._unsaved:
            self._write(sync=False)
            self._unsaved = False

    def _write(self, *, sync: bool) -> None:
        path = self.state_path
        assert path is not None  # only an account with a state file is written
        state = {
            "balance": self.balance, "prices": self.prices, "seq": self._seq,
            "positions": [{**asdict(o), "position": asdict(o.position)} for o in self.positions.values()],
            "closed": [asdict(c) for c in self._closed],
        }  # fmt: skip
        text = json.dumps(state)[:-1] + ', "fills": {' + ", ".join(self._fill_entries.values()) + "}}"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new account

    def _load(self, path: Path) -> None:
        state: dict[str, Any] = json.loads(path.read_text())
        self.balance = float(state["balance"])
        self.prices = {k: float(v) for k, v in state["prices"].items()}
        self._seq = int(state["seq"])
        for o in state["positions"]:
            position = Position(**{**o["position"], "side": Side(o["position"]["side"])})
            self.positions[position.ticket] = _Open(
                position, o["open_commission"], o["commission_per_lot"], o["order_id"]
            )
        for key, f in state["fills"].items():
            self._filled(key, Fill(**f))
        self._closed = [ClosedTrade(**{**c, "side": Side(c["side"])}) for c in state["closed"]]

    def _filled(self, client_order_id: str, fill: Fill) -> None:
        """A fill of the account, and its JSON entry for every later save (made once, here)."""
        self.fills[client_order_id] = fill
        self._fill_entries[client_order_id] = f"{json.dumps(client_order_id)}: {json.dumps(asdict(fill))}"

    def _next(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self._seq}"

    def _slipped(self, price: float, side: Side) -> float:
        # Market orders fill worse than the price: buyers pay up, sellers receive less.
        s = self.slippage_bps / 10_000
        return price * (1 + s) if side is Side.BUY else price * (1 - s)

    # -- Broker ----------------------------------------------------------------------------------
    def send(self, request: OrderRequest, now_ns: int) -> BrokerReply:
        self.sent += 1
        if request.client_order_id in self.fills:
            return BrokerReply(Outcome.REJECTED, BrokerCode.DUPLICATE_CLIENT_ORDER_ID, "already filled")
        price = self._slipped(self.prices.get(request.symbol, request.reference_price), request.side)
        long = request.side is Side.BUY
        if not (
            request.stop_loss < price < request.take_profit if long else request.take_profit < price < request.stop_loss
        ):
            return BrokerReply(Outcome.REJECTED, BrokerCode.INVALID_STOPS, f"fill {price} outside stop/target")
        commission = request.quantity * request.commission_per_lot
        ticket = self._next("paper")
        fill = Fill(ticket, self._next("deal"), price, request.quantity, commission, now_ns)
        self.balance -= commission
        self._account = None
        self.positions[ticket] = _Open(
            Position(
                ticket=ticket, client_order_id=request.client_order_id, symbol=request.symbol, side=request.side,
                quantity=request.quantity, entry_price=price, stop_loss=request.stop_loss,
                take_profit=request.take_profit, mark=self.prices.get(request.symbol, price),
                value_per_unit=request.value_per_unit, close_commission=commission, opened_ns=now_ns,
            ),
            commission, request.commission_per_lot, ticket,
        )  # fmt: skip
        self._filled(request.client_order_id, fill)
        self._save()
        return BrokerReply(Outcome.FILLED, BrokerCode.DONE, fill=fill)

    def price(self, symbol: str, side: Side, now_ns: int) -> float | None:
        return self.prices.get(symbol)

    def find(self, client_order_id: str, now_ns: int) -> Fill | None:
        return self.fills.get(client_order_id)

    def account(self, now_ns: int) -> AccountSnapshot:
        """The account now (the paper account does not move with time, only with the changes
        that drop the cached snapshot): the same object until one of them."""
        account = self._account
        if account is None:
            positions = tuple(o.position for o in self.positions.values())
            # `sum(p.floating_pnl ...)` with the property spelled out (the same expression,
            # evaluated in the same order): rebuilt after every mark of an open position.
            buy = Side.BUY
            floating = sum(
                (1 if p.side is buy else -1) * (p.mark - p.entry_price) * p.quantity * p.value_per_unit
                for p in positions
            )
            account = AccountSnapshot(self.balance, self.balance + floating, positions)
            self._account = account
        return account

    def has_closed_trades(self) -> bool:
        """Whether `closed_trades` has anything to report (it is asked after every candle)."""
        return bool(self._closed)

    def unchanged_since(self, account: AccountSnapshot) -> bool:
        """True when `account` (a snapshot `account` returned) is still the account: no balance,
        position or mark changed since."""
        return self._account is account

    def close_position(self, ticket: str, now_ns: int, reason: str) -> BrokerReply:
        held = self.positions.get(ticket)
        if held is None:
            return BrokerReply(Outcome.REJECTED, BrokerCode.POSITION_NOT_FOUND, ticket)
        p = held.position
        exit_price = self._slipped(p.mark, Side.SELL if p.side is Side.BUY else Side.BUY)
        self.close_slippage += abs(p.mark - exit_price) * p.quantity * p.value_per_unit
        self._close(ticket, exit_price, now_ns, reason)
        self._save()
        return BrokerReply(Outcome.FILLED, BrokerCode.DONE)

    def closed_trades(self, now_ns: int) -> list[ClosedTrade]:
        out, self._closed = self._closed, []
        if out:
            self._save()
        return out

    # -- prices ----------------------------------------------------------------------------------
    def mark(self, candle: Candle, now_ns: int) -> None:
        """A new candle: stops and targets first (the stop when both are in range: the worse
        case), at the open when the price gapped past them; then mark at the close."""
        self.mark_prices(candle.symbol, candle.open, candle.high, candle.low, candle.close, now_ns)

    def mark_prices(self, symbol: str, open: float, high: float, low: float, close: float, now_ns: int) -> None:
        """`mark` from a candle's symbol and prices (the stage's hot path needs no model)."""
        if self.positions:
            for ticket, held in list(self.positions.items()):
                p = held.position
                if p.symbol != symbol:
                    continue
                exit_price, reason = self._trigger(p, open, high, low)
                if exit_price is not None:
                    self._close(ticket, exit_price, now_ns, reason)
                    self._save()
        self.prices[symbol] = close
        for held in self.positions.values():
            p = held.position
            if p.symbol == symbol:
                # `replace(p, mark=close)`, spelled out: the same position, several times cheaper.
                held.position = Position(
                    p.ticket, p.client_order_id, p.symbol, p.side, p.quantity, p.entry_price, p.stop_loss,
                    p.take_profit, close, p.value_per_unit, p.close_commission, p.opened_ns,
                )  # fmt: skip
                self._account = None

    def _trigger(self, p: Position, open: float, high: float, low: float) -> tuple[float | None, str]:
        long = p.side is Side.BUY
        stop, target = p.stop_loss, p.take_profit
        # Most candles reach neither: none of the tests below holds, so no fill price is computed.
        if long and not (open <= stop or open >= target or low <= stop or high >= target):
            return None, ""
        if not long and not (open >= stop or open <= target or high >= stop or low <= target):
            return None, ""
        stop_fill = self._slipped(stop, Side.SELL if long else Side.BUY)
        gapped_stop = open <= stop if long else open >= stop
        gapped_target = open >= target if long else open <= target
        if gapped_stop:
            gap_fill = self._slipped(open, Side.SELL if long else Side.BUY)
            self.gap_loss += abs(stop_fill - gap_fill) * p.quantity * p.value_per_unit
            return gap_fill, ExitReason.STOP_LOSS_GAP
        if gapped_target:
            return open, ExitReason.TAKE_PROFIT
        if (low <= stop) if long else (high >= stop):
            return stop_fill, ExitReason.STOP_LOSS
        if (high >= target) if long else (low <= target):
            return target, ExitReason.TAKE_PROFIT
        return None, ""

    def _close(self, ticket: str, exit_price: float, now_ns: int, reason: str) -> None:
        held = self.positions.pop(ticket)
        self._account = None
        p = held.position
        gross = p.direction * (exit_price - p.entry_price) * p.quantity * p.value_per_unit
        close_commission = p.quantity * held.commission_per_lot
        self.balance += gross - close_commission
        commission = held.open_commission + close_commission
        self._closed.append(ClosedTrade(
            ticket, p.client_order_id, p.symbol, p.side, p.quantity, p.entry_price, exit_price,
            gross - commission, commission, self.balance, now_ns, reason,
        ))  # fmt: skip
