"""The engine fuzz's world: one deployment per session, driven in lockstep with the model.

Ten markets: BTC (8-decimal feed, the devnet's guardrails), ETH (18-decimal feed, a 30-minute
increase ramp) and eight small markets on 6-decimal feeds (enough to reach the 8-position
limit with them alone). Actors: four traders (the first a whale who can trade above the 1M
tier), a liquidator with deep pockets in two subaccounts, and a funder who tops up the
insurance fund and calls backstops. The setup leaves a leveraged book in BTC and ETH, both
sides of each, so price moves have something to liquidate. :meth:`World.expect` runs one
operation on the model and on the chain and holds the chain to the model's outcome: the same
revert reason, or success and the model's result.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import boa

from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_TIERS
from offchain.protocol import engine_math as em
from offchain.protocol.margin_math import Tier
from offchain.protocol.signing import RiskUpdate, sign_batch
from tests.fuzz.conftest import KEEPER, WAD, deploy_engine, deployer
from tests.fuzz.engine_model import EngineModel, Feed, Key, Market, Revert

USDC = 10**6
SCALE = 10**12  # token units (6 decimals) to WAD
MODEL_HASH = b"\x33" * 32
BTC, ETH = 1, 2
MAIN = (BTC, ETH)
MINOR = tuple(range(3, 11))
ALL = MAIN + MINOR
UNLISTED = 42
RAMP_GUARDRAILS = dataclasses.replace(DEVNET_GUARDRAILS, increase_ramp=1800)
LOW_TIERS = (Tier(0, 2 * 10**15), Tier(1_000_000 * WAD, 4 * 10**15), Tier(10**7 * WAD, 10**16))
TIER_SCHEDULES = {"devnet": tuple(DEVNET_TIERS), "low": LOW_TIERS}


@dataclasses.dataclass(frozen=True)
class Spec:
    price: int  # USD
    decimals: int
    guardrails: Any
    oi_cap: int  # USD


SPECS = {
    BTC: Spec(60_000, 8, DEVNET_GUARDRAILS, 40_000_000),
    ETH: Spec(3_000, 18, RAMP_GUARDRAILS, 10_000_000),
    **{m: Spec(10, 6, DEVNET_GUARDRAILS, 1_000_000) for m in MINOR},
}
MAX_PRICE_AGE = 3600
PRICE_BAND = 5 * 10**16
LIQUIDATION_FEE = 25 * 10**14
LIQUIDATOR_SHARE = WAD // 2
INITIAL_RATIO = 2 * WAD

# Outcomes of every operation over the session (pytest prints them at the end).
STATS: Counter[str] = Counter()


def answer_of(m: int, usd_wad: int) -> int:
    """A feed answer in the market's decimals from a WAD price (truncated)."""
    return usd_wad // 10 ** (18 - SPECS[m].decimals)


def now() -> int:
    return boa.env.evm.patch.timestamp


def key_of(entry) -> Key:
    return (str(entry[0]), int(entry[1]))


@dataclasses.dataclass
class Outcome:
    """What an operation did: the revert reason, or the model's and the chain's results and
    the engine's events."""

    reason: str | None
    expected: Any = None
    out: Any = None
    logs: list = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return self.reason is None

    def event(self, name: str):
        found = [log for log in self.logs if type(log).__name__ == name]
        assert len(found) == 1, (name, self.logs)
        return found[0]


class World:
    """The contracts, the actors and a model in step with them."""

    def __init__(self) -> None:
        self.owner = boa.env.generate_address("engine_owner")
        self.guardian = boa.env.generate_address("registry_guardian")
        self.exchange = boa.env.generate_address("exchange")
        self.traders = [str(boa.env.generate_address(f"trader{i}")) for i in range(4)]
        self.liquidator = str(boa.env.generate_address("liquidator"))
        self.funder = str(boa.env.generate_address("funder"))
        with boa.env.prank(self.owner):
            self.registry = deployer("RiskParameterRegistry.vy").deploy(self.guardian)
            self.registry.add_keeper(KEEPER.address)
            for m, spec in SPECS.items():
                self.registry.configure_market(
                    m,
                    [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS],
                    INITIAL_RATIO,
                    spec.guardrails.as_tuple(),
                )
            self.token = deployer("mocks/MockERC20.vy").deploy("USD Coin", "USDC", 6)
            self.feeds = {
                m: deployer("mocks/MockPriceFeed.vy").deploy(s.decimals, s.price * 10**s.decimals)
                for m, s in SPECS.items()
            }
            self.engine = deploy_engine(self.token, self.registry)
            for m in SPECS:
                self.engine.add_market(m, self.config(m))
            self.engine.set_exchange(self.exchange, True)
        self.model = EngineModel(self.engine.address, SCALE)
        self.model.now = now()
        for m, spec in SPECS.items():
            answer = spec.price * 10**spec.decimals
            self.model.markets[m] = Market(
                tiers=tuple(DEVNET_TIERS),
                guardrails=spec.guardrails,
                initial_ratio=INITIAL_RATIO,
                feed=Feed(spec.decimals, answer, now()),
                max_price_age=MAX_PRICE_AGE,
                price_band=PRICE_BAND,
                liquidation_fee=LIQUIDATION_FEE,
                liquidator_share=LIQUIDATOR_SHARE,
                oi_cap=spec.oi_cap * WAD,
                touch=now(),
                price=spec.price * WAD,
                price_time=now(),
            )
        self.attach()
        for who in [*self.traders, self.liquidator, self.funder]:
            self.token.mint(who, 10**9 * USDC)
            with boa.env.prank(who):
                self.token.approve(self.engine.address, 2**256 - 1)

    def attach(self) -> None:
        """Read the engine's order of an account's markets from the chain."""
        self.model.order = lambda key: [int(x) for x in self.engine.markets_of(*key)]

    def config(self, m: int) -> tuple:
        s = SPECS[m]
        return (
            self.feeds[m].address,
            MAX_PRICE_AGE,
            PRICE_BAND,
            LIQUIDATION_FEE,
            LIQUIDATOR_SHARE,
            s.oi_cap * WAD,
        )

    # ------------------------------------------------------------------ lockstep calls

    def expect(self, name: str, run_model: Callable[[], Any], fn, *args, sender=None):
        """Run the operation on the model, then on the chain: the chain must revert with the
        model's reason, or succeed (then the outcome holds both results)."""
        self.model.now = now()
        try:
            expected = run_model()
        except Revert as r:
            STATS[f"{name}: {r.reason}"] += 1
            with boa.reverts(r.reason), boa.env.prank(sender or self.owner):
                fn(*args)
            return Outcome(r.reason)
        STATS[f"{name}: ok"] += 1
        with boa.env.prank(sender or self.owner):
            out = fn(*args)
        return Outcome(None, expected, out, self.engine.get_logs())

    def deposit(self, key: Key, amount: int):
        return self.expect(
            "deposit",
            lambda: self.model.deposit(key, amount),
            self.engine.deposit,
            key[1],
            amount,
            sender=key[0],
        )

    def fund_insurance(self, amount: int):
        return self.expect(
            "fund_insurance",
            lambda: self.model.fund_insurance(amount),
            self.engine.fund_insurance,
            amount,
            sender=self.funder,
        )

    def repay_bad_debt(self, caller: str):
        o = self.expect(
            "repay_bad_debt",
            self.model.repay_bad_debt,
            self.engine.repay_bad_debt,
            sender=caller,
        )
        assert o.expected == o.out, "repaid differs from the model"
        return o

    def trade(self, m: int, maker: Key, taker: Key, size: int, price: int, name="trade"):
        return self.expect(
            name,
            lambda: self.model.settle_trade(m, maker, taker, size, price),
            self.engine.settle_trade,
            m,
            maker[0],
            maker[1],
            taker[0],
            taker[1],
            size,
            price,
            sender=self.exchange,
        )

    def keeper_update(self, m: int, multiplier: int, rate: int, observed: int, deadline: int):
        update = RiskUpdate(m, multiplier, rate, observed, deadline, MODEL_HASH)
        signature = sign_batch(
            [update], KEEPER.key, boa.env.evm.patch.chain_id, self.registry.address
        )
        return self.expect(
            "keeper_update",
            lambda: self.model.keeper_update(update),
            self.registry.submit_updates,
            [update.as_tuple()],
            [signature],
            sender=self.funder,
        )

    # ----------------------------------------------------------------------- feeds

    def set_answer(self, m: int, answer: int, at: int | None = None) -> None:
        feed, model_feed = self.feeds[m], self.model.markets[m].feed
        if at is None:
            feed.set_answer(answer)
            at = now()
        else:
            feed.set_round(answer, at)
        model_feed.answer, model_feed.updated_at = answer, at

    def set_reverting(self, m: int, reverting: bool) -> None:
        self.feeds[m].set_reverting(reverting)
        self.model.markets[m].feed.reverting = reverting

    def reference_answer(self, m: int) -> int:
        """The feed's answer if it has a usable one, else the stored price's."""
        mk = self.model.markets[m]
        if mk.feed.answer > 0:
            return mk.feed.answer
        return max(answer_of(m, mk.price), 1)

    # ------------------------------------------------------------------ the setup book

    def setup_book(self) -> None:
        """First keeper updates (2x, no funding), deposits, insurance, a leveraged book."""
        boa.env.time_travel(seconds=1)
        t = now()
        updates = [RiskUpdate(m, 2 * WAD, 0, t - 1, t + 60, MODEL_HASH) for m in ALL]
        signature = sign_batch(
            updates, KEEPER.key, boa.env.evm.patch.chain_id, self.registry.address
        )
        self.model.now = t
        for u in updates:
            self.model.keeper_update(u)
        self.registry.submit_updates([u.as_tuple() for u in updates], [signature])
        with boa.env.prank(self.owner):
            self.engine.set_backstop_reward(5 * WAD)
            self.engine.set_funding_reserve(BTC, 3600)
        self.model.set_backstop_reward(5 * WAD)
        self.model.set_funding_reserve(BTC, 3600)
        t0, t1, t2, t3 = self.traders
        assert self.deposit((t0, 0), 5_000_000 * USDC)
        for who in (t1, t2, t3):
            for sub in (0, 1):
                assert self.deposit((who, sub), 25_000 * USDC)
        for sub in (0, 1):
            assert self.deposit((self.liquidator, sub), 50_000_000 * USDC)
        assert self.fund_insurance(20_000 * USDC)
        book = (  # (market, maker, taker, taker's notional in USD): both sides leveraged
            (BTC, (t1, 0), (t0, 0), 600_000),
            (ETH, (t3, 0), (t2, 0), -500_000),
            (BTC, (t0, 0), (t2, 1), -120_000),
            (ETH, (t3, 1), (t1, 1), 300_000),
            (BTC, (self.liquidator, 0), (t3, 0), 300_000),
            (ETH, (t0, 0), (t3, 1), -200_000),
        )
        for m, maker, taker, usd in book:
            size = usd * WAD // SPECS[m].price
            assert self.trade(m, maker, taker, size, SPECS[m].price * WAD)


# ------------------------------------------------------------------------ chain reads


def chain_positions(engine, key: Key) -> dict[int, tuple[int, int, int]]:
    """market -> (size, open notional, funding snapshot) as the engine stores them."""
    out = {}
    for m in engine.markets_of(*key):
        size, notional = engine.position(*key, m)
        out[int(m)] = (size, notional, engine.funding_snapshot(*key, m))
    return out


def chain_equity(key_positions, collateral: int, marks: dict, indices: dict) -> int:
    """An account's equity from what the chain stores, through the reference's formula."""
    positions = {m: em.Position(s, n, snap) for m, (s, n, snap) in key_positions.items()}
    total = collateral
    for m, p in positions.items():
        total += (p.size * marks[m]) // WAD - p.open_notional
        total -= em.signed_ceil_div(p.size * (indices[m] - p.snapshot), WAD)
    return total


_BASE: list[tuple[World, EngineModel]] = []


def base_world() -> World:
    """The session's deployment (built once, outside the per-example anchors) with a fresh
    copy of its model: every example starts from the same state on both sides."""
    if not _BASE:
        world = World()
        world.setup_book()
        _BASE.append((world, copy.deepcopy(world.model)))
    world, template = _BASE[0]
    world.model = copy.deepcopy(template)
    world.attach()
    return world


__all__ = [
    "ALL",
    "BTC",
    "ETH",
    "MAIN",
    "MINOR",
    "STATS",
    "TIER_SCHEDULES",
    "UNLISTED",
    "USDC",
    "Outcome",
    "World",
    "answer_of",
    "base_world",
    "chain_equity",
    "chain_positions",
    "key_of",
    "now",
]
