"""A margin engine with its scenario and profile registries, for the suites of those features.

Four markets are listed in the risk registry and the engine: BTC, ETH and SOL (scenario group 1
once :func:`configure_group` runs) and XRP, outside every group. The tier schedule and guardrails
are the devnet's (0.5% to 1M USD, stale multiplier 4x before any risk update). Keepers are the
risk registry's; the scenario and profile registries push into the engine.

Deploying takes a dozen transactions, so the suites build one system per module (module-scoped
fixtures) and rely on ape's per-test isolation to start each test from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ape import chain

from offchain.devnet.system import deploy_engine
from offchain.protocol.portfolio_math import pack_shocks
from offchain.protocol.signing import (
    ProfileUpdate,
    RiskUpdate,
    ScenarioUpdate,
    sign_batch_multi,
)
from tests.conftest import DEFAULT_GUARDRAILS, DEFAULT_INITIAL_RATIO, DEFAULT_TIERS, WAD, tiers_arg
from tests.engine.conftest import FEED_DECIMALS, USDC, config, feed_answer

MARKET_BTC, MARKET_ETH, MARKET_SOL, MARKET_XRP = 1, 2, 3, 4
PRICES = {MARKET_BTC: 60_000, MARKET_ETH: 3_000, MARKET_SOL: 150, MARKET_XRP: 2}
GROUP = 1
GROUP_MARKETS = (MARKET_BTC, MARKET_ETH, MARKET_SOL)
MAX_SHOCKS = (3_000, 3_500, 4_500)  # |shock| bounds, basis points
MAX_STEPS = (1_000, 1_000, 1_500)  # per update
SCENARIO_HEARTBEAT = 3_600
RESIDUAL = WAD // 10
FLOOR = WAD // 5
GROUP_INITIAL_RATIO = 3 * WAD // 2
PROFILE_HEARTBEAT = 86_400
MODEL_HASH = b"\x5c" * 32
SCENARIO_REGISTRY_KIND, PROFILE_REGISTRY_KIND = 1, 2


def group_config(
    markets: Sequence[int] = GROUP_MARKETS,
    max_shocks: Sequence[int] = MAX_SHOCKS,
    max_steps: Sequence[int] = MAX_STEPS,
    heartbeat: int = SCENARIO_HEARTBEAT,
    residual: int = RESIDUAL,
    floor: int = FLOOR,
    initial_ratio: int = GROUP_INITIAL_RATIO,
) -> tuple:
    """A ``GroupConfig`` in the contract's field order."""
    return (
        list(markets),
        list(max_shocks),
        list(max_steps),
        heartbeat,
        residual,
        floor,
        initial_ratio,
    )


@dataclass
class FeatureSystem:
    """The deployed contracts and the accounts that run them."""

    owner: Any
    exchange: Any
    token: Any
    registry: Any
    engine: Any
    scenarios: Any
    profiles: Any
    feeds: dict[int, Any]

    def set_price(self, market_id: int, usd: float) -> Any:
        return self.feeds[market_id].set_answer(feed_answer(usd), sender=self.owner)

    def fund(self, actor: Any, usd: int, sub: int = 0) -> None:
        """Mint and deposit ``usd`` dollars of collateral into a subaccount."""
        self.token.mint(actor, usd * USDC, sender=actor)
        self.token.approve(self.engine, 2**256 - 1, sender=actor)
        self.engine.deposit(sub, usd * USDC, sender=actor)

    def fund_insurance(self, usd: int) -> Any:
        self.token.mint(self.owner, usd * USDC, sender=self.owner)
        self.token.approve(self.engine, 2**256 - 1, sender=self.owner)
        return self.engine.fund_insurance(usd * USDC, sender=self.owner)

    def trade(self, market_id, maker, taker, size, price=None, maker_sub=0, taker_sub=0) -> Any:
        """The taker buys ``size`` (WAD base units; sells when negative) at ``price`` (WAD;
        the listed price by default)."""
        price = PRICES[market_id] * WAD if price is None else price
        return self.engine.settle_trade(
            market_id, maker, maker_sub, taker, taker_sub, size, price, sender=self.exchange
        )

    def submit_risk(self, updates: Sequence[RiskUpdate], keys, sender) -> Any:
        signatures = sign_batch_multi(
            updates, [k.key for k in keys], _chain_id(), self.registry.address
        )
        return self.registry.submit_updates(
            [u.as_tuple() for u in updates], signatures, sender=sender
        )

    def submit_scenarios(
        self, updates: Sequence[ScenarioUpdate], keys, sender, signatures=None
    ) -> Any:
        if signatures is None:
            signatures = sign_batch_multi(
                updates, [k.key for k in keys], _chain_id(), self.scenarios.address
            )
        return self.scenarios.submit_scenarios(
            [u.as_tuple() for u in updates], signatures, sender=sender
        )

    def submit_profiles(
        self, updates: Sequence[ProfileUpdate], keys, sender, signatures=None
    ) -> Any:
        if signatures is None:
            signatures = sign_batch_multi(
                updates, [k.key for k in keys], _chain_id(), self.profiles.address
            )
        return self.profiles.submit_profiles(
            [u.as_tuple() for u in updates], signatures, sender=sender
        )


def _chain_id() -> int:
    from ape import chain

    return chain.chain_id


def deploy_features(
    project, owner, guardian, keepers: Sequence[str], exchange, with_group: bool = True
) -> FeatureSystem:
    """Deploy token, feeds, the three registries and the engine; list the four markets; make
    the scenario and profile registries push into the engine; configure group 1 unless told
    not to."""
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    registry = project.RiskParameterRegistry.deploy(guardian, sender=owner)
    for keeper in keepers:
        registry.add_keeper(keeper, sender=owner)
    engine = deploy_engine(project, owner, token, registry)
    feeds = {}
    for market_id, usd in PRICES.items():
        registry.configure_market(
            market_id,
            tiers_arg(DEFAULT_TIERS),
            DEFAULT_INITIAL_RATIO,
            DEFAULT_GUARDRAILS.as_tuple(),
            sender=owner,
        )
        feeds[market_id] = project.MockPriceFeed.deploy(
            FEED_DECIMALS, feed_answer(usd), sender=owner
        )
        engine.add_market(market_id, config(feeds[market_id]), sender=owner)
    engine.set_exchange(exchange, True, sender=owner)
    scenarios = project.ScenarioRegistry.deploy(registry, engine, sender=owner)
    profiles = project.ProfileRegistry.deploy(registry, engine, PROFILE_HEARTBEAT, sender=owner)
    engine.set_push_registry(SCENARIO_REGISTRY_KIND, scenarios, sender=owner)
    engine.set_push_registry(PROFILE_REGISTRY_KIND, profiles, sender=owner)
    if with_group:
        scenarios.configure_group(GROUP, group_config(), sender=owner)
        # the group's first update must be observed after its configuration's block
        chain.pending_timestamp += 60
    return FeatureSystem(owner, exchange, token, registry, engine, scenarios, profiles, feeds)


def scenario_update(
    now: int,
    rows: Sequence[Sequence[int]],
    group_id: int = GROUP,
    count: int | None = None,
    observed_at: int | None = None,
    deadline: int | None = None,
) -> ScenarioUpdate:
    """A scenario update observed a second before ``now`` and valid for an hour: ``rows[i]``
    are market ``i``'s shocks in basis points (the count is their length unless given)."""
    return ScenarioUpdate(
        group_id=group_id,
        count=len(rows[0]) if count is None else count,
        shocks=tuple(pack_shocks(r) for r in rows),
        observed_at=now - 1 if observed_at is None else observed_at,
        deadline=now + 3_600 if deadline is None else deadline,
        model_hash=MODEL_HASH,
    )


def profile_update(
    now: int,
    owner: Any,
    class_id: int,
    subaccount: int = 0,
    observed_at: int | None = None,
    deadline: int | None = None,
) -> ProfileUpdate:
    """A profile update observed a second before ``now`` and valid for an hour."""
    return ProfileUpdate(
        owner=owner.address if hasattr(owner, "address") else owner,
        subaccount=subaccount,
        class_id=class_id,
        observed_at=now - 1 if observed_at is None else observed_at,
        deadline=now + 3_600 if deadline is None else deadline,
        model_hash=MODEL_HASH,
    )


def risk_update(
    now: int, market_id: int, multiplier: int = 2 * WAD, funding_rate: int = 0
) -> RiskUpdate:
    """A risk update observed a second before ``now`` and valid for an hour."""
    return RiskUpdate(market_id, multiplier, funding_rate, now - 1, now + 3_600, MODEL_HASH)
