"""A stand-in for the `MetaTrader5` package (Windows only, needs a live terminal), behaving as the
reference describes: the same functions, constants and return codes, one shared terminal state
(account, symbols, positions, deal history), brokers' stop and volume checks, SL/TP held by the
"server", and scripted trouble: requotes, a timeout after which the deal did happen, a lost
connection, NO_MONEY, INVALID_STOPS, a closed market, an outage of the trade server (the
terminal keeps running and answers from what it last knew, but every order_send gets
TRADE_RETCODE_CONNECTION until the server is back), and the terminal process exiting (every call
answers None with last_error -10004 until it runs again and the client calls initialize()).

Run as a script (`python tests/execution_fake_mt5.py PORT`) it serves itself as `MetaTrader5`
from an RPyC classic server on 127.0.0.1, as the mt5linux bridge does under Wine.
"""

from __future__ import annotations

import sys
import threading
from collections import namedtuple
from datetime import UTC, datetime
from typing import Any

TRADE_ACTION_DEAL = 1
ORDER_TYPE_BUY, ORDER_TYPE_SELL = 0, 1
ORDER_TIME_GTC = 0
ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN = 0, 1, 2
POSITION_TYPE_BUY, POSITION_TYPE_SELL = 0, 1
DEAL_TYPE_BUY, DEAL_TYPE_SELL = 0, 1
DEAL_ENTRY_IN, DEAL_ENTRY_OUT = 0, 1
TRADE_RETCODE_REQUOTE, TRADE_RETCODE_DONE, TRADE_RETCODE_TIMEOUT = 10004, 10009, 10012
TRADE_RETCODE_CONNECTION = 10031

Tick = namedtuple("Tick", "time bid ask last volume time_msc")
SymbolInfo = namedtuple(
    "SymbolInfo", "name point digits trade_tick_value trade_tick_size volume_min volume_max volume_step "
    "filling_mode trade_stops_level trade_contract_size",
)  # fmt: skip
AccountInfo = namedtuple("AccountInfo", "login balance equity margin_free currency leverage")
OrderSendResult = namedtuple("OrderSendResult", "retcode deal order volume price bid ask comment request_id")
TradePosition = namedtuple(
    "TradePosition", "ticket time time_msc type magic identifier volume price_open sl tp price_current swap profit "
    "symbol comment",
)  # fmt: skip
TradeDeal = namedtuple(
    "TradeDeal", "ticket order time time_msc type entry magic position_id volume price commission swap profit "
    "symbol comment",
)  # fmt: skip

_lock = threading.RLock()
_state: dict[str, Any] = {}


def reset(balance: float = 100_000.0, commission_per_lot: float = 3.0, leverage: int = 100) -> None:
    """A fresh terminal: EURUSD at 1.10000/1.10010, market open, no history."""
    with _lock:
        _state.clear()
        _state.update(
            balance=balance, leverage=leverage, commission=commission_per_lot, positions={}, deals=[], next=1000,
            script=[], calls=[], error=(1, "Success"), closed_market=set(), server_lost=False, running=True, ipc=True,
            symbols={"EURUSD": SymbolInfo("EURUSD", 0.00001, 5, 1.0, 0.00001, 0.01, 50.0, 0.01, 1, 10, 100_000)},
            ticks={"EURUSD": (1.10000, 1.10010)}, time=datetime(2026, 1, 5, 10, tzinfo=UTC),
        )  # fmt: skip


reset()


# -- control (for tests) -------------------------------------------------------------------------
def script(*steps: str) -> None:
    """Trouble for the next order_send calls, in order: REQUOTE, TIMEOUT, TIMEOUT_AFTER_DEAL,
    LOST_AFTER_DEAL (returns None), NO_MONEY."""
    with _lock:
        _state["script"] += list(steps)


def lose_server() -> None:
    """The terminal loses its trade server (network, broker maintenance): it keeps answering
    account, position and history queries from its last state, but cannot trade."""
    _state["server_lost"] = True


def restore_server() -> None:
    _state["server_lost"] = False


def exit_terminal() -> None:
    """The terminal process exits (crash, update, a user closing it): the client's IPC link is
    gone, every call answers None with last_error -10004, and stays so until the terminal runs
    again and the client calls initialize(). Positions and history live on the trade server."""
    _state["running"] = False
    _state["ipc"] = False
    _state["error"] = (-10004, "No IPC connection")


def start_terminal() -> None:
    _state["running"] = True


def _ipc_lost() -> bool:
    if _state["ipc"]:
        return False
    _state["error"] = (-10004, "No IPC connection")
    return True


def add_symbol(name: str, like: str = "EURUSD") -> None:
    """Another tradable symbol with the contract and quote of `like`."""
    with _lock:
        _state["symbols"][name] = _state["symbols"][like]._replace(name=name)
        _state["ticks"][name] = _state["ticks"][like]


def set_time(epoch_s: float) -> None:
    """The server clock (deal and tick times): tests that run on the wall clock set it to now."""
    _state["time"] = datetime.fromtimestamp(float(epoch_s), UTC)


def close_market(symbol: str) -> None:
    _state["closed_market"].add(symbol)


def calls() -> int:
    """order_send calls that tried to open something, answered or not (what no-duplicate and
    no-retry-storm tests count)."""
    return sum(1 for r in _state["calls"] if "position" not in r)


def move(symbol: str, bid: float, ask: float) -> None:
    """A new quote: positions whose stop or target it crosses are closed by the server."""
    with _lock:
        _state["ticks"][symbol] = (bid, ask)
        for p in list(_state["positions"].values()):
            if p.symbol != symbol:
                continue
            exit_price = bid if p.type == POSITION_TYPE_BUY else ask
            long = p.type == POSITION_TYPE_BUY
            if p.sl and (exit_price <= p.sl if long else exit_price >= p.sl):
                _close(p, p.sl, f"[sl {p.sl:.5f}]")
            elif p.tp and (exit_price >= p.tp if long else exit_price <= p.tp):
                _close(p, p.tp, f"[tp {p.tp:.5f}]")


# -- the MetaTrader5 API -------------------------------------------------------------------------
def initialize(path: str | None = None, **kwargs: Any) -> bool:
    """Refuses the password "wrong", as a trade server refuses bad credentials."""
    if kwargs.get("password") == "wrong":
        _state["error"] = (-6, "Terminal: Authorization failed")
        return False
    if not _state["running"]:
        _state["error"] = (-10003, "IPC initialize failed, MetaTrader 5 x64 not found")
        return False
    _state["ipc"] = True
    _state["error"] = (1, "Success")
    return True


def login(*args: Any, **kwargs: Any) -> bool:
    return True


def shutdown() -> None:
    return None


def last_error() -> tuple[int, str]:
    return tuple(_state["error"])  # type: ignore[return-value]


def symbol_info(symbol: str) -> SymbolInfo | None:
    if _ipc_lost():
        return None
    return _state["symbols"].get(symbol)


def symbol_info_tick(symbol: str) -> Tick | None:
    if _ipc_lost():
        return None
    q = _state["ticks"].get(symbol)
    if q is None:
        return None
    ms = int(_state["time"].timestamp() * 1000)
    return Tick(ms // 1000, q[0], q[1], 0.0, 0, ms)


def account_info() -> AccountInfo | None:
    if _ipc_lost():
        return None
    with _lock:
        profit = sum(_profit(p) for p in _state["positions"].values())
        equity = _state["balance"] + profit
        used = sum(
            p.volume * _state["symbols"][p.symbol].trade_contract_size * p.price_open / _state["leverage"]
            for p in _state["positions"].values()
        )
        return AccountInfo(7001, _state["balance"], equity, equity - used, "USD", _state["leverage"])


def positions_get(
    symbol: str | None = None, group: str | None = None, ticket: int | None = None
) -> tuple[Any, ...] | None:
    if _ipc_lost():
        return None
    with _lock:
        ps = [_marked(p) for p in _state["positions"].values()]
    if symbol is not None:
        ps = [p for p in ps if p.symbol == symbol]
    if ticket is not None:
        ps = [p for p in ps if p.ticket == ticket]
    return tuple(ps)


def history_deals_get(date_from: Any, date_to: Any, group: str | None = None, position: int | None = None) -> Any:
    if _ipc_lost():
        return None
    lo, hi = float(date_from.timestamp()), float(date_to.timestamp())
    with _lock:
        deals = [d for d in _state["deals"] if lo <= d.time <= hi]
    if position is not None:
        deals = [d for d in deals if d.position_id == position]
    return tuple(deals)


def order_send(request: Any) -> OrderSendResult | None:
    if _ipc_lost():
        return None
    with _lock:
        r = dict(request)
        _state["calls"].append(r)
        if _state["server_lost"]:
            return _result(TRADE_RETCODE_CONNECTION, "No connection with the trade server")
        step = _state["script"].pop(0) if _state["script"] else ""
        if step == "REQUOTE":
            bid, ask = _state["ticks"][r["symbol"]]
            _state["ticks"][r["symbol"]] = (bid + 0.0002, ask + 0.0002)  # the market moved on
            return _result(10004, "Requote")
        if step == "TIMEOUT":
            return _result(10012, "Request timeout")
        if step == "NO_MONEY":
            return _result(10019, "No money")
        reply = _execute(r)
        if step == "TIMEOUT_AFTER_DEAL" and reply.retcode == TRADE_RETCODE_DONE:
            return _result(10012, "Request timeout")  # the deal happened all the same
        if step == "LOST_AFTER_DEAL" and reply.retcode == TRADE_RETCODE_DONE:
            _state["ipc"] = False  # the link dropped with the reply in flight; initialize() restores it
            _state["error"] = (-10004, "No IPC connection")
            return None
        return reply


# -- the "server" ----------------------------------------------------------------------------------
def _result(rc: int, comment: str, deal: int = 0, price: float = 0.0, volume: float = 0.0) -> OrderSendResult:
    return OrderSendResult(rc, deal, deal, volume, price, 0.0, 0.0, comment, 0)


def _ticket() -> int:
    _state["next"] += 1
    return int(_state["next"])


def _now() -> float:
    return float(_state["time"].timestamp())


def _execute(r: dict[str, Any]) -> OrderSendResult:
    symbol = r["symbol"]
    info: SymbolInfo | None = _state["symbols"].get(symbol)
    if info is None:
        return _result(10013, "Invalid request")
    if symbol in _state["closed_market"]:
        return _result(10018, "Market closed")
    if "position" in r:
        p = _state["positions"].get(r["position"])
        if p is None:
            return _result(10013, "Invalid request")
        bid, ask = _state["ticks"][symbol]
        _close(p, bid if p.type == POSITION_TYPE_BUY else ask, r.get("comment", ""))
        return _result(10009, "Request executed", price=bid, volume=p.volume)
    if not (r["type_filling"] == ORDER_FILLING_FOK and info.filling_mode & 1) and not (
        r["type_filling"] == ORDER_FILLING_IOC and info.filling_mode & 2
    ):
        return _result(10030, "Unsupported filling mode")
    volume = float(r["volume"])
    steps = volume / info.volume_step
    if not info.volume_min <= volume <= info.volume_max or abs(steps - round(steps)) > 1e-7:
        return _result(10014, "Invalid volume")
    bid, ask = _state["ticks"][symbol]
    long = r["type"] == ORDER_TYPE_BUY
    price = ask if long else bid
    if abs(float(r["price"]) - price) / info.point > r.get("deviation", 0):
        return _result(10004, "Requote")
    # stops on the right side and at least trade_stops_level points away
    gap = info.trade_stops_level * info.point
    sl, tp = float(r.get("sl", 0.0)), float(r.get("tp", 0.0))
    ok_sl = not sl or (sl <= price - gap if long else sl >= price + gap)
    ok_tp = not tp or (tp >= price + gap if long else tp <= price - gap)
    if not (ok_sl and ok_tp):
        return _result(10016, "Invalid stops")
    margin = volume * info.trade_contract_size * price / _state["leverage"]
    if margin > account_info().margin_free:
        return _result(10019, "No money")
    ticket = _ticket()
    commission = -_state["commission"] * volume
    _state["balance"] += commission
    now = _now()
    position = TradePosition(ticket, int(now), int(now * 1000), POSITION_TYPE_BUY if long else POSITION_TYPE_SELL,
                             r.get("magic", 0), ticket, volume, price, sl, tp, price, 0.0, 0.0, symbol,
                             r.get("comment", ""))  # fmt: skip
    _state["positions"][ticket] = position
    deal = TradeDeal(_ticket(), ticket, now, int(now * 1000), DEAL_TYPE_BUY if long else DEAL_TYPE_SELL,
                     DEAL_ENTRY_IN, r.get("magic", 0), ticket, volume, price, commission, 0.0, 0.0, symbol,
                     r.get("comment", ""))  # fmt: skip
    _state["deals"].append(deal)
    return _result(10009, "Request executed", deal.ticket, price, volume)


def _value(symbol: str) -> float:
    info = _state["symbols"][symbol]
    return float(info.trade_tick_value / info.trade_tick_size)


def _profit(p: Any) -> float:
    bid, ask = _state["ticks"][p.symbol]
    exit_price = bid if p.type == POSITION_TYPE_BUY else ask
    sign = 1 if p.type == POSITION_TYPE_BUY else -1
    return float(sign * (exit_price - p.price_open) * p.volume * _value(p.symbol))


def _marked(p: Any) -> Any:
    bid, ask = _state["ticks"][p.symbol]
    return p._replace(price_current=bid if p.type == POSITION_TYPE_BUY else ask, profit=_profit(p))


def _close(p: Any, price: float, comment: str) -> None:
    sign = 1 if p.type == POSITION_TYPE_BUY else -1
    profit = sign * (price - p.price_open) * p.volume * _value(p.symbol)
    commission = -_state["commission"] * p.volume
    _state["balance"] += profit + commission
    del _state["positions"][p.ticket]
    now = _now()
    _state["deals"].append(TradeDeal(
        _ticket(), _ticket(), now, int(now * 1000), DEAL_TYPE_SELL if sign == 1 else DEAL_TYPE_BUY, DEAL_ENTRY_OUT,
        p.magic, p.ticket, p.volume, price, commission, 0.0, profit, p.symbol, comment,
    ))  # fmt: skip


if __name__ == "__main__":
    from rpyc.core.service import ClassicService
    from rpyc.utils.server import ThreadedServer

    sys.modules["MetaTrader5"] = sys.modules[__name__]
    import socket
    import time

    server = ThreadedServer(ClassicService, hostname="127.0.0.1", port=int(sys.argv[1]))
    threading.Thread(target=server.start, daemon=True).start()
    for _ in range(200):  # READY once it accepts connections
        try:
            socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    print("READY", flush=True)
    threading.Event().wait()
