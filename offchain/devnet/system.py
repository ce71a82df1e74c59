"""Deploy and configure a whole devnet system with ape: token, feeds, registry, engine.

Reused by the integration tests, the demo and the benchmarks::

    system = deploy_system(owner, markets=[DevnetMarket(1, "BTC", 60_000)], keepers=[key.address])

The devnet token has 6 decimals (USDC-like), the feeds 8 (Chainlink USD feeds). The exchange is
an account authorised to call ``settle_trade`` (it stands in for an order book).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offchain import WAD
from offchain.protocol.deploy_config import DeploySpec, MarketSpec, MockFeed, MockToken
from offchain.protocol.deploy_plan import ApeBackend, DeployRecord, execute, plan
from offchain.protocol.deploy_sections import ClassSpec, GroupSpec, ProfilesSpec
from offchain.protocol.margin_math import Guardrails, Tier
from offchain.risk.risk_config import MarketRisk, load_risk_config

USDC = 10**6
FEED_DECIMALS = 8

# The shipped configuration (deploy/risk.yaml) is the devnet's: its BTC market's tier schedule,
# guardrails (the funding bound included), initial ratio and funding reserve are the defaults of
# every devnet market, `shipped(name)` gives any market's, and the shipped scenario groups and
# account classes (devnet scale) are configured (tests/risk/test_risk_config.py fails if they
# drift apart).
SHIPPED = load_risk_config()
DEVNET_TIERS = SHIPPED.market("BTC").tiers
DEVNET_GUARDRAILS = SHIPPED.market("BTC").guardrails
DEVNET_INITIAL_RATIO = SHIPPED.market("BTC").initial_ratio
DEVNET_FUNDING_RESERVE_S = SHIPPED.market("BTC").funding_reserve_seconds


def shipped(name: str) -> MarketRisk:
    """A market of the shipped risk configuration (``BTC``, ``ETH``, ``SOL``)."""
    return SHIPPED.market(name)


@dataclass(frozen=True)
class DevnetMarket:
    """A devnet market: registry id, name, starting price (USD) and engine settings."""

    market_id: int
    name: str
    price: float
    tiers: tuple[Tier, ...] = DEVNET_TIERS
    guardrails: Guardrails = DEVNET_GUARDRAILS
    initial_ratio: int = DEVNET_INITIAL_RATIO
    max_price_age: int = 3600
    price_band: int = 5 * 10**16  # 5%
    liquidation_fee: int = 25 * 10**14  # 0.25% of the closed notional, below the 0.5% tier-0 rate
    liquidator_share: int = WAD // 2
    oi_cap: int = 10**9 * WAD
    funding_reserve_seconds: int = DEVNET_FUNDING_RESERVE_S


def shipped_groups(market_ids: Sequence[int]) -> list[GroupSpec]:
    """The shipped scenario groups (``deploy/risk.yaml``, ``portfolio:``) whose markets are all
    among ``market_ids``, with the shipped bounds, steps, heartbeat and parameters."""
    p = SHIPPED.portfolio
    if p is None:
        return []
    params = p.group_params()
    out = []
    for g in SHIPPED.groups:
        ids = SHIPPED.group_market_ids(g)
        if not set(ids) <= set(market_ids):
            continue
        bounds = p.guardrails(g.markets)
        out.append(
            GroupSpec(
                g.group_id,
                ids,
                bounds.max_shock,
                bounds.max_step,
                bounds.heartbeat,
                params.residual,
                params.floor,
                params.initial_ratio,
            )
        )
    return out


def shipped_profiles(scale: str = "devnet") -> ProfilesSpec | None:
    """The shipped account classes (``deploy/risk.yaml``, ``profiles:``) at a deployment scale."""
    p = SHIPPED.profiles
    if p is None:
        return None
    return ProfilesSpec(
        p.heartbeat,
        p.min_multiplier,
        p.max_multiplier,
        tuple(
            ClassSpec(c.class_id, c.multiplier, c.min_volume, c.min_equity)
            for c in p.table(scale).classes
        ),
    )


@dataclass
class System:
    """A deployed devnet: ape contract instances and the accounts that run it."""

    owner: Any
    token: Any
    registry: Any
    engine: Any
    feeds: dict[int, Any]
    markets: list[DevnetMarket]
    exchange: Any
    keepers: list[str] = field(default_factory=list)
    scenarios: Any = None
    profiles: Any = None
    relay: Any = None

    def feed_answer(self, price: float) -> int:
        return round(price * 10**FEED_DECIMALS)

    def set_price(self, market_id: int, price: float, sender: Any | None = None) -> Any:
        """Set a mock feed's answer (stamped with the block time); returns the receipt."""
        return self.feeds[market_id].set_answer(
            self.feed_answer(price), sender=sender or self.owner
        )

    def fund(self, actor: Any, amount: int, subaccount: int = 0) -> None:
        """Mint ``amount`` token units to ``actor`` and deposit them into its subaccount."""
        self.token.mint(actor, amount, sender=actor)
        self.token.approve(self.engine, 2**256 - 1, sender=actor)
        self.engine.deposit(subaccount, amount, sender=actor)

    def fund_insurance(self, funder: Any, amount: int) -> None:
        self.token.mint(funder, amount, sender=funder)
        self.token.approve(self.engine, 2**256 - 1, sender=funder)
        self.engine.fund_insurance(amount, sender=funder)

    def trade(
        self,
        market_id: int,
        maker: Any,
        taker: Any,
        size: int,
        price: float,
        maker_sub: int = 0,
        taker_sub: int = 0,
    ) -> Any:
        """Settle a trade through the exchange: the taker buys ``size`` (WAD) when positive."""
        return self.engine.settle_trade(
            market_id,
            maker,
            maker_sub,
            taker,
            taker_sub,
            size,
            int(price * WAD),
            sender=self.exchange,
        )


def _address(actor: Any) -> str:
    return str(getattr(actor, "address", actor))


def devnet_spec(
    markets: Sequence[DevnetMarket],
    keepers: Sequence[str],
    exchange: str,
    guardian: str,
    groups: Sequence[GroupSpec] | None = None,
    profiles: ProfilesSpec | None = None,
) -> DeploySpec:
    """The deployment of a devnet system: a mock token and one mock feed per market; the
    scenario groups (default: the shipped ones whose markets are all listed) and the account
    classes (``profiles``; none when not given)."""
    return DeploySpec(
        collateral=None,
        mock_collateral=MockToken("USD Coin", "USDC", 6),
        guardian=guardian,
        keepers=list(keepers),
        signer_threshold=1,
        allow_single_signer=True,
        exchanges=[exchange],
        markets=[
            MarketSpec(
                market_id=m.market_id,
                name=m.name,
                tiers=list(m.tiers),
                initial_ratio=m.initial_ratio,
                guardrails=m.guardrails,
                feed=None,
                mock_feed=MockFeed(round(m.price * 10**FEED_DECIMALS), FEED_DECIMALS),
                max_price_age=m.max_price_age,
                price_band=m.price_band,
                liquidation_fee=m.liquidation_fee,
                liquidator_share=m.liquidator_share,
                oi_cap=m.oi_cap,
                funding_reserve_seconds=m.funding_reserve_seconds,
            )
            for m in markets
        ],
        scenario_groups=list(
            shipped_groups([m.market_id for m in markets]) if groups is None else groups
        ),
        profiles=profiles,
    )


def system_from_record(
    project: Any, record: DeployRecord, owner: Any, exchange: Any, markets: Sequence[DevnetMarket]
) -> System:
    """ape contract instances of a deployed devnet system."""
    return System(
        owner=owner,
        token=project.MockERC20.at(record.address("token")),
        registry=project.RiskParameterRegistry.at(record.address("registry")),
        engine=project.MarginEngine.at(record.address("engine")),
        scenarios=project.ScenarioRegistry.at(record.address("scenarios")),
        profiles=project.ProfileRegistry.at(record.address("profiles")),
        relay=project.KeeperRelay.at(record.address("relay")),
        feeds={
            m.market_id: project.MockPriceFeed.at(record.address(f"feed:{m.market_id}"))
            for m in markets
        },
        markets=list(markets),
        exchange=exchange,
    )


def deploy_engine(
    project: Any, owner: Any, token: Any, registry: Any, decimals: int | None = None
) -> Any:
    """The margin engine and its three delegatecall parts over an existing registry, which then
    pushes every market change into it (tests that build a system by hand). ``owner`` owns
    both; ``decimals`` are the collateral's (read from ``token`` when not given)."""
    scale = 10 ** (18 - int(token.decimals() if decimals is None else decimals))
    trades = project.EngineTrades.deploy(token, scale, sender=owner)
    liquidations = project.EngineLiquidations.deploy(sender=owner)
    governance = project.EngineGovernance.deploy(registry, sender=owner)
    engine = project.MarginEngine.deploy(
        token, registry, trades, liquidations, governance, sender=owner
    )
    registry.set_engine(engine, sender=owner)
    return engine


def deploy_system(
    owner: Any,
    markets: Sequence[DevnetMarket] = (DevnetMarket(1, "BTC", 60_000.0),),
    keepers: Sequence[str] = (),
    exchange: Any | None = None,
    guardian: Any | None = None,
    project: Any | None = None,
    groups: Sequence[GroupSpec] | None = None,
    profile_scale: str | None = "devnet",
) -> System:
    """Deploy token, one mock feed per market, registry, engine, scenario and profile registries
    and the keeper relay; configure and list every market, its funding reserve, the scenario
    groups (default: the shipped groups of these markets), the account classes of
    ``profile_scale`` (None: none), authorise the keepers and the exchange (default: the
    owner). The steps are those of a reviewed deployment (``offchain/protocol/deploy_plan.py``),
    kept in memory."""
    if project is None:
        from ape import project as ape_project

        project = ape_project
    exchange = exchange or owner
    spec = devnet_spec(
        markets,
        [_address(k) for k in keepers],
        _address(exchange),
        _address(guardian or owner),
        groups,
        shipped_profiles(profile_scale) if profile_scale is not None else None,
    )
    backend = ApeBackend(project, owner, owner.provider.web3)
    record = DeployRecord(spec.config_hash(), backend.chain_id(), backend.deployer)
    execute(plan(spec), backend, record)
    system = system_from_record(project, record, owner, exchange, markets)
    system.keepers = list(keepers)
    return system


__all__ = [
    "DEVNET_FUNDING_RESERVE_S",
    "DEVNET_GUARDRAILS",
    "DEVNET_INITIAL_RATIO",
    "DEVNET_TIERS",
    "FEED_DECIMALS",
    "USDC",
    "DevnetMarket",
    "System",
    "deploy_engine",
    "deploy_system",
    "devnet_spec",
    "shipped",
    "shipped_groups",
    "shipped_profiles",
    "system_from_record",
]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``; just ``pid`` elsewhere)."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [p for child in children.read_text().split() for p in process_tree(int(child))]
        except OSError:
            continue
    return pids


def stop_devnet(provider: Any, timeout: float = 10.0) -> None:
    """Disconnect ape's provider and wait until the node it started has exited.

    The npm ``anvil`` launcher forwards the stop signal to the anvil binary and exits at once,
    so the binary may still be shutting down when ape returns: wait for the whole process tree.
    """
    process = getattr(provider, "process", None)
    pids = process_tree(process.pid) if process is not None else []
    provider.disconnect()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)
