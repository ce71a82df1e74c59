"""Constructor, market listing, exchanges, pause, ownership."""

import ape
import pytest

from tests.conftest import MARKET_BTC, MARKET_ETH, WAD
from tests.engine.conftest import config


def test_init__sets_token_registry_scale_owner(bare_engine, token, registry, owner):
    assert bare_engine.COLLATERAL() == token.address
    assert bare_engine.REGISTRY() == registry.address
    assert bare_engine.TOKEN_SCALE() == 10**12
    assert bare_engine.owner() == owner.address


@pytest.fixture
def parts(project, owner, token, registry):
    """The engine's three delegate parts, built for `token` and `registry`."""
    return (
        project.EngineTrades.deploy(token, 10**12, sender=owner),
        project.EngineLiquidations.deploy(sender=owner),
        project.EngineGovernance.deploy(registry, sender=owner),
    )


def test_init__zero_collateral(project, owner, registry, parts):
    with ape.reverts("engine: zero collateral"):
        project.MarginEngine.deploy(ape.utils.ZERO_ADDRESS, registry, *parts, sender=owner)


def test_init__zero_registry(project, owner, token, parts):
    with ape.reverts("engine: zero registry"):
        project.MarginEngine.deploy(token, ape.utils.ZERO_ADDRESS, *parts, sender=owner)


def test_init__collateral_decimals(project, owner, registry, parts):
    odd = project.MockERC20.deploy("Odd", "ODD", 19, sender=owner)
    with ape.reverts("engine: collateral decimals"):
        project.MarginEngine.deploy(odd, registry, *parts, sender=owner)


def test_init__parts_built_for_another_collateral_or_registry(
    project, owner, token, registry, parts
):
    trades, liquidations, governance = parts
    other = project.MockERC20.deploy("Other", "OTH", 6, sender=owner)
    with ape.reverts("engine: trades built for another collateral"):
        project.MarginEngine.deploy(other, registry, trades, liquidations, governance, sender=owner)
    elsewhere = project.EngineGovernance.deploy(owner, sender=owner)
    with ape.reverts("engine: governance built for another registry"):
        project.MarginEngine.deploy(token, registry, trades, liquidations, elsewhere, sender=owner)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_parts__refuse_a_direct_call(parts, owner, part, trader):
    """Each part runs only by delegatecall inside the engine."""
    calls = [
        lambda p: p.withdraw(0, 1, sender=trader),
        lambda p: p.backstop(trader, 0, sender=trader),
        lambda p: p.pause(sender=owner),
    ]
    with ape.reverts("engine: call through the engine"):
        calls[part](parts[part])


def test_add_market__lists_and_logs(bare_engine, owner, feed):
    receipt = bare_engine.add_market(MARKET_BTC, config(feed), sender=owner)
    assert bare_engine.market_config(MARKET_BTC).feed == feed.address
    assert bare_engine.mark_price(MARKET_BTC) == (60_000 * WAD, True)
    assert len(receipt.decode_logs(bare_engine.MarketListed)) == 1


def test_add_market__not_owner(bare_engine, stranger, feed):
    with ape.reverts("ownable: caller is not the owner"):
        bare_engine.add_market(MARKET_BTC, config(feed), sender=stranger)


@pytest.mark.parametrize("market_id", [0, 2**24])
def test_add_market__bad_market_id(bare_engine, owner, feed, market_id):
    with ape.reverts("engine: bad market id"):
        bare_engine.add_market(market_id, config(feed), sender=owner)


def test_add_market__market_listed(engine, owner, feed):
    with ape.reverts("engine: market listed"):
        engine.add_market(MARKET_BTC, config(feed), sender=owner)


def test_add_market__market_not_in_registry(bare_engine, owner, feed):
    with ape.reverts("engine: market not in registry"):
        bare_engine.add_market(MARKET_ETH, config(feed), sender=owner)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"feed": ape.utils.ZERO_ADDRESS}, "engine: zero feed"),
        ({"max_price_age": 0}, "engine: bad max price age"),
        ({"price_band": 2 * 10**17 + 1}, "engine: bad price band"),
        ({"liquidation_fee": 2 * 10**17 + 1}, "engine: bad liquidation fee"),
        ({"liquidator_share": WAD + 1}, "engine: bad liquidator share"),
        # The lowest maintenance rate is 0.5% (tier 0) x 1 (min multiplier).
        ({"liquidation_fee": 5 * 10**15}, "engine: liquidation fee not below maintenance"),
    ],
)
def test_add_market__bad_config(bare_engine, owner, feed, overrides, message):
    with ape.reverts(message):
        bare_engine.add_market(MARKET_BTC, config(feed, **overrides), sender=owner)


def test_add_market__feed_decimals(bare_engine, owner, project):
    feed19 = project.MockPriceFeed.deploy(19, 10**19, sender=owner)
    with ape.reverts("engine: feed decimals"):
        bare_engine.add_market(MARKET_BTC, config(feed19), sender=owner)


def test_update_market__replaces_config(engine, owner, feed):
    engine.update_market(MARKET_BTC, config(feed, oi_cap=123), sender=owner)
    assert engine.market_config(MARKET_BTC).oi_cap == 123


def test_update_market__fee_not_below_maintenance(engine, owner, feed):
    with ape.reverts("engine: liquidation fee not below maintenance"):
        engine.update_market(MARKET_BTC, config(feed, liquidation_fee=10**16), sender=owner)


def test_update_market__unknown_market(engine, owner, feed):
    with ape.reverts("engine: unknown market"):
        engine.update_market(MARKET_ETH, config(feed), sender=owner)


def test_set_exchange__allows_and_revokes(engine, owner, stranger):
    engine.set_exchange(stranger, True, sender=owner)
    assert engine.is_exchange(stranger)
    engine.set_exchange(stranger, False, sender=owner)
    assert not engine.is_exchange(stranger)


def test_set_exchange__not_owner(engine, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        engine.set_exchange(stranger, True, sender=stranger)


def test_set_exchange__zero_exchange(engine, owner):
    with ape.reverts("engine: zero exchange"):
        engine.set_exchange(ape.utils.ZERO_ADDRESS, True, sender=owner)


def test_pause__owner_pauses_and_unpauses(engine, owner):
    engine.pause(sender=owner)
    assert engine.paused()
    engine.unpause(sender=owner)
    assert not engine.paused()


def test_pause__not_owner(engine, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        engine.pause(sender=stranger)
    with ape.reverts("ownable: caller is not the owner"):
        engine.unpause(sender=stranger)


def test_transfer_ownership__two_steps(engine, owner, stranger):
    engine.transfer_ownership(stranger, sender=owner)
    assert engine.owner() == owner.address
    engine.accept_ownership(sender=stranger)
    assert engine.owner() == stranger.address
