"""Shared ape fixtures: actors by role, a deployed registry with one configured market."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from hypothesis import HealthCheck, settings

from offchain.protocol.margin_math import Guardrails, Tier
from offchain.protocol.signing import RiskUpdate, sign_batch_multi

WAD = 10**18
MARKET_BTC = 1
MARKET_ETH = 2

# Hypothesis profiles: "ci" keeps the suite inside its time budget; "deep" is `make fuzz`.
settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "25")),
    deadline=None,
    # On CI (CI=true) the same examples every run, so a red build is always a change that
    # can be reproduced; locally and in `make fuzz` hypothesis explores afresh.
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The contract suites' own schedule and guardrails, written out: their hand-computed
# expectations depend on these numbers, not on what the devnet ships (deploy/risk.yaml).
DEFAULT_TIERS = [
    Tier(0, 5 * 10**15),  # 0.5% of notional up to 1M USD
    Tier(1_000_000 * WAD, 10**16),  # 1% from 1M to 10M
    Tier(10_000_000 * WAD, 25 * 10**15),  # 2.5% above 10M
]
DEFAULT_INITIAL_RATIO = 2 * WAD  # initial = 2x maintenance
DEFAULT_GUARDRAILS = Guardrails(
    min_multiplier=WAD,
    max_multiplier=10 * WAD,
    max_increase=WAD // 2,  # +50% per update
    max_decrease=WAD // 10,  # -10% per update
    min_decrease_interval=3600,
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=0,
    max_funding_rate=10**12,
)
KEEPER_KEYS = [Account.from_key(bytes([i + 1]) * 32) for i in range(5)]


@pytest.fixture(scope="session")
def owner(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def guardian(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def relayer(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def stranger(accounts):
    return accounts[3]


@pytest.fixture(scope="session")
def keepers():
    """Keeper signing keys (they sign off-chain and never send transactions)."""
    return KEEPER_KEYS


@pytest.fixture(scope="session")
def keeper(keepers):
    return keepers[0]


def tiers_arg(tiers):
    return [(t.notional_floor, t.maintenance_rate) for t in tiers]


@pytest.fixture
def registry(project, owner, guardian, keeper):
    contract = project.RiskParameterRegistry.deploy(guardian, sender=owner)
    contract.add_keeper(keeper.address, sender=owner)
    contract.configure_market(
        MARKET_BTC,
        tiers_arg(DEFAULT_TIERS),
        DEFAULT_INITIAL_RATIO,
        DEFAULT_GUARDRAILS.as_tuple(),
        sender=owner,
    )
    return contract


@pytest.fixture
def submit(registry, relayer, chain):
    """Sign a batch with the given keys and relay it; returns the receipt."""

    def _submit(updates, keys=None, sender=None, signatures=None, **kwargs):
        keys = keys if keys is not None else [KEEPER_KEYS[0]]
        if signatures is None:
            signatures = sign_batch_multi(
                updates, [k.key for k in keys], chain.chain_id, registry.address
            )
        return registry.submit_updates(
            [u.as_tuple() for u in updates], signatures, sender=sender or relayer, **kwargs
        )

    return _submit


@pytest.fixture
def make_update(chain):
    """An update for a market observed at the next block's time, valid for an hour."""

    def _make(
        market_id=MARKET_BTC,
        multiplier=2 * WAD,
        funding_rate=0,
        observed_at=None,
        deadline=None,
        model_hash=b"\x11" * 32,
    ):
        now = chain.pending_timestamp
        return RiskUpdate(
            market_id=market_id,
            multiplier=multiplier,
            funding_rate=funding_rate,
            observed_at=observed_at if observed_at is not None else now - 1,
            deadline=deadline if deadline is not None else now + 3600,
            model_hash=model_hash,
        )

    return _make
