"""Adversarial scenarios on titanoboa, each value worked out by hand or by the references.

Rounding is pinned per path (a fill, a partial close, a penalty, funding owed) to literal wei
values derived in the comments from the README's rules; funding is followed through a rate
change, a negative rate, a price change between touches, a withdrawal blocked by unpaid
funding and a long run of hourly updates at the registry's bound; the feeds misbehave (revert,
answer from the future, 6 and 18 decimals, a price at a bound, no price ever); and every price
drop asserts what the engine must do at that drop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import boa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_TIERS
from offchain.protocol import engine_math as em
from offchain.protocol.signing import RiskUpdate, sign_batch
from tests.engine.reference import market_view, reference_health
from tests.fuzz.conftest import KEEPER, deploy_engine, deployer

USDC = 10**6
BTC, SIX, EIGHTEEN, SPARE = 1, 6, 18, 7
P = 60_000 * WAD
FEE = 25 * 10**14
FEEDS = {BTC: (8, 60_000 * 10**8), SIX: (6, 2_500_000), EIGHTEEN: (18, 3_000 * WAD)}
# A year of hourly keeper updates under `make fuzz`; a week under `make test`.
HOURS = 365 * 24 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else 7 * 24


@dataclass
class Chain:
    owner: str
    exchange: str
    registry: object
    engine: object
    token: object
    feeds: dict

    def account(self, name: str, usd: int) -> str:
        who = str(boa.env.generate_address(name))
        self.token.mint(who, usd * USDC)
        with boa.env.prank(who):
            self.token.approve(self.engine.address, 2**256 - 1)
            if usd:
                self.engine.deposit(0, usd * USDC)
        return who

    def trade(self, m, maker, taker, size, price, maker_sub=0, taker_sub=0):
        with boa.env.prank(self.exchange):
            self.engine.settle_trade(m, maker, maker_sub, taker, taker_sub, size, price)

    def update(self, m: int, multiplier: int, rate: int) -> None:
        """A keeper update signed now (one per market per block: the caller moves time)."""
        t = boa.env.evm.patch.timestamp
        u = RiskUpdate(m, multiplier, rate, t - 1, t + 600, b"\x01" * 32)
        sig = sign_batch([u], KEEPER.key, boa.env.evm.patch.chain_id, self.registry.address)
        self.registry.submit_updates([u.as_tuple()], [sig])

    def owed(self, who: str) -> int:
        return self.engine.account_details(who, 0).funding_owed

    def health(self, who: str) -> em.Health:
        return reference_health(self.engine, self.registry, who, 0, boa.env.evm.patch.timestamp)


def config(feed) -> tuple:
    return (feed.address, 3600, 5 * 10**16, FEE, WAD // 2, 10**12 * WAD)


_BASE: list[Chain] = []


def base() -> Chain:
    """Markets with 8-, 6- and 18-decimal feeds at 2x and no funding; tests run in anchors."""
    if not _BASE:
        owner = boa.env.generate_address("adv_owner")
        with boa.env.prank(owner):
            registry = deployer("RiskParameterRegistry.vy").deploy(owner)
            registry.add_keeper(KEEPER.address)
            for m in (BTC, SIX, EIGHTEEN, SPARE):
                registry.configure_market(
                    m,
                    [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS],
                    2 * WAD,
                    DEVNET_GUARDRAILS.as_tuple(),
                )
            token = deployer("mocks/MockERC20.vy").deploy("USD Coin", "USDC", 6)
            feeds = {m: deployer("mocks/MockPriceFeed.vy").deploy(*f) for m, f in FEEDS.items()}
            engine = deploy_engine(token, registry)
            for m, feed in feeds.items():
                engine.add_market(m, config(feed))
            exchange = boa.env.generate_address("adv_exchange")
            engine.set_exchange(exchange, True)
        chain = Chain(str(owner), str(exchange), registry, engine, token, feeds)
        boa.env.time_travel(seconds=1)
        for m in feeds:
            chain.update(m, 2 * WAD, 0)
        _BASE.append(chain)
    return _BASE[0]


base()


@pytest.fixture
def c():
    with boa.env.anchor():
        yield base()


def pair(c: Chain, usd: int = 1_000_000, size: int = WAD) -> tuple[str, str]:
    """A long of `size` BTC at 60,000 against a short, each with `usd` of collateral."""
    long, short = c.account("long", usd), c.account("short", usd)
    c.trade(BTC, short, long, size, P)
    return long, short


# Rounding, pinned per path


def test_rounding__a_fill_charges_the_buyer_up_and_credits_the_seller_down(c):
    long, short = c.account("buyer", 100_000), c.account("seller", 100_000)
    s, p = 333_333_333_333_333_333, P + 7
    # s * p / WAD = 19,999,999,999,999,999,980,002.333...: the buyer's basis is the ceiling,
    # the seller's the floor; the engine keeps the 1 wei in between; no collateral moves.
    c.trade(BTC, short, long, s, p)
    assert c.engine.position(long, 0, BTC) == (s, 19_999_999_999_999_999_980_003)
    assert c.engine.position(short, 0, BTC) == (-s, -19_999_999_999_999_999_980_002)
    assert c.engine.collateral_of(long, 0) == c.engine.collateral_of(short, 0) == 100_000 * WAD


def test_rounding__a_partial_close_realises_the_basis_rounded_toward_zero(c):
    long, short = c.account("buyer", 100_000), c.account("seller", 100_000)
    s = 333_333_333_333_333_333
    c.trade(BTC, short, long, s, P + 7)
    c.feeds[BTC].set_answer(61_000 * 10**8)
    q, p2 = 10**17, 61_000 * WAD + 3
    c.trade(BTC, short, long, -q, p2)
    # Long: basis 19,999,999,999,999,999,980,003 * q / s = 6,000 USD + 0.9... wei -> 6,000 USD;
    # cash floor(q * p2) = floor(6,100 USD + 0.3 wei) = 6,100 USD: it realises exactly 100 USD.
    assert c.engine.collateral_of(long, 0) == 100_100 * WAD
    assert c.engine.position(long, 0, BTC) == (s - q, 13_999_999_999_999_999_980_003)
    # Short: basis -19,999,999,999,999,999,980,002 * q / s = -6,000 USD - 0.6 wei -> -6,000
    # USD; it pays ceil(q * p2) = 6,100 USD + 1 wei: it realises -100 USD - 1 wei.
    assert c.engine.collateral_of(short, 0) == 99_900 * WAD - 1
    assert c.engine.position(short, 0, BTC) == (-(s - q), -13_999_999_999_999_999_980_002)


def test_rounding__a_penalty_is_rounded_up_twice_and_split_down(c):
    victim, maker = c.account("victim", 1_500), c.account("maker", 100_000)
    liquidator = c.account("liquidator", 1_000_000)
    fund_before = c.engine.collateral_of(c.engine.address, 0)
    c.trade(BTC, maker, victim, WAD, P)
    c.feeds[BTC].set_answer(5_899_912_345_678)  # 58,999.12345678: equity 499.12 < 590 maint
    assert c.engine.mark_price(BTC) == (58_999_123_456_780_000_000_000, True)
    q = 123_456_789_012_345_678  # below the rule's cap (about 0.3 BTC)
    with boa.env.prank(liquidator):
        assert c.engine.liquidate(victim, 0, BTC, q, 0) == q
    # ceil(q * p) = 7,283,842,336,517,023,259,900; fee 0.25% of it = ...148.25 -> rounded up:
    penalty = 18_209_605_841_292_558_150
    # The close realises floor(q * p) - 60,000 USD * q = -123,565,004,223,717,420,101.
    assert c.engine.collateral_of(victim, 0) == 1_500 * WAD - 123_565_004_223_717_420_101 - penalty
    assert c.engine.position(victim, 0, BTC) == (WAD - q, 52_592_592_659_259_259_320_000)
    # Half to the liquidator (rounded down), the rest to the insurance fund.
    assert c.engine.collateral_of(liquidator, 0) == 1_000_000 * WAD + 9_104_802_920_646_279_075
    fund = c.engine.collateral_of(c.engine.address, 0)
    assert fund - fund_before == 9_104_802_920_646_279_075


def test_rounding__funding_owed_rounds_against_each_side_under_a_negative_rate(c):
    """Negative rate: shorts pay longs; each side's unpaid funding is rounded up."""
    s = 333_333_333_333_333_333
    long, short = pair(c, 100_000, s)
    boa.env.time_travel(seconds=1)
    c.update(BTC, 2 * WAD, -(10**10))
    boa.env.time_travel(seconds=3600)
    # index: -1e10 / s x 3,600 s x 60,000 USD = -2.16 USD per BTC.
    assert c.engine.funding_index(BTC) == -2_160_000_000_000_000_000
    # s x -2.16 USD = -719,999,999,999,999,999.28 wei: the long is owed the ceiling (less), the
    # short owes the ceiling of +...999.28 (more).
    assert c.owed(long) == -719_999_999_999_999_999
    assert c.owed(short) == 720_000_000_000_000_000
    c.engine.poke(BTC)
    c.trade(BTC, short, long, -s, P)  # both close: the funding settles into collateral
    assert c.engine.collateral_of(long, 0) == 100_000 * WAD + 719_999_999_999_999_999
    assert c.engine.collateral_of(short, 0) == 100_000 * WAD - 720_000_000_000_000_000


# Funding


def test_funding__a_rate_change_between_touches_accrues_each_rate_over_its_own_interval(c):
    long, short = pair(c)
    boa.env.time_travel(seconds=1)
    c.update(BTC, 2 * WAD, 10**10)
    boa.env.time_travel(seconds=1000)
    c.update(BTC, 2 * WAD, -3 * 10**9)  # the engine accrues the old rate first
    assert c.engine.funding_index(BTC) == 600_000_000_000_000_000  # 1e10 x 1,000 s x 60,000
    boa.env.time_travel(seconds=500)
    # then -3e9 x 500 s x 60,000 USD = -0.09 USD per BTC
    assert c.engine.funding_index(BTC) == 510_000_000_000_000_000
    assert c.owed(long) == 510_000_000_000_000_000
    assert c.owed(short) == -510_000_000_000_000_000


def test_funding__a_price_change_between_touches_applies_from_the_next_touch(c):
    pair(c)
    boa.env.time_travel(seconds=1)
    c.update(BTC, 2 * WAD, 10**10)  # a touch at 60,000
    boa.env.time_travel(seconds=100)
    c.feeds[BTC].set_answer(30_000 * 10**8)
    boa.env.time_travel(seconds=900)
    # Untouched since the update: the whole 1,000 s accrue at the stored 60,000 USD.
    assert c.engine.funding_index(BTC) == 600_000_000_000_000_000
    c.engine.poke(BTC)  # stores 30,000
    boa.env.time_travel(seconds=1000)
    assert c.engine.funding_index(BTC) == 900_000_000_000_000_000  # + 1e10 x 1,000 x 30,000


def test_funding__unpaid_funding_blocks_a_withdrawal_that_profit_would_allow(c):
    long, short = c.account("long", 10_000), c.account("short", 1_000_000)
    c.trade(BTC, short, long, WAD, P)
    boa.env.time_travel(seconds=1)
    bound = DEVNET_GUARDRAILS.max_funding_rate  # 1.9e11 WAD/s
    c.update(BTC, 2 * WAD, bound)  # the registry's bound
    boa.env.time_travel(seconds=7200)  # one heartbeat, still fresh
    c.feeds[BTC].set_answer(90_000 * 10**8)  # 30,000 USD of unrealised profit
    owed = bound * 7_200 * 60_000  # 82.08 USD: the bound x 7,200 s x 60,000 USD
    assert owed == 82_080_000_000_000_000_000
    assert c.owed(long) == owed
    equity, _, initial = c.engine.account_health(long, 0)
    assert equity - 10_000 * WAD >= initial  # equity alone would allow withdrawing everything
    with boa.env.prank(long), boa.reverts("engine: insufficient collateral"):
        c.engine.withdraw(0, 10_000 * USDC)
    with boa.env.prank(long), boa.reverts("engine: insufficient collateral"):
        c.engine.withdraw(0, 9_917_920_000 + 1)
    with boa.env.prank(long):
        c.engine.withdraw(0, 9_917_920_000)  # collateral minus what it owes, to the unit
    assert c.engine.collateral_of(long, 0) == owed


def test_funding__hourly_updates_at_the_bound_keep_the_packed_index_exact(c):
    """Every hour a keeper signs the bound, then the bound less 1 (a rate change, so each
    update accrues): HOURS updates, each hour adding rate x 3,600 s x 60,000 USD exactly."""
    long, short = pair(c, 10_000_000)
    bound = DEVNET_GUARDRAILS.max_funding_rate
    expected = 0
    for hour in range(HOURS):
        boa.env.time_travel(seconds=3600)
        if hour:  # the engine accrues the rate of the hour before
            expected += (bound - (hour - 1) % 2) * 3600 * 60_000
        c.update(BTC, 2 * WAD, bound - hour % 2)
        assert hour % 168 or c.engine.funding_index(BTC) == expected
    assert c.engine.funding_index(BTC) == expected
    assert 0 < expected < 2**95 // 10_000  # four orders of magnitude below the packing
    assert c.owed(long) == expected and c.owed(short) == -expected
    c.feeds[BTC].set_answer(60_000 * 10**8)
    c.trade(BTC, short, long, -WAD, P)  # settling still works
    assert c.engine.collateral_of(long, 0) == 10_000_000 * WAD - expected


# Feeds


def test_feed__a_reverting_feed_never_locks_a_position(c):
    long, short = pair(c, 100_000)
    flat = c.account("flat", 1_000)
    c.feeds[BTC].set_reverting(True)
    assert c.engine.mark_price(BTC) == (P, False)  # the stored price, not fresh
    newcomer = c.account("newcomer", 100_000)
    with boa.reverts("engine: invalid price"):
        c.trade(BTC, short, newcomer, WAD // 10, P)
    with boa.env.prank(long), boa.reverts("engine: invalid price"):
        c.engine.withdraw(0, USDC)
    with boa.env.prank(flat):
        c.engine.withdraw(0, 1_000 * USDC)  # no position: no price needed
    c.trade(BTC, short, long, -WAD // 2, P)  # both sides reduce at the stored price
    assert c.engine.position(long, 0, BTC)[0] == WAD // 2
    # Liquidation goes on too: a keeper raises the multiplier until the long is liquidatable.
    # 0.5 BTC on 750 USD: initial 600 USD at 2x; maintenance 1,350 USD at 9x.
    poor = c.account("poor", 750)
    c.feeds[BTC].set_reverting(False)
    c.trade(BTC, short, poor, WAD // 2, P)
    c.feeds[BTC].set_reverting(True)
    for multiplier in (6 * WAD, 9 * WAD):  # +200% at most, each ramped in over 30 minutes
        boa.env.time_travel(seconds=12)  # one update per block
        c.update(BTC, multiplier, 0)
        boa.env.time_travel(seconds=DEVNET_GUARDRAILS.increase_ramp)
    assert c.engine.is_liquidatable(poor, 0)
    liquidator = c.account("liquidator", 1_000_000)
    with boa.env.prank(liquidator):
        assert c.engine.liquidate(poor, 0, BTC, 2**128, 0) > 0


def test_feed__an_answer_from_the_future_is_invalid(c):
    long, short = pair(c, 100_000)
    t = boa.env.evm.patch.timestamp
    c.feeds[BTC].set_round(70_000 * 10**8, t + 60)
    assert c.engine.mark_price(BTC) == (P, False)
    with boa.reverts("engine: invalid price"):
        c.trade(BTC, short, long, WAD // 10, P)
    boa.env.time_travel(seconds=60)  # its time has come: fresh
    assert c.engine.mark_price(BTC) == (70_000 * WAD, True)


@pytest.mark.parametrize(
    ("m", "decimals", "answer"), [(SIX, 6, 2_500_001), (EIGHTEEN, 18, 3_000 * WAD + 7)]
)
def test_feed__six_and_eighteen_decimals_scale_exactly(c, m, decimals, answer):
    c.feeds[m].set_answer(answer)
    price = answer * 10 ** (18 - decimals)
    assert c.engine.mark_price(m) == (price, True)
    long, short = c.account("long", 100_000), c.account("short", 100_000)
    size = 3 * WAD + 1
    c.trade(m, short, long, size, price)
    expected = -(-size * price // WAD)  # ceil
    assert c.engine.position(long, 0, m) == (size, expected)
    h = c.health(long)
    assert tuple(c.engine.account_health(long, 0)) == (h.equity, h.maintenance, h.initial)
    with boa.env.prank(c.owner):
        c.engine.set_price_bounds(m, answer - 1, answer + 1)
    assert c.engine.price_bounds(m) == (
        price - 10 ** (18 - decimals),
        price + 10 ** (18 - decimals),
    )


def test_feed__a_price_at_a_bound_blocks_new_risk_not_exits(c):
    long, short = pair(c, 100_000)
    with boa.env.prank(c.owner):
        c.engine.set_price_bounds(BTC, 1_000 * 10**8, 60_000 * 10**8)  # the price sits at max
    newcomer = c.account("newcomer", 100_000)
    with boa.reverts("engine: price at feed bound"):
        c.trade(BTC, short, newcomer, WAD // 10, P)
    with boa.env.prank(long), boa.reverts("engine: price at feed bound"):
        c.engine.withdraw(0, USDC)
    c.feeds[BTC].set_answer(65_000 * 10**8)  # beyond the bound
    with boa.reverts("engine: price at feed bound"):
        c.trade(BTC, short, newcomer, WAD // 10, 65_000 * WAD)
    c.trade(BTC, short, long, -WAD, 65_000 * WAD)  # closing goes on
    assert c.engine.position(long, 0, BTC) == (0, 0)
    c.feeds[BTC].set_answer(59_999 * 10**8)  # back inside
    c.trade(BTC, short, newcomer, WAD // 10, 59_999 * WAD)


def test_feed__a_market_listed_without_a_price_says_so(c):
    feed = deployer("mocks/MockPriceFeed.vy").deploy(8, 100 * 10**8)
    feed.set_reverting(True)
    with boa.env.prank(c.owner):
        c.engine.add_market(SPARE, config(feed))
    with boa.reverts("engine: no price"):
        c.engine.mark_price(SPARE)
    long, short = c.account("long", 10_000), c.account("short", 10_000)
    with boa.reverts("engine: no price"):
        c.trade(SPARE, short, long, WAD, 100 * WAD)
    c.engine.poke(SPARE)  # nothing to store
    with boa.reverts("engine: no price"):
        c.engine.mark_price(SPARE)
    feed.set_reverting(False)
    boa.env.time_travel(seconds=1)
    c.update(SPARE, 2 * WAD, 0)
    assert c.engine.mark_price(SPARE) == (100 * WAD, True)
    c.trade(SPARE, short, long, WAD, 100 * WAD)
    assert c.engine.position(long, 0, SPARE) == (WAD, 100 * WAD)


# Price drops


@given(drop_bp=st.integers(100, 6_000), requested_bp=st.integers(1, 20_000))
def test_liquidate__every_drop_gets_the_rule_s_answer(drop_bp, requested_bp):
    c = base()
    with boa.env.anchor():
        victim, maker = c.account("victim", 20_000), c.account("maker", 10_000_000)
        liquidator = c.account("liquidator", 10_000_000)
        size = 7 * WAD
        c.trade(BTC, maker, victim, size, P)
        c.feeds[BTC].set_answer(60_000 * 10**8 * (10_000 - drop_bp) // 10_000)
        now = boa.env.evm.patch.timestamp
        h = c.health(victim)
        assert tuple(c.engine.account_health(victim, 0)) == (h.equity, h.maintenance, h.initial)
        assert c.engine.is_liquidatable(victim, 0) == (h.equity < h.maintenance)
        requested = size * requested_bp // 10_000 or 1
        if h.equity >= h.maintenance:
            with boa.env.prank(liquidator), boa.reverts("engine: account healthy"):
                c.engine.liquidate(victim, 0, BTC, requested, 0)
            return
        if h.equity < 0:
            with (
                boa.env.prank(liquidator),
                boa.reverts("engine: negative equity, backstop the account"),
            ):
                c.engine.liquidate(victim, 0, BTC, requested, 0)
            fund = c.engine.collateral_of(c.engine.address, 0)
            c.engine.backstop(victim, 0)
            assert c.engine.collateral_of(victim, 0) == 0
            assert c.engine.bad_debt() == max(-h.equity - fund, 0)
            return
        view = market_view(c.engine, c.registry, BTC)
        cap = em.closable(h, 0, FEE, view, {}, now)
        expected = min(requested, cap)
        price = h.legs[0].price
        if expected < size and (size - expected) * price // WAD < em.DUST_NOTIONAL:
            with boa.env.prank(liquidator), boa.reverts("engine: remainder below dust"):
                c.engine.liquidate(victim, 0, BTC, requested, 0)
            return
        with boa.env.prank(liquidator):
            assert c.engine.liquidate(victim, 0, BTC, requested, 0) == expected
        penalty = em.penalty(expected, price, em.fee_rate(h.legs[0], FEE), h.equity)
        after = c.health(victim)
        # The close at the mark moves equity by at most 1 wei; then the penalty.
        assert h.equity - penalty - 1 <= after.equity <= h.equity - penalty
        if expected == cap < size and 2 * h.equity >= h.maintenance:
            buffered = em.ceil_mul(after.maintenance, WAD + em.LIQUIDATION_BUFFER)
            assert after.equity >= buffered - 1
            assert not c.engine.is_liquidatable(victim, 0)


# Collusion and dust


def test_withdraw__a_pumped_price_pays_no_more_than_collateral(c):
    long, short = c.account("colluding_long", 10_000), c.account("colluder", 10_000)
    c.trade(BTC, short, long, WAD, P)
    c.feeds[BTC].set_answer(600_000 * 10**8)  # the feed is pumped 10x
    assert c.engine.account_health(long, 0)[0] > 500_000 * WAD  # paper profit
    # Closing against the colluder at the pumped price would sink the colluder: refused.
    with boa.reverts("engine: below maintenance margin"):
        c.trade(BTC, short, long, -WAD, 600_000 * WAD)
    collateral = c.engine.collateral_of(long, 0)
    with boa.env.prank(long), boa.reverts("engine: insufficient collateral"):
        c.engine.withdraw(0, collateral // 10**12 + 1)
    with boa.env.prank(long):
        c.engine.withdraw(0, collateral // 10**12)
    assert c.token.balanceOf(long) == 10_000 * USDC


def test_settle_trade__dust_round_trips_lose_exactly_the_rounding(c):
    trader, maker = c.account("trader", 1_000_000), c.account("maker", 1_000_000)
    prices = [P + 123_456_789, P - 987_654_321, P + WAD // 3, P - 1]
    kept = {trader: 0, maker: 0}
    for i in range(60):
        size, buy, sell = 1 + i % 3, prices[i % 4], prices[(i + 1) % 4]
        c.trade(BTC, maker, trader, size, buy)  # the trader buys dust, then sells it back
        c.trade(BTC, maker, trader, -size, sell)
        # README: a buyer pays ceil(s * p), a seller gets floor(s * p).
        kept[trader] += -(-size * buy // WAD) - size * sell // WAD
        kept[maker] += -(-size * sell // WAD) - size * buy // WAD
    for who in (trader, maker):
        assert c.engine.position(who, 0, BTC) == (0, 0)
        assert c.engine.collateral_of(who, 0) == 1_000_000 * WAD - kept[who]
    # Together they lost one wei per fill whose notional is not a whole wei: the engine's.
    fills = [(1 + i % 3, p) for i in range(60) for p in (prices[i % 4], prices[(i + 1) % 4])]
    assert sum(kept.values()) == sum(1 for size, p in fills if size * p % WAD) > 0
