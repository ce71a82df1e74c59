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
from offchain.protocol.margin_math import Guardrails, Tier

USDC = 10**6
FEED_DECIMALS = 8

DEVNET_TIERS = (
    Tier(0, 5 * 10**15),  # 0.5% of notional up to 1M USD
    Tier(1_000_000 * WAD, 10**16),  # 1% from 1M to 10M
    Tier(10_000_000 * WAD, 25 * 10**15),  # 2.5% above 10M
)
DEVNET_GUARDRAILS = Guardrails(
    min_multiplier=WAD,
    max_multiplier=10 * WAD,
    max_increase=WAD // 2,  # +50% per update
    max_decrease=WAD // 10,  # -10% per update
    min_decrease_interval=3600,
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=0,  # an increase applies at once
    max_funding_rate=10**12,
)
DEVNET_INITIAL_RATIO = 2 * WAD


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


@dataclass(frozen=True)
class DevnetGroup:
    """A scenario group: its markets, the bound and step of each market's shocks (basis
    points), the heartbeat and the portfolio parameters (WAD)."""

    group_id: int
    markets: tuple[int, ...]
    max_shocks: tuple[int, ...]
    max_steps: tuple[int, ...]
    heartbeat: int = 7200
    residual: int = 0
    floor: int = WAD // 20
    initial_ratio: int = 2 * WAD

    def as_tuple(self) -> tuple:
        """The contract's ``GroupConfig`` struct."""
        return (
            list(self.markets),
            list(self.max_shocks),
            list(self.max_steps),
            self.heartbeat,
            self.residual,
            self.floor,
            self.initial_ratio,
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
    markets: Sequence[DevnetMarket], keepers: Sequence[str], exchange: str, guardian: str
) -> DeploySpec:
    """The deployment of a devnet system: a mock token and one mock feed per market."""
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
            )
            for m in markets
        ],
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
    groups: Sequence[DevnetGroup] = (),
) -> System:
    """Deploy token, one mock feed per market, registry, engine, scenario and profile registries
    and the keeper relay; configure and list every market and scenario group, authorise the
    keepers and the exchange (default: the owner). The steps are those of a reviewed deployment
    (``offchain/protocol/deploy_plan.py``), kept in memory."""
    if project is None:
        from ape import project as ape_project

        project = ape_project
    exchange = exchange or owner
    spec = devnet_spec(
        markets, [_address(k) for k in keepers], _address(exchange), _address(guardian or owner)
    )
    backend = ApeBackend(project, owner, owner.provider.web3)
    record = DeployRecord(spec.config_hash(), backend.chain_id(), backend.deployer)
    execute(plan(spec), backend, record)
    system = system_from_record(project, record, owner, exchange, markets)
    system.keepers = list(keepers)
    for g in groups:
        system.scenarios.configure_group(g.group_id, g.as_tuple(), sender=owner)
    return system


__all__ = [
    "DEVNET_GUARDRAILS",
    "DEVNET_INITIAL_RATIO",
    "DEVNET_TIERS",
    "FEED_DECIMALS",
    "USDC",
    "DevnetGroup",
    "DevnetMarket",
    "System",
    "deploy_engine",
    "deploy_system",
    "devnet_spec",
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
