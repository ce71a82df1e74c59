"""What each fill records: the market's premium accumulators (notional, and notional times
(fill - mark) / mark, truncated toward zero) and both owners' trailing 30-day volume in two
rolling buckets, against :mod:`offchain.protocol.engine_math` fill by fill and across windows."""

import pytest

from offchain.protocol import engine_math as em
from tests.conftest import WAD
from tests.feature_system import MARKET_BTC, MARKET_ETH, deploy_features

W = em.VOLUME_WINDOW


@pytest.fixture(scope="module", autouse=True)
def system(project, chain, owner, guardian, keeper, relayer, trader, maker, stranger, exchange):
    built = deploy_features(project, owner, guardian, [keeper.address], exchange=exchange)
    built.fund(trader, 10_000_000)
    built.fund(maker, 10_000_000)
    return built


class Ledger:
    """The reference's accumulators, advanced fill by fill from each receipt."""

    def __init__(self):
        self.weighted = 0
        self.total = 0
        self.volume: dict[str, em.VolumeBuckets] = {}

    def fill(self, receipt, size, price, mark, owners):
        notional = abs(size) * price // WAD
        self.weighted, self.total = em.add_premium(self.weighted, self.total, notional, price, mark)
        for who in owners:
            self.volume[who] = self.volume.get(who, em.VolumeBuckets()).add(
                notional, receipt.timestamp
            )

    def trailing(self, who, now):
        return self.volume.get(who, em.VolumeBuckets()).trailing(now)


def settle(system, ledger, trader, maker, size, price):
    mark, fresh = system.engine.mark_price(MARKET_BTC)
    assert fresh
    receipt = system.trade(MARKET_BTC, maker, trader, size, price)
    ledger.fill(receipt, size, price, mark, (trader.address, maker.address))
    return receipt


def test_fill__premium_accumulators_each_fill(system, trader, maker, chain):
    ledger = Ledger()
    mark = 60_000 * WAD
    fills = [
        (WAD, mark + mark // 1_000),  # +0.1%
        (-37 * WAD // 100, 59_700 * WAD),  # -0.5%
        (5 * WAD // 2, mark),  # at the mark: no premium, all notional
        (WAD // 1_000, 62_999_990 * WAD // 1_000),  # just inside the 5% band
        (-1_234_567 * WAD // 1_000_000, mark - 1),  # -1 wei: truncates to 0, not -1
        (WAD // 2, mark + 1),
    ]
    for size, price in fills:
        settle(system, ledger, trader, maker, size, price)
        assert system.engine.premium_accumulator(MARKET_BTC) == (ledger.weighted, ledger.total)
    # A new mark: premia are against it.
    system.set_price(MARKET_BTC, 61_234.5678)
    new_mark = system.engine.mark_price(MARKET_BTC)[0]
    for size, price in (
        (-3 * WAD, new_mark * 99 // 100),
        (7 * WAD // 3, new_mark * 1_003 // 1_000),
    ):
        settle(system, ledger, trader, maker, size, price)
        assert system.engine.premium_accumulator(MARKET_BTC) == (ledger.weighted, ledger.total)
    assert ledger.weighted != 0 and ledger.total > 0
    # Other markets keep their own accumulators.
    assert system.engine.premium_accumulator(MARKET_ETH) == (0, 0)


def test_fill__negative_premium_truncates_toward_zero(system, trader, maker):
    """A fill one wei below the mark has premium -1e-23: zero after truncation toward zero
    (a floor would give -1 wei and drift the average)."""
    mark = 60_000 * WAD
    assert em.fill_premium(mark - 1, mark) == 0
    system.trade(MARKET_BTC, maker, trader, -WAD, mark - 1)
    assert system.engine.premium_accumulator(MARKET_BTC) == (0, mark - 1)
    below = mark - mark // 10_000  # -0.01%
    system.trade(MARKET_BTC, maker, trader, -(WAD // 3), below)
    notional = (WAD // 3) * below // WAD
    expected = em.trunc_div(notional * em.fill_premium(below, mark), WAD)
    assert expected < 0
    assert system.engine.premium_accumulator(MARKET_BTC)[0] == expected


def test_fill__trailing_volume_over_two_rolling_windows(system, trader, maker, chain):
    ledger = Ledger()
    start = chain.pending_timestamp
    epoch = start // W + 1
    # Late in one window.
    chain.pending_timestamp = epoch * W + W - 3_600
    system.set_price(MARKET_BTC, 60_000)
    settle(system, ledger, trader, maker, WAD, 60_000 * WAD)
    settle(system, ledger, trader, maker, -WAD // 2, 60_100 * WAD)
    now = chain.blocks.head.timestamp
    for who in (trader, maker):
        assert system.engine.trailing_volume(who) == ledger.trailing(who.address, now)
    assert system.engine.trailing_volume(trader) == 60_000 * WAD + 30_050 * WAD

    # Ten days into the next window: the previous bucket counts for the 20 days it still covers.
    chain.pending_timestamp = (epoch + 1) * W + 10 * 86_400
    system.set_price(MARKET_BTC, 60_000)
    now = chain.blocks.head.timestamp
    assert system.engine.trailing_volume(trader) == ledger.trailing(trader.address, now)
    assert system.engine.trailing_volume(trader) == 90_050 * WAD * (W - now % W) // W
    settle(system, ledger, trader, maker, 2 * WAD, 60_000 * WAD)
    now = chain.blocks.head.timestamp
    for who in (trader, maker):
        assert system.engine.trailing_volume(who) == ledger.trailing(who.address, now)
        assert system.engine.account_details(who, 0).trailing_volume == ledger.trailing(
            who.address, now
        )

    # Two windows later nothing is left; the next fill starts over.
    chain.mine(timestamp=(epoch + 3) * W + 1)
    assert system.engine.trailing_volume(trader) == 0
    system.set_price(MARKET_BTC, 60_000)
    settle(system, ledger, trader, maker, WAD, 60_000 * WAD)
    now = chain.blocks.head.timestamp
    assert system.engine.trailing_volume(trader) == ledger.trailing(trader.address, now)
    assert system.engine.trailing_volume(trader) == 60_000 * WAD


def test_fill__between_one_owners_subaccounts_counts_for_nothing(system, trader, maker, stranger):
    """Volume is per owner, and a fill between two subaccounts of one owner is a transfer: it
    adds to neither the owner's volume (no volume class for wash fills) nor the premium (no
    funding bought with them)."""
    system.fund(trader, 100_000, sub=1)
    before = system.engine.premium_accumulator(MARKET_BTC)
    price = 60_000 * WAD * 1_015 // 1_000  # 1.5% above the oracle, inside the band
    system.trade(MARKET_BTC, trader, trader, WAD, price, maker_sub=0, taker_sub=1)
    assert system.engine.position(trader, 1, MARKET_BTC)[0] == WAD
    assert system.engine.trailing_volume(trader) == 0
    assert system.engine.premium_accumulator(MARKET_BTC) == before
    system.trade(MARKET_BTC, maker, trader, WAD, taker_sub=1)
    assert system.engine.trailing_volume(trader) == 60_000 * WAD
    assert system.engine.trailing_volume(stranger) == 0
