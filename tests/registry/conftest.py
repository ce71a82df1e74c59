"""Registry test helpers: configure markets, read state back as the reference's dataclasses,
land transactions and read views at exact block times."""

from __future__ import annotations

import dataclasses

import pytest

from offchain.protocol.margin_math import Guardrails, MarketState, Tier
from tests.conftest import (
    DEFAULT_GUARDRAILS,
    DEFAULT_INITIAL_RATIO,
    DEFAULT_TIERS,
    MARKET_BTC,
    WAD,
    tiers_arg,
)

FIRST_MULTIPLIER = 2 * WAD


def guardrails(**overrides) -> Guardrails:
    """The default guardrails with some fields replaced."""
    return dataclasses.replace(DEFAULT_GUARDRAILS, **overrides)


def configure(
    registry,
    owner,
    market_id,
    tiers=DEFAULT_TIERS,
    initial_ratio=DEFAULT_INITIAL_RATIO,
    rails: Guardrails = DEFAULT_GUARDRAILS,
):
    """List or reconfigure a market; returns the receipt."""
    return registry.configure_market(
        market_id, tiers_arg(tiers), initial_ratio, rails.as_tuple(), sender=owner
    )


def state_of(registry, market_id=MARKET_BTC) -> MarketState:
    """The contract's stored market state as the reference's ``MarketState``."""
    return MarketState(*registry.market_state(market_id))


def guardrails_of(registry, market_id=MARKET_BTC) -> Guardrails:
    return Guardrails(*registry.guardrails(market_id))


def tiers_of(registry, market_id=MARKET_BTC) -> list[Tier]:
    return [Tier(*t) for t in registry.tiers(market_id)]


def land_at(chain, timestamp: int) -> None:
    """Make the next transaction land in a block stamped ``timestamp``."""
    chain.pending_timestamp = timestamp


def view_at(chain, timestamp: int) -> None:
    """Mine an empty block stamped ``timestamp``: views then run at that time."""
    chain.mine(timestamp=timestamp)


@pytest.fixture
def first_update(registry, submit, make_update):
    """The market's first accepted update (multiplier 2x); returns (update, receipt)."""
    update = make_update(multiplier=FIRST_MULTIPLIER)
    receipt = submit([update])
    return update, receipt


@pytest.fixture
def second_keeper(registry, owner, keepers):
    registry.add_keeper(keepers[1].address, sender=owner)
    return keepers[1]
