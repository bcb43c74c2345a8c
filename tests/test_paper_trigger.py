"""`PaperBroker._trigger` returns early when a candle reaches neither the stop nor the target
(most candles): checked against the tests it skips, for any prices, NaN and gaps included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kstrade.codes import ExitReason
from kstrade.execution import PaperBroker
from kstrade.execution.account import Position
from kstrade.schemas.models import Side

#: A few levels, so that prices equal, cross and gap past each other often; NaN and any others too.
price = st.one_of(st.sampled_from([94.0, 95.0, 97.5, 100.0, 102.5, 105.0, 106.0, float("nan")]), st.floats(90, 110))


def every_test(broker: PaperBroker, p: Position, open: float, high: float, low: float) -> tuple[float | None, str]:
    """The trigger as it was: every test made on every candle."""
    long = p.side is Side.BUY
    stop_fill = broker._slipped(p.stop_loss, Side.SELL if long else Side.BUY)
    if open <= p.stop_loss if long else open >= p.stop_loss:
        gap_fill = broker._slipped(open, Side.SELL if long else Side.BUY)
        broker.gap_loss += abs(stop_fill - gap_fill) * p.quantity * p.value_per_unit
        return gap_fill, ExitReason.STOP_LOSS_GAP
    if open >= p.take_profit if long else open <= p.take_profit:
        return open, ExitReason.TAKE_PROFIT
    if (low <= p.stop_loss) if long else (high >= p.stop_loss):
        return stop_fill, ExitReason.STOP_LOSS
    if (high >= p.take_profit) if long else (low <= p.take_profit):
        return p.take_profit, ExitReason.TAKE_PROFIT
    return None, ""


@settings(max_examples=400)
@given(st.booleans(), price, price, price, price, price)
def test_the_early_return_is_the_full_trigger(
    long: bool, stop: float, target: float, open: float, high: float, low: float
) -> None:
    side = Side.BUY if long else Side.SELL
    p = Position("t", "ks-1", "BTC-USD", side, 2.0, 100.0, stop, target, 100.0, 3.0)
    fast, full = PaperBroker(1_000, slippage_bps=5.0), PaperBroker(1_000, slippage_bps=5.0)
    got, want = fast._trigger(p, open, high, low), every_test(full, p, open, high, low)
    assert repr(got) == repr(want) and repr(fast.gap_loss) == repr(full.gap_loss)
