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
from offchain.protocol.margin_math import Guardrails, Tier
from offchain.risk.risk_config import MarketRisk, load_risk_config

USDC = 10**6
FEED_DECIMALS = 8

# The shipped configuration (deploy/risk.yaml) is the devnet's: its BTC market's tier schedule,
# guardrails and initial ratio are the defaults of every devnet market, and `shipped(name)` gives
# any market's (tests/risk/test_risk_config.py fails if they drift apart).
SHIPPED = load_risk_config()
DEVNET_TIERS = SHIPPED.market("BTC").tiers
DEVNET_GUARDRAILS = SHIPPED.market("BTC").guardrails
DEVNET_INITIAL_RATIO = SHIPPED.market("BTC").initial_ratio


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


def deploy_system(
    owner: Any,
    markets: Sequence[DevnetMarket] = (DevnetMarket(1, "BTC", 60_000.0),),
    keepers: Sequence[str] = (),
    exchange: Any | None = None,
    guardian: Any | None = None,
    project: Any | None = None,
) -> System:
    """Deploy token, one mock feed per market, registry and engine; configure and list every
    market, authorise the keepers and the exchange (default: the owner)."""
    if project is None:
        from ape import project as ape_project

        project = ape_project
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    registry = project.RiskParameterRegistry.deploy(guardian or owner, sender=owner)
    for keeper in keepers:
        registry.add_keeper(keeper, sender=owner)
    engine = project.MarginEngine.deploy(token, registry, sender=owner)
    feeds: dict[int, Any] = {}
    for m in markets:
        registry.configure_market(
            m.market_id,
            [(t.notional_floor, t.maintenance_rate) for t in m.tiers],
            m.initial_ratio,
            m.guardrails.as_tuple(),
            sender=owner,
        )
        feed = project.MockPriceFeed.deploy(
            FEED_DECIMALS, round(m.price * 10**FEED_DECIMALS), sender=owner
        )
        feeds[m.market_id] = feed
        engine.add_market(
            m.market_id,
            (
                feed.address,
                m.max_price_age,
                m.price_band,
                m.liquidation_fee,
                m.liquidator_share,
                m.oi_cap,
            ),
            sender=owner,
        )
    exchange = exchange or owner
    engine.set_exchange(exchange, True, sender=owner)
    return System(
        owner=owner,
        token=token,
        registry=registry,
        engine=engine,
        feeds=feeds,
        markets=list(markets),
        exchange=exchange,
        keepers=list(keepers),
    )


__all__ = [
    "DEVNET_GUARDRAILS",
    "DEVNET_INITIAL_RATIO",
    "DEVNET_TIERS",
    "FEED_DECIMALS",
    "USDC",
    "DevnetMarket",
    "System",
    "deploy_system",
    "shipped",
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
