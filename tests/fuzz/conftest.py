"""titanoboa harness for the margin engine: deployers compiled once, a fresh system per test.

Hypothesis profiles for ``pytest -p no:ape_test tests/fuzz`` (tests/conftest.py's profiles
load only under ape): ``ci`` (default, 30 examples x 30 steps) and ``deep`` (300 x 100), chosen
by the ``HYPOTHESIS_PROFILE`` environment variable (``HYPOTHESIS_MAX_EXAMPLES`` overrides the
number of examples of either).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import boa
import pytest
from eth_account import Account
from hypothesis import HealthCheck, settings

from offchain.protocol.signing import RiskUpdate, sign_batch
from tests.conftest import DEFAULT_GUARDRAILS, DEFAULT_TIERS

WAD = 10**18
MARKET_BTC = 1
MARKET_ETH = 2
CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "30")),
    stateful_step_count=30,
    deadline=None,
    # On CI (CI=true) the same examples every run, so a red build is always a change that
    # can be reproduced; locally and in `make fuzz` hypothesis explores afresh.
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "300")),
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# The engine's stateful machine: (examples, steps per example). Hypothesis ends some examples
# early (two deep runs of 110 examples took 10,168 and 9,172 steps), so "deep" asks for 130 to
# stay above 10,000 steps in all; "ci" is about a minute of them.
ENGINE_RUNS = {"ci": (6, 30), "deep": (130, 100)}[os.environ.get("HYPOTHESIS_PROFILE", "ci")]
if "ENGINE_FUZZ_EXAMPLES" in os.environ:
    ENGINE_RUNS = (int(os.environ["ENGINE_FUZZ_EXAMPLES"]), ENGINE_RUNS[1])


def pytest_terminal_summary(terminalreporter):
    """How many steps the engine machine ran and every outcome its operations reached."""
    harness = sys.modules.get("tests.fuzz.engine_harness")
    if harness is None or not harness.STATS:
        return
    stats = harness.STATS
    steps = stats["checks"] - stats["examples"]
    terminalreporter.write_sep("-", "engine fuzz")
    terminalreporter.write_line(f"{steps} steps in {stats['examples']} examples")
    for name, count in sorted(stats.items()):
        if name not in ("checks", "examples"):
            terminalreporter.write_line(f"{count:8d}  {name}")


TIERS = list(DEFAULT_TIERS)  # the contract suites' own schedule, not the devnet's
GUARDRAILS = DEFAULT_GUARDRAILS
KEEPER = Account.from_key(bytes([1]) * 32)
PRICES = {MARKET_BTC: 60_000, MARKET_ETH: 3_000}  # USD, feeds have 8 decimals
FEED_DECIMALS = 8
MAX_PRICE_AGE = 3600
PRICE_BAND = 5 * 10**16  # 5%
LIQUIDATION_FEE = 25 * 10**14  # 0.25% of closed notional
LIQUIDATOR_SHARE = WAD // 2
OI_CAP = 10**12 * WAD


@cache
def deployer(name: str):
    """Compile a contract once per session (path relative to contracts/)."""
    return boa.load_partial(str(CONTRACTS / name))


@dataclass
class System:
    owner: str
    exchange: str
    registry: object
    token: object
    engine: object
    feeds: dict
    scale: int = 10**12

    def set_price(self, market_id: int, usd_wad: int) -> None:
        """Set a feed's answer from a WAD price (truncated to the feed's 8 decimals)."""
        self.feeds[market_id].set_answer(usd_wad // 10**10)

    def fund(self, who: str, amount: int, sub: int = 0) -> None:
        """Mint ``amount`` token units to ``who`` and deposit them into ``sub``."""
        self.token.mint(who, amount)
        with boa.env.prank(who):
            self.token.approve(self.engine.address, 2**256 - 1)
            self.engine.deposit(sub, amount)

    def trade(self, market_id, maker, maker_sub, taker, taker_sub, size, price):
        with boa.env.prank(self.exchange):
            self.engine.settle_trade(market_id, maker, maker_sub, taker, taker_sub, size, price)

    def update_risk(self, market_id: int, multiplier: int, funding_rate: int) -> None:
        """Sign and relay a keeper update under boa's chain id."""
        now = boa.env.evm.patch.timestamp
        update = RiskUpdate(market_id, multiplier, funding_rate, now - 1, now + 3600, b"\x11" * 32)
        signature = sign_batch(
            [update], KEEPER.key, boa.env.evm.patch.chain_id, self.registry.address
        )
        self.registry.submit_updates([update.as_tuple()], [signature])


def market_config(feed, **overrides) -> tuple:
    cfg = {
        "feed": feed.address,
        "max_price_age": MAX_PRICE_AGE,
        "price_band": PRICE_BAND,
        "liquidation_fee": LIQUIDATION_FEE,
        "liquidator_share": LIQUIDATOR_SHARE,
        "oi_cap": OI_CAP,
    }
    cfg.update(overrides)
    return tuple(cfg.values())


def deploy_engine(token, registry):
    """The margin engine and its three delegate parts; the registry pushes into it. Call as the
    registry's owner (who then owns the engine)."""
    trades = deployer("EngineTrades.vy").deploy(token.address, 10 ** (18 - token.decimals()))
    liquidations = deployer("EngineLiquidations.vy").deploy()
    governance = deployer("EngineGovernance.vy").deploy(registry.address)
    engine = deployer("MarginEngine.vy").deploy(
        token.address, registry.address, trades.address, liquidations.address, governance.address
    )
    registry.set_engine(engine.address)
    return engine


def deploy_system(token_name: str = "mocks/MockERC20.vy") -> System:
    owner = boa.env.generate_address("owner")
    exchange = boa.env.generate_address("exchange")
    guardian = boa.env.generate_address("guardian")
    with boa.env.prank(owner):
        registry = deployer("RiskParameterRegistry.vy").deploy(guardian)
        registry.add_keeper(KEEPER.address)
        for market_id in PRICES:
            registry.configure_market(
                market_id,
                [(t.notional_floor, t.maintenance_rate) for t in TIERS],
                2 * WAD,
                GUARDRAILS.as_tuple(),
            )
        if token_name == "mocks/MockERC20.vy":
            token = deployer(token_name).deploy("USD Coin", "USDC", 6)
        else:
            token = deployer(token_name).deploy(6)
        feeds = {
            m: deployer("mocks/MockPriceFeed.vy").deploy(FEED_DECIMALS, p * 10**FEED_DECIMALS)
            for m, p in PRICES.items()
        }
        engine = deploy_engine(token, registry)
        for market_id, feed in feeds.items():
            engine.add_market(market_id, market_config(feed))
        engine.set_exchange(exchange, True)
    return System(owner, exchange, registry, token, engine, feeds)


@pytest.fixture
def system():
    with boa.env.anchor():
        yield deploy_system()
