"""MetaTrader 5 behind the `Broker` interface: the `MetaTrader5` package on Windows, or the same
API over the mt5linux bridge (RPyC to a Windows Python under Wine) on Linux.

Every order carries our magic number and its client order id as the comment, so after a timeout,
a lost connection or a restart the deal can be found (positions_get / history_deals_get) before
anything is sent again. A DONE reply is not taken as proof of a position: the deal is looked up.

SECURITY: the mt5linux bridge is an RPyC *classic* server, which lets any client run any code on
the machine that hosts the terminal. Bind it to 127.0.0.1 and connect over loopback only (this
adapter refuses any other host); never expose its port, not even on a LAN.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from kstrade.codes import RETCODE_PREFIX, BrokerCode
from kstrade.config import ExecutionSettings, SymbolSettings
from kstrade.execution.account import AccountSnapshot, Position
from kstrade.execution.broker import LINK_ERRORS, BrokerReply, ClosedTrade, Fill, OrderRequest, Outcome
from kstrade.schemas.models import Side

#: MqlTradeResult.retcode values (MT5 documentation): name, and what to do about them.
DONE = (10008, 10009, 10010)  # PLACED, DONE, DONE_PARTIAL: look the deal up
RETRYABLE: dict[int, str] = {
    10004: BrokerCode.REQUOTE,
    10020: BrokerCode.PRICE_CHANGED,
    10021: BrokerCode.PRICE_OFF,
    10024: BrokerCode.TOO_MANY_REQUESTS,
}
UNKNOWN: dict[int, str] = {10012: BrokerCode.TIMEOUT, 10031: BrokerCode.CONNECTION}
REJECTED: dict[int, str] = {
    10006: BrokerCode.REJECT, 10013: BrokerCode.INVALID, 10014: BrokerCode.INVALID_VOLUME,
    10015: BrokerCode.INVALID_PRICE, 10016: BrokerCode.INVALID_STOPS, 10017: BrokerCode.TRADE_DISABLED,
    10018: BrokerCode.MARKET_CLOSED, 10019: BrokerCode.NO_MONEY, 10027: BrokerCode.AUTOTRADING_DISABLED,
    10030: BrokerCode.INVALID_FILL,
}  # fmt: skip
#: last_error() codes of the MetaTrader5 package's own link to the terminal (RES_E_INTERNAL_FAIL_*):
#: the terminal exited or restarted, and nothing works until initialize() is called again.
IPC_LOST = {-10001: "IPC send failed", -10002: "IPC receive failed", -10003: "IPC initialize failed",
            -10004: "no IPC connection", -10005: "IPC timeout"}  # fmt: skip
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: How far back reconciliation looks for our deals. MT5 history times are in server time (one to
#: two hours ahead of UTC), so the window is wide on both sides.
_HISTORY_BACK = timedelta(days=7)
_HISTORY_AHEAD = timedelta(days=1)


def _utc(now_ns: int) -> datetime:
    return datetime.fromtimestamp(now_ns // 1_000_000_000, UTC)


class TerminalLost(ConnectionError):
    """The link to the terminal is gone (IPC lost, bridge closed); the broker reconnects."""


#: (the MetaTrader5 module or its bridge proxy, logged in; the request builder for it)
Connection = tuple[Any, Callable[[dict[str, Any]], Any]]


class MT5Broker:
    name = "mt5"

    def __init__(
        self,
        mt5: Any,
        *,
        magic: int,
        deviation_points: int = 20,
        symbols: dict[str, SymbolSettings] | None = None,
        remote_dict: Callable[[dict[str, Any]], Any] = dict,
        connect: Callable[[], Connection] | None = None,
        reconnect_s: float = 5.0,
    ) -> None:
        """`mt5`: the MetaTrader5 module, or its proxy over the bridge. `remote_dict` builds the
        request where the terminal runs (over RPyC a dict must be made on the remote side).

        `connect` opens a new connection (initialize and log in): when the terminal or the bridge
        dies, every call raises a link error (the router and the stage treat it as an unavailable
        broker, and an order in flight is reconciled before anything is resent), and the next call
        at least `reconnect_s` later connects again. Without it, a lost terminal stays lost."""
        self.mt5: Any = mt5
        self.magic = magic
        self.deviation = deviation_points
        self.symbols = symbols or {}
        self.remote_dict = remote_dict
        self._connect = connect
        self._reconnect_ns = int(reconnect_s * 1e9)
        self._next_connect_ns = 0
        self._seen_deals: set[int] = set()

    # -- the link to the terminal --------------------------------------------------------------
    @contextmanager
    def _link(self, now_ns: int) -> Iterator[Any]:
        """The terminal, reconnected first if it was lost; a link error inside marks it lost."""
        if self.mt5 is None:
            if self._connect is None:
                raise TerminalLost("MT5 terminal lost and no way to reconnect configured")
            if now_ns < self._next_connect_ns:
                wait = (self._next_connect_ns - now_ns) / 1e9
                raise TerminalLost(f"MT5 terminal lost; next reconnect attempt in {wait:.1f}s")
            self._next_connect_ns = now_ns + self._reconnect_ns
            self.mt5, self.remote_dict = self._connect()
        try:
            yield self.mt5
        except LINK_ERRORS:
            self.mt5 = None
            raise

    def _failed(self, what: str) -> tuple[int, str]:
        """last_error() after a call returned nothing; raises TerminalLost for an IPC failure."""
        code, message = self.mt5.last_error()
        if int(code) in IPC_LOST:
            raise TerminalLost(f"{what}: {code} {message}")
        return int(code), str(message)

    def _no_result(self, mt5: Any) -> BrokerReply:
        """order_send answered nothing. The order may have reached the server all the same:
        UNKNOWN, so it is looked for before anything is sent again (and a lost link is
        reconnected for that look-up)."""
        code, message = mt5.last_error()
        if int(code) in IPC_LOST:
            self.mt5 = None
        return BrokerReply(Outcome.UNKNOWN, BrokerCode.NO_RESULT, f"order_send returned nothing: {code} {message}")

    def _all(self, found: Any, what: str) -> tuple[Any, ...]:
        """A query's result as a tuple: None is an empty answer unless the link is gone (an
        unreachable terminal must never read as "no positions" or "no deals": a deal not found
        is an order sent again)."""
        if found is None:
            self._failed(what)
            return ()
        return tuple(found)

    # -- Broker ----------------------------------------------------------------------------------
    def price(self, symbol: str, side: Side, now_ns: int) -> float | None:
        with self._link(now_ns) as mt5:
            tick = mt5.symbol_info_tick(symbol)
            if tick is None:
                self._failed("symbol_info_tick")
                return None
            return float(tick.ask if side is Side.BUY else tick.bid)

    def send(self, request: OrderRequest, now_ns: int) -> BrokerReply:
        try:
            price = self.price(request.symbol, request.side, now_ns)
        except LINK_ERRORS as exc:
            # Nothing was sent (no terminal to send to): a plain failure, not an unknown outcome.
            return BrokerReply(Outcome.RETRYABLE, BrokerCode.NOT_CONNECTED, f"nothing sent: {exc}")
        with self._link(now_ns) as mt5:
            return self._send(mt5, request, price, now_ns)

    def _send(self, mt5: Any, request: OrderRequest, price: float | None, now_ns: int) -> BrokerReply:
        if price is None:
            code, message = mt5.last_error()
            # nothing was sent: safe to try again with a fresh price
            return BrokerReply(Outcome.RETRYABLE, BrokerCode.NO_PRICE, f"symbol_info_tick failed: {code} {message}")
        order = {
            "action": mt5.TRADE_ACTION_DEAL, "symbol": request.symbol, "volume": float(request.quantity),
            "type": mt5.ORDER_TYPE_BUY if request.side is Side.BUY else mt5.ORDER_TYPE_SELL, "price": price,
            "sl": float(request.stop_loss), "tp": float(request.take_profit), "deviation": self.deviation,
            "magic": self.magic, "comment": request.client_order_id, "type_time": mt5.ORDER_TIME_GTC,
            "type_filling": self._filling(request.symbol),
        }  # fmt: skip
        result = mt5.order_send(self.remote_dict(order))
        if result is None:
            return self._no_result(mt5)
        return self._interpret(int(result.retcode), str(result.comment), request, now_ns)

    def _interpret(self, rc: int, comment: str, request: OrderRequest, now_ns: int) -> BrokerReply:
        if rc in DONE:
            fill = self.find(request.client_order_id, now_ns)
            if fill is None:
                return BrokerReply(Outcome.UNKNOWN, BrokerCode.DONE_UNCONFIRMED, f"retcode {rc} but no deal found yet")
            return BrokerReply(Outcome.FILLED, BrokerCode.DONE, comment, fill)
        if rc in RETRYABLE:
            return BrokerReply(Outcome.RETRYABLE, RETRYABLE[rc], comment)
        if rc in UNKNOWN:
            return BrokerReply(Outcome.UNKNOWN, UNKNOWN[rc], comment)
        return BrokerReply(Outcome.REJECTED, REJECTED.get(rc, f"{RETCODE_PREFIX}{rc}"), comment)

    def _filling(self, symbol: str) -> int:
        """Allowed filling modes are per symbol (symbol_info.filling_mode flags: 1 FOK, 2 IOC)."""
        info = self.mt5.symbol_info(symbol)
        flags = int(info.filling_mode) if info is not None else 0
        if flags & 1:
            return int(self.mt5.ORDER_FILLING_FOK)
        if flags & 2:
            return int(self.mt5.ORDER_FILLING_IOC)
        return int(self.mt5.ORDER_FILLING_RETURN)

    def _ours(self, deals: Any) -> list[Any]:
        return [d for d in (deals or ()) if int(d.magic) == self.magic]

    def _history(self, now_ns: int, **kwargs: Any) -> list[Any]:
        t = _utc(now_ns)
        found = self.mt5.history_deals_get(t - _HISTORY_BACK, t + _HISTORY_AHEAD, **kwargs)
        return list(self._all(found, "history_deals_get"))

    def find(self, client_order_id: str, now_ns: int) -> Fill | None:
        with self._link(now_ns) as mt5:
            for deal in self._ours(self._history(now_ns)):
                if str(deal.comment) == client_order_id and int(deal.entry) == int(mt5.DEAL_ENTRY_IN):
                    return Fill(
                        f"mt5-{int(deal.position_id)}", f"mt5-deal-{int(deal.ticket)}", float(deal.price),
                        float(deal.volume), -float(deal.commission), now_ns,
                    )  # fmt: skip
            for p in self._all(mt5.positions_get(), "positions_get"):
                if int(p.magic) == self.magic and str(p.comment) == client_order_id:
                    return Fill(f"mt5-{int(p.ticket)}", f"mt5-position-{int(p.ticket)}", float(p.price_open),
                                float(p.volume), 0.0, now_ns)  # fmt: skip
            return None

    def account(self, now_ns: int) -> AccountSnapshot:
        with self._link(now_ns) as mt5:
            info = mt5.account_info()
            if info is None:
                code, message = self._failed("account_info")
                raise ConnectionError(f"account_info failed: {code} {message}")
            # Every position on the account counts against the floors, ours or not.
            positions = tuple(self._position(p) for p in self._all(mt5.positions_get(), "positions_get"))
            return AccountSnapshot(float(info.balance), float(info.equity), positions)

    def _position(self, p: Any) -> Position:
        symbol = str(p.symbol)
        info = self.mt5.symbol_info(symbol)
        value = float(info.trade_tick_value) / float(info.trade_tick_size) if info is not None else 1.0
        spec = self.symbols.get(symbol)
        commission = float(p.volume) * spec.commission_per_lot if spec is not None else 0.0
        return Position(
            ticket=str(int(p.ticket)), client_order_id=str(p.comment), symbol=symbol,
            side=Side.BUY if int(p.type) == int(self.mt5.POSITION_TYPE_BUY) else Side.SELL,
            quantity=float(p.volume), entry_price=float(p.price_open), stop_loss=float(p.sl),
            take_profit=float(p.tp), mark=float(p.price_current), value_per_unit=value,
            close_commission=commission,
        )  # fmt: skip

    def close_position(self, ticket: str, now_ns: int, reason: str) -> BrokerReply:
        with self._link(now_ns) as mt5:
            return self._close_position(mt5, ticket, now_ns, reason)

    def _close_position(self, mt5: Any, ticket: str, now_ns: int, reason: str) -> BrokerReply:
        found = self._all(mt5.positions_get(ticket=int(ticket)), "positions_get")
        if not found:
            return BrokerReply(Outcome.REJECTED, BrokerCode.POSITION_NOT_FOUND, ticket)
        p = found[0]
        closing_buy = int(p.type) != int(mt5.POSITION_TYPE_BUY)
        price = self.price(str(p.symbol), Side.BUY if closing_buy else Side.SELL, now_ns)
        order = {
            "action": mt5.TRADE_ACTION_DEAL, "symbol": str(p.symbol), "volume": float(p.volume),
            "type": mt5.ORDER_TYPE_BUY if closing_buy else mt5.ORDER_TYPE_SELL, "position": int(p.ticket),
            "price": price or 0.0, "deviation": self.deviation, "magic": self.magic,
            "comment": f"close {reason}"[:31], "type_time": mt5.ORDER_TIME_GTC,
            "type_filling": self._filling(str(p.symbol)),
        }  # fmt: skip
        result = mt5.order_send(self.remote_dict(order))
        if result is None:
            return self._no_result(mt5)
        rc = int(result.retcode)
        if rc in DONE:
            return BrokerReply(Outcome.FILLED, BrokerCode.DONE)
        name = RETRYABLE.get(rc) or UNKNOWN.get(rc) or REJECTED.get(rc, f"{RETCODE_PREFIX}{rc}")
        return BrokerReply(Outcome.REJECTED, name, str(result.comment))

    def closed_trades(self, now_ns: int) -> list[ClosedTrade]:
        with self._link(now_ns):
            return self._closed_trades(now_ns)

    def _closed_trades(self, now_ns: int) -> list[ClosedTrade]:
        deals = self._history(now_ns)
        opening = {int(d.position_id): d for d in self._ours(deals) if int(d.entry) == int(self.mt5.DEAL_ENTRY_IN)}
        out: list[ClosedTrade] = []
        balance: float | None = None
        for d in deals:
            ticket = int(d.ticket)
            if int(d.entry) != int(self.mt5.DEAL_ENTRY_OUT) or ticket in self._seen_deals:
                continue
            opened = opening.get(int(d.position_id))
            if opened is None:
                continue  # not one of ours
            self._seen_deals.add(ticket)
            if balance is None:
                info = self.mt5.account_info()
                balance = float(info.balance) if info is not None else 0.0
            commission = -(float(d.commission) + float(opened.commission))
            realized = float(d.profit) + float(d.swap) - commission
            out.append(ClosedTrade(
                f"mt5-{int(d.position_id)}", str(opened.comment), str(d.symbol),
                Side.BUY if int(opened.type) == int(self.mt5.DEAL_TYPE_BUY) else Side.SELL,
                float(d.volume), float(opened.price), float(d.price), realized, commission, balance, now_ns,
                str(d.comment) or "CLOSED",
            ))  # fmt: skip
        return out


def connect_mt5linux(host: str, port: int) -> tuple[Any, Callable[[dict[str, Any]], Any]]:
    """The MetaTrader5 module of an mt5linux bridge, and the request builder for MT5Broker.

    Loopback only: the bridge is an RPyC classic server (remote code execution by design)."""
    if host not in LOOPBACK:
        raise ValueError(f"mt5linux host {host!r} refused: the RPyC bridge allows remote code execution, loopback only")
    rpyc: Any = importlib.import_module("rpyc")  # optional extra: kstrade[mt5linux]
    conn = rpyc.classic.connect(host, port)
    module = conn.modules.MetaTrader5

    def remote_dict(request: dict[str, Any]) -> Any:
        # the terminal's C extension wants a real dict on its side, not a proxy of ours
        return conn.eval(repr(request))

    return module, remote_dict


def open_mt5(settings: ExecutionSettings) -> MT5Broker:
    """Connect to the terminal named by the settings (`broker = "mt5"` on Windows, `"mt5linux"`
    through the bridge) and log in; the broker connects the same way again when the terminal or
    the bridge is lost. The password comes from KSTRADE_EXECUTION__MT5_PASSWORD and never appears
    in an error or a log line."""
    if settings.mt5_login is not None and settings.mt5_password is None:
        raise ValueError("execution.mt5_login is set but KSTRADE_EXECUTION__MT5_PASSWORD is not")

    def connect() -> Connection:
        if settings.broker == "mt5":
            mt5: Any = importlib.import_module("MetaTrader5")  # the `mt5` extra, Windows only
            remote_dict: Callable[[dict[str, Any]], Any] = dict
        else:
            mt5, remote_dict = connect_mt5linux(settings.mt5linux_host, settings.mt5linux_port)
        if settings.mt5_login is not None and settings.mt5_password is not None:
            ok = mt5.initialize(
                login=settings.mt5_login, password=settings.mt5_password.get_secret_value(), server=settings.mt5_server
            )
        else:
            ok = mt5.initialize()  # the terminal's logged-in account
        if not ok:
            code, message = mt5.last_error()
            raise ConnectionError(f"MT5 initialize failed for login {settings.mt5_login}: {code} {message}")
        return mt5, remote_dict

    mt5, remote_dict = connect()
    return MT5Broker(
        mt5, magic=settings.mt5_magic, deviation_points=settings.mt5_deviation_points, symbols=settings.symbols,
        remote_dict=remote_dict, connect=connect,
    )  # fmt: skip
