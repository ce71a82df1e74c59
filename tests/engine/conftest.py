"""Engine fixtures on ape's local chain: token, feed, an engine listing MARKET_BTC, actors."""

from __future__ import annotations

import pytest

from offchain.devnet.system import deploy_engine
from tests.conftest import (
    DEFAULT_GUARDRAILS,
    DEFAULT_INITIAL_RATIO,
    DEFAULT_TIERS,
    MARKET_BTC,
    WAD,
    tiers_arg,
)

USDC = 10**6
BTC_PRICE = 60_000
FEED_DECIMALS = 8
MAX_PRICE_AGE = 3600
PRICE_BAND = 5 * 10**16  # 5%
LIQUIDATION_FEE = 25 * 10**14  # 0.25% of the closed notional
LIQUIDATOR_SHARE = WAD // 2
OI_CAP = 10**9 * WAD  # 1bn USD
DEPOSIT = 10_000 * USDC


def feed_answer(usd: float | int) -> int:
    return int(usd * 10**FEED_DECIMALS)


def config(feed_, **overrides) -> tuple:
    values = {
        "feed": feed_.address if hasattr(feed_, "address") else feed_,
        "max_price_age": MAX_PRICE_AGE,
        "price_band": PRICE_BAND,
        "liquidation_fee": LIQUIDATION_FEE,
        "liquidator_share": LIQUIDATOR_SHARE,
        "oi_cap": OI_CAP,
    }
    values.update(overrides)
    return tuple(values.values())


@pytest.fixture(scope="session")
def trader(accounts):
    return accounts[4]


@pytest.fixture(scope="session")
def maker(accounts):
    return accounts[5]


@pytest.fixture(scope="session")
def liquidator(accounts):
    return accounts[6]


@pytest.fixture(scope="session")
def exchange(accounts):
    """An authorised exchange (an EOA stands in for the matching contract)."""
    return accounts[7]


@pytest.fixture
def token(project, owner):
    return project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)


@pytest.fixture
def feed(project, owner):
    return project.MockPriceFeed.deploy(FEED_DECIMALS, feed_answer(BTC_PRICE), sender=owner)


@pytest.fixture
def bare_engine(project, owner, token, registry):
    return deploy_engine(project, owner, token, registry)


@pytest.fixture
def engine(bare_engine, owner, feed, exchange):
    bare_engine.add_market(MARKET_BTC, config(feed), sender=owner)
    bare_engine.set_exchange(exchange, True, sender=owner)
    return bare_engine


@pytest.fixture
def fund(token, engine):
    """Mint and deposit token units into an actor's subaccount."""

    def _fund(actor, amount=DEPOSIT, sub=0):
        token.mint(actor, amount, sender=actor)
        token.approve(engine, 2**256 - 1, sender=actor)
        engine.deposit(sub, amount, sender=actor)

    return _fund


@pytest.fixture
def funded(fund, trader, maker, liquidator):
    for actor in (trader, maker, liquidator):
        fund(actor)


@pytest.fixture
def trade(engine, exchange):
    """Settle `size` (taker buys when > 0) between maker and taker subaccount 0."""

    def _trade(
        maker, taker, size, price=BTC_PRICE * WAD, market_id=MARKET_BTC, maker_sub=0, taker_sub=0
    ):
        return engine.settle_trade(
            market_id, maker, maker_sub, taker, taker_sub, size, price, sender=exchange
        )

    return _trade


@pytest.fixture
def add_markets(registry, project, owner, engine):
    """Configure and list extra markets (ids) in both registry and engine; returns their feeds."""

    def _add(ids, price=BTC_PRICE):
        feeds = {}
        for market_id in ids:
            registry.configure_market(
                market_id,
                tiers_arg(DEFAULT_TIERS),
                DEFAULT_INITIAL_RATIO,
                DEFAULT_GUARDRAILS.as_tuple(),
                sender=owner,
            )
            feeds[market_id] = project.MockPriceFeed.deploy(
                FEED_DECIMALS, feed_answer(price), sender=owner
            )
            engine.add_market(market_id, config(feeds[market_id]), sender=owner)
        return feeds

    return _add
