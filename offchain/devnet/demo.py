"""The demo: a devnet crash with the risk keeper and the liquidation bot at work.

``run_demo`` deploys the whole system on the connected devnet (ape), funds a market maker, the
bot and the insurance fund, opens a book of cross and isolated positions, then replays a price
path into the mock feeds one hourly step at a time. After each step the keeper ticks (reads the
feeds, signs and relays a multiplier update) and then the liquidation bot ticks (scans,
liquidates worst first, backstops the underwater); both run in-process and talk to the node over
JSON-RPC as in production. Everything reported is read back from the chain: the registry's
multiplier, the engine's events, balances and positions.

Markets and book
----------------
BTC uses the devnet tiers (0.5% of notional to 1M USD, 1% to 10M, 2.5% above), ETH riskier ones
(0.75% to 500k, 1.5% to 5M, 3% above); both the devnet guardrails (multiplier in [1, 10], +50% /
-10% per update, 4x when no update for 2 hours). Liquidation penalties are 0.3% (BTC) and 0.5%
(ETH), half to the liquidator. ``DEMO_BOOK`` holds nine trader subaccounts, cross and isolated,
long and short, from 1.25x to 20x, against one market maker. For each account that becomes
liquidatable the demo also says whether a static schedule (multiplier 1) would have let it be.

Scenarios
---------
``seeded_scenario(seed=7)`` (the default) builds each market's path with
``offchain.replay.crash_scenario``, one price per hour:

* BTC from 60,000: 6 calm hours (0.3%/h noise), a 30% fall over 6 hours (-5.8%/h), then an 8%
  rebound over 4 hours;
* ETH from 3,000 (seed + 1): 6 calm hours (0.4%/h), a 38% fall over 6 hours (-7.7%/h), then a
  10% rebound over 4 hours.

The keeper runs the backtested model (``CalibratedRiskModel``: FHS on a dual EWMA filter, 99%
one-hour VaR, stressed floor), one bar per hourly step, and first warms up on 720 quiet hours
(seeded, same noise). ``window_scenario`` replays the hourly closes of a real window instead
(e.g. ``2020-03-11`` to ``2020-03-14`` inclusive), scaled so that the window's first close is the
devnet price (60,000 BTC, 3,000 ETH); the 720 hours before the window warm the keeper up.
ETH replays its own candles when a file is given, otherwise the same relative moves as BTC.

Reconciliation
--------------
The engine moves cash (collateral minus open notional) between subaccounts one to one, except
that a fill of ``s`` at ``p`` charges the buyer ``ceil(s * p)`` and pays the seller
``floor(s * p)`` (1 wei kept when ``s * p`` is not whole), and a backstop forgives the debt the
insurance fund cannot cover (bad debt). With no funding (the demo's keeper sets none), to the wei::

    token balance = sum(collateral) + insurance fund - sum(open notional) - bad debt + rounding

where ``rounding`` counts the fills (trades, liquidations, backstop transfers) whose
``s * p`` is not whole. ``reconcile`` checks it from balances, positions and events.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from offchain import WAD
from offchain.chain import (
    EngineClient,
    FeedClient,
    Health,
    RegistryClient,
    Subaccount,
    connect,
    latest_block,
)
from offchain.devnet import (
    DEVNET_TIERS,
    FEED_DECIMALS,
    USDC,
    DevnetMarket,
    System,
    deploy_system,
)
from offchain.keeper import Keeper, KeeperConfig, KeeperMarket
from offchain.keeper_models import CalibratedRiskModel
from offchain.liquidator import Liquidator, LiquidatorConfig, scan
from offchain.margin_math import Tier, maintenance_margin
from offchain.metrics import BotMetrics
from offchain.prices import HOUR, load_candles
from offchain.replay import CrashScenario, crash_scenario, replay, to_answer
from offchain.tx_sender import SenderConfig, SentTx, TxSender

log = logging.getLogger("dmm.demo")

MARKET_BTC = 1
MARKET_ETH = 2
BTC_PRICE = 60_000.0
ETH_PRICE = 3_000.0
TOKEN_SCALE = 10**12  # 6-decimal token units to WAD
DEFAULT_SEED = 7
# The keeper's calibrated model needs about 100 hourly bars; a month gives its stressed floor
# something to measure as well.
WARM_UP_HOURS = 720
WINDOW_WARM_UP_HOURS = 720
# ETH is riskier: higher marginal rates and a lower first bracket than BTC's devnet schedule.
ETH_TIERS = (
    Tier(0, 75 * 10**14),  # 0.75% up to 500k USD
    Tier(500_000 * WAD, 15 * 10**15),  # 1.5% from 500k to 5M
    Tier(5_000_000 * WAD, 3 * 10**16),  # 3% above 5M
)
# Fast polling: anvil mines each transaction at once.
DEMO_SENDER = SenderConfig(
    poll_interval=0.02, backoff_initial=0.05, backoff_max=0.4, rpc_retries=4, receipt_timeout=30
)
# Liquidation penalties below the lowest maintenance rate, so that a partial liquidation can
# restore an account's health instead of costing more than the margin it frees.
LIQUIDATION_FEES = {MARKET_BTC: 3 * 10**15, MARKET_ETH: 5 * 10**15}  # 0.3%, 0.5%
TRADER_NAMES = ("alice", "bob", "carol")
DEMO_KEEPER_KEY = keccak(text="dynamic-margin demo keeper")  # a devnet-only key


# ---------------------------------------------------------------------------------------------
# Scenario


@dataclass(frozen=True)
class MarketPath:
    """One market's prices: the devnet price when the book opens, one price per step after it,
    and the hourly history (oldest first, ending an hour before the start) the keeper starts
    from."""

    market_id: int
    name: str
    start: float
    prices: tuple[float, ...]
    warm_up: tuple[float, ...]

    def __post_init__(self) -> None:
        values = (self.start, *self.prices, *self.warm_up)
        if not self.prices:
            raise ValueError(f"{self.name}: the path needs at least one step")
        if any(not math.isfinite(p) or p <= 0 for p in values):
            raise ValueError(f"{self.name}: prices must be finite and positive")


@dataclass(frozen=True)
class Scenario:
    """Price paths of every market, replayed one step each ``step_seconds``. ``times`` holds the
    real UTC time of the start and of each step when the paths come from a real window."""

    title: str
    paths: tuple[MarketPath, ...]
    step_seconds: int = HOUR
    times: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        lengths = {len(p.prices) for p in self.paths}
        if len(lengths) != 1:
            raise ValueError("every market needs the same number of steps")
        if self.times is not None and len(self.times) != self.steps + 1:
            raise ValueError("times needs one entry for the start and one per step")
        if self.step_seconds <= 0:
            raise ValueError("step_seconds must be positive")

    @property
    def steps(self) -> int:
        return len(self.paths[0].prices)

    def path(self, market_id: int) -> MarketPath:
        return next(p for p in self.paths if p.market_id == market_id)


def quiet_history(end_price: float, hours: int, vol: float, seed: int) -> tuple[float, ...]:
    """``hours`` hourly prices of a seeded random walk (``vol`` per hour) that ends next to
    ``end_price`` (the walk is generated backwards from it), oldest first."""
    rng = np.random.default_rng(seed)
    steps = np.exp(rng.normal(0.0, vol, hours))
    backwards = end_price * np.cumprod(steps)
    return tuple(float(p) for p in backwards[::-1])


def seeded_scenario(
    seed: int = DEFAULT_SEED, calm_steps: int = 6, crash_steps: int = 6, rebound_steps: int = 4
) -> Scenario:
    """The default crash (see the module docstring); shorter shapes for tests."""
    btc = CrashScenario(
        start_price=BTC_PRICE,
        calm_steps=calm_steps,
        calm_vol=0.003,
        crash_pct=0.30,
        crash_steps=crash_steps,
        rebound_pct=0.08,
        rebound_steps=rebound_steps,
        seed=seed,
    )
    eth = CrashScenario(
        start_price=ETH_PRICE,
        calm_steps=calm_steps,
        calm_vol=0.004,
        crash_pct=0.38,
        crash_steps=crash_steps,
        rebound_pct=0.10,
        rebound_steps=rebound_steps,
        seed=seed + 1,
    )
    title = (
        f"seeded crash (seed {seed}): {calm_steps} calm h, then BTC -30% and ETH -38%"
        f" over {crash_steps} h, rebound +8% / +10% over {rebound_steps} h"
    )
    return Scenario(
        title,
        (
            _crash_path(MARKET_BTC, "BTC", btc),
            _crash_path(MARKET_ETH, "ETH", eth),
        ),
    )


def _crash_path(market_id: int, name: str, s: CrashScenario) -> MarketPath:
    warm = quiet_history(s.start_price, WARM_UP_HOURS, s.calm_vol, s.seed + 1000)
    return MarketPath(market_id, name, s.start_price, tuple(crash_scenario(s)), warm)


@dataclass(frozen=True)
class Window:
    """Hourly closes of a real window (``times[0]`` is the start) and the hours before it."""

    times: tuple[int, ...]
    closes: tuple[float, ...]
    before: tuple[float, ...]


def read_window(path: str | Path, start: int, end: int, warm_up: int) -> Window:
    """The hourly closes of ``path`` taken at ``start <= t <= end`` (a candle's close is taken
    at the end of its hour) and the ``warm_up`` closes before. Each close is one replay step:
    hours missing from the file are not filled in."""
    candles, _ = load_candles(path)
    t = candles.timestamps + HOUR
    inside = np.flatnonzero((t >= start) & (t <= end))
    if len(inside) < 2:
        raise ValueError(
            f"{path}: fewer than 2 hourly closes from {_utc(start)} to {_utc(end)} UTC"
            f" (the file covers {_utc(int(t[0]))} to {_utc(int(t[-1]))})"
        )
    first = int(inside[0])
    closes = candles.close
    return Window(
        tuple(int(x) for x in t[inside]),
        tuple(float(x) for x in closes[inside]),
        tuple(float(x) for x in closes[max(0, first - warm_up) : first]),
    )


def scaled_path(market_id: int, name: str, start: float, window: Window) -> MarketPath:
    """``window`` scaled so that its first close is ``start``."""
    k = start / window.closes[0]
    return MarketPath(
        market_id,
        name,
        start,
        tuple(p * k for p in window.closes[1:]),
        tuple(p * k for p in window.before),
    )


def window_scenario(
    btc_csv: str | Path, start: int, end: int, eth_csv: str | Path | None = None
) -> Scenario:
    """A real window replayed into the devnet feeds (see the module docstring)."""
    btc = read_window(btc_csv, start, end, WINDOW_WARM_UP_HOURS)
    eth = btc if eth_csv is None else read_window(eth_csv, start, end, WINDOW_WARM_UP_HOURS)
    if eth.times != btc.times:
        common = sorted(set(btc.times) & set(eth.times))
        raise ValueError(
            f"the BTC and ETH files need the same hours in the window"
            f" ({len(btc.times)} and {len(eth.times)} closes, {len(common)} in common)"
        )
    first, last = (datetime.fromtimestamp(x, UTC) for x in (btc.times[0], btc.times[-1]))
    low = min(btc.closes) / btc.closes[0] - 1
    title = (
        f"{Path(btc_csv).name} {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC,"
        f" scaled to {BTC_PRICE:,.0f} (BTC low {low:+.1%})"
        + ("" if eth_csv else "; ETH follows BTC's moves")
    )
    return Scenario(
        title,
        (
            scaled_path(MARKET_BTC, "BTC", BTC_PRICE, btc),
            scaled_path(MARKET_ETH, "ETH", ETH_PRICE, eth),
        ),
        times=btc.times,
    )


# ---------------------------------------------------------------------------------------------
# The book


@dataclass(frozen=True)
class Holding:
    """A position opened at the start: ``leverage`` times the subaccount's collateral in
    notional, long when positive."""

    market_id: int
    leverage: float


@dataclass(frozen=True)
class BookAccount:
    """A trader subaccount of the book: collateral (token units), isolation, positions."""

    trader: int
    subaccount: int
    collateral: int
    holdings: tuple[Holding, ...]
    isolated: int = 0

    @property
    def label(self) -> str:
        return f"{TRADER_NAMES[self.trader]}/{self.subaccount}"


# From comfortable to reckless, sized against the default crash: the hedged and short accounts
# ride it out; the 3x-6x longs become liquidatable as the multiplier climbs (partially or fully
# closed, several at the bottom only because margin rose); the 20x ETH long gaps far below zero
# on the first crash hour and is backstopped beyond what the insurance fund holds.
DEMO_BOOK = (
    BookAccount(0, 0, 20_000 * USDC, (Holding(MARKET_BTC, 2.0), Holding(MARKET_ETH, -1.0))),
    BookAccount(0, 1, 10_000 * USDC, (Holding(MARKET_ETH, -4.0),), isolated=MARKET_ETH),
    BookAccount(0, 2, 10_000 * USDC, (Holding(MARKET_BTC, 3.2),), isolated=MARKET_BTC),
    BookAccount(1, 0, 10_000 * USDC, (Holding(MARKET_BTC, 1.25), Holding(MARKET_ETH, 1.5))),
    BookAccount(1, 1, 10_000 * USDC, (Holding(MARKET_BTC, 5.8),), isolated=MARKET_BTC),
    BookAccount(1, 2, 10_000 * USDC, (Holding(MARKET_BTC, 8.2),), isolated=MARKET_BTC),
    BookAccount(2, 0, 10_000 * USDC, (Holding(MARKET_BTC, 2.5), Holding(MARKET_ETH, 1.5))),
    BookAccount(2, 1, 10_000 * USDC, (Holding(MARKET_ETH, 4.1),), isolated=MARKET_ETH),
    BookAccount(2, 2, 4_000 * USDC, (Holding(MARKET_ETH, 20.0),), isolated=MARKET_ETH),
)


def describe(account: BookAccount, names: Mapping[int, str]) -> str:
    """``BTC 2x long + ETH 1x short``."""
    return " + ".join(
        f"{names[h.market_id]} {abs(h.leverage):g}x {'long' if h.leverage > 0 else 'short'}"
        for h in account.holdings
    )


def position_size(collateral: int, leverage: float, price: float) -> int:
    """Signed size (WAD base units) of ``leverage`` x ``collateral`` (token units) at ``price``."""
    return int(collateral / USDC * leverage / price * WAD)


# ---------------------------------------------------------------------------------------------
# Actors and settings


@dataclass(frozen=True)
class DemoActors:
    """Who does what: ape accounts deploy, trade and fund; the bots sign with local keys."""

    owner: Any
    exchange: Any
    maker: Any
    traders: tuple[Any, ...]
    liquidator: Any  # an ape account: funds the bot's subaccount; the bot signs with its key
    keeper: LocalAccount

    def __post_init__(self) -> None:
        if len(self.traders) < len(TRADER_NAMES):
            raise ValueError(f"the book needs {len(TRADER_NAMES)} traders")


def demo_actors(test_accounts: Sequence[Any], keeper: LocalAccount | None = None) -> DemoActors:
    """The devnet's test accounts in their roles (owner, exchange, maker, 3 traders, bot)."""
    return DemoActors(
        owner=test_accounts[0],
        exchange=test_accounts[1],
        maker=test_accounts[2],
        traders=tuple(test_accounts[3:6]),
        liquidator=test_accounts[6],
        keeper=keeper or Account.from_key(DEMO_KEEPER_KEY),
    )


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo and where the chart goes."""

    chart: Path | None = Path("out/demo.png")
    book: tuple[BookAccount, ...] = DEMO_BOOK
    insurance: int = 2_000 * USDC
    maker_collateral: int = 5_000_000 * USDC
    bot_collateral: int = 1_000_000 * USDC
    bot_subaccount: int = 1
    reference_notional: int = 2_000_000 * WAD  # USD; crosses the first tier of both markets


def market_tiers(market_id: int) -> tuple[Tier, ...]:
    return ETH_TIERS if market_id == MARKET_ETH else DEVNET_TIERS


# ---------------------------------------------------------------------------------------------
# What happened


@dataclass(frozen=True)
class Fill:
    """A transfer of ``size`` base units at ``price`` (both WAD) between two subaccounts."""

    size: int
    price: int

    @property
    def rounding(self) -> int:
        """Wei the engine keeps: ``ceil(|s| p) - floor(|s| p)``."""
        return 1 if abs(self.size) * self.price % WAD else 0


@dataclass(frozen=True)
class LiquidationEvent:
    step: int
    block: int
    account: Subaccount
    liquidator: Subaccount
    market_id: int
    size: int  # the liquidated account's change (negative when a long was closed)
    price: int
    penalty: int
    reward: int


@dataclass(frozen=True)
class BackstopEvent:
    step: int
    block: int
    account: Subaccount
    equity: int
    covered: int
    bad_debt: int
    moves: tuple[tuple[int, Fill], ...]  # (market, transfer to the insurance fund)


@dataclass(frozen=True)
class StepRecord:
    """The chain after one step: prices, multipliers in force and the books."""

    step: int
    block: int
    prices: dict[int, float]
    multipliers: dict[int, int]
    insurance_fund: int
    bad_debt: int
    liquidatable: int  # subaccounts the bot found liquidatable
    left_unhealthy: int  # still liquidatable after the bot's tick


@dataclass(frozen=True)
class Reconciliation:
    """The engine's books against its token balance (USD WAD, see the module docstring)."""

    token_balance: int
    collateral: int  # every subaccount but the insurance fund
    insurance_fund: int  # the insurance subaccount's collateral
    open_notional: int
    bad_debt: int
    rounding: int
    fills: int
    subaccounts: int

    @property
    def expected(self) -> int:
        return (
            self.collateral
            + self.insurance_fund
            - self.open_notional
            - self.bad_debt
            + self.rounding
        )

    @property
    def difference(self) -> int:
        return self.token_balance - self.expected

    @property
    def holds(self) -> bool:
        return self.difference == 0


@dataclass
class DemoResult:
    """Everything the summary and the chart need."""

    scenario: Scenario
    config: DemoConfig
    labels: dict[Subaccount, str]
    descriptions: dict[Subaccount, str]
    records: list[StepRecord]
    liquidations: list[LiquidationEvent]
    backstops: list[BackstopEvent]
    first_liquidatable: dict[Subaccount, int]
    caught_by_multiplier: dict[Subaccount, int]  # liquidatable, but not at multiplier 1
    final_health: dict[Subaccount, Health]
    keeper_txs: list[SentTx]
    bot_txs: list[SentTx]
    reconciliation: Reconciliation
    initial_insurance: int
    blocks: tuple[int, int]
    seconds: float = 0.0
    chart: Path | None = None

    @property
    def handled(self) -> set[Subaccount]:
        """Subaccounts the bot liquidated or backstopped."""
        return {e.account for e in self.liquidations} | {e.account for e in self.backstops}

    @property
    def unhandled(self) -> set[Subaccount]:
        """Subaccounts that became liquidatable and were never dealt with (should be none)."""
        return set(self.first_liquidatable) - self.handled


# ---------------------------------------------------------------------------------------------
# Pure helpers of the summary


def multipliers(result: DemoResult, market_id: int) -> list[float]:
    """The multiplier in force at the start and after each step."""
    return [r.multipliers[market_id] / WAD for r in result.records]


def fold_path(values: Sequence[float], limit: int = 14) -> str:
    """``1.00 1.50 2.25x3 ...``: consecutive repeats folded, at most ``limit`` entries."""
    runs: list[tuple[str, int]] = []
    for v in values:
        text = f"{v:.2f}"
        if runs and runs[-1][0] == text:
            runs[-1] = (text, runs[-1][1] + 1)
        else:
            runs.append((text, 1))
    parts = [t if n == 1 else f"{t}x{n}" for t, n in runs]
    if len(parts) > limit:
        parts = [*parts[: limit - 4], "...", *parts[-3:]]
    return " ".join(parts)


def usd(value: int, decimals: int = 2) -> str:
    return f"{value / WAD:,.{decimals}f}"


def reconcile(
    token_balance: int,
    collateral: Mapping[Subaccount, int],
    insurance: Subaccount,
    open_notional: int,
    bad_debt: int,
    fills: Iterable[Fill],
) -> Reconciliation:
    """Put the books next to the token balance (all USD WAD)."""
    fills = list(fills)
    return Reconciliation(
        token_balance=token_balance,
        collateral=sum(v for a, v in collateral.items() if a != insurance),
        insurance_fund=collateral.get(insurance, 0),
        open_notional=open_notional,
        bad_debt=bad_debt,
        rounding=sum(f.rounding for f in fills),
        fills=len(fills),
        subaccounts=sum(1 for a in collateral if a != insurance),
    )


def step_time(result: DemoResult, step: int) -> str:
    """``2020-03-12 14:00`` for a real window, ``h+7`` otherwise."""
    times = result.scenario.times
    if times is None:
        return f"h+{step}"
    return datetime.fromtimestamp(times[step], UTC).strftime("%Y-%m-%d %H:%M")


def format_summary(result: DemoResult) -> str:
    """The closing table."""
    lines = [
        f"Dynamic Margin demo: {result.scenario.title}",
        f"{result.scenario.steps} hourly steps on anvil, blocks {result.blocks[0]}-"
        f"{result.blocks[1]}, {result.seconds:.0f} s",
        "",
        *_multiplier_lines(result),
        "",
        *_margin_lines(result),
        "",
        *_account_lines(result),
        "",
        *_outcome_lines(result),
        "",
        *_reconciliation_lines(result.reconciliation),
    ]
    if result.chart is not None:
        lines += ["", f"chart             {result.chart}"]
    return "\n".join(lines)


def _multiplier_lines(result: DemoResult) -> list[str]:
    lines = [
        f"{'multiplier':<10} {'start':>6} {'peak':>6} {'end':>6}   path (start, then each step)"
    ]
    for path in result.scenario.paths:
        values = multipliers(result, path.market_id)
        peak = max(range(len(values)), key=values.__getitem__)
        lines.append(
            f"{path.name:<10} {values[0]:>6.2f} {values[peak]:>6.2f} {values[-1]:>6.2f}"
            f"   {fold_path(values)}   (peak at {step_time(result, peak)})"
        )
    return lines


def _margin_lines(result: DemoResult) -> list[str]:
    notional = result.config.reference_notional
    lines = [f"maintenance margin in force for a {usd(notional, 0)} USD position"]
    for path in result.scenario.paths:
        tiers = market_tiers(path.market_id)
        values = [
            maintenance_margin(tiers, r.multipliers[path.market_id], notional)
            for r in result.records
        ]
        start, peak, end = (
            f"{usd(v)} ({v / notional:.2%})" for v in (values[0], max(values), values[-1])
        )
        lines.append(f"{path.name:<10} start {start}   peak {peak}   end {end}")
    return lines


def _account_lines(result: DemoResult) -> list[str]:
    width = 16 if result.scenario.times is not None else 12
    header = (
        f"{'account':<8} {'margin':<9} {'positions at the open':<30} {'liquidatable':<{width}}"
        f" {'liquidations':>12} {'backstop':>9} {'equity at end':>14}"
    )
    lines = [header]
    for account, label in result.labels.items():
        if account not in result.descriptions:
            continue
        mode, positions = result.descriptions[account].split(": ", 1)
        first = result.first_liquidatable.get(account)
        n_liq = sum(1 for e in result.liquidations if e.account == account)
        backstop = any(e.account == account for e in result.backstops)
        health = result.final_health[account]
        lines.append(
            f"{label:<8} {mode:<9} {positions:<30}"
            f" {'-' if first is None else step_time(result, first):<{width}}"
            f" {n_liq:>12} {'yes' if backstop else '-':>9} {usd(health.equity):>14}"
        )
    return lines


def _outcome_lines(result: DemoResult) -> list[str]:
    names = {p.market_id: p.name for p in result.scenario.paths}
    closed: dict[int, int] = {}
    for e in result.liquidations:
        closed[e.market_id] = closed.get(e.market_id, 0) + abs(e.size)
    penalties = sum(e.penalty for e in result.liquidations)
    rewards = sum(e.reward for e in result.liquidations)
    covered = sum(e.covered for e in result.backstops)
    end = result.records[-1]
    closed_text = ", ".join(f"{closed[m] / WAD:,.4f} {names[m]}" for m in sorted(closed))
    keeper_gas = sum(t.gas_used for t in result.keeper_txs)
    bot_gas = sum(t.gas_used for t in result.bot_txs)
    keeper_eth = sum(t.cost_wei for t in result.keeper_txs) / 10**18
    bot_eth = sum(t.cost_wei for t in result.bot_txs) / 10**18
    unhandled = len(result.unhandled)
    caught = sorted(result.labels[a] for a in result.caught_by_multiplier)
    return [
        f"liquidations      {len(result.liquidations)}"
        + (f" (closed {closed_text})" if closed_text else "")
        + f", penalties {usd(penalties)} USD: bot {usd(rewards)}, insurance fund"
        f" {usd(penalties - rewards)}",
        f"backstops         {len(result.backstops)}, the insurance fund covered {usd(covered)} USD",
        f"insurance fund    {usd(result.initial_insurance)} + {usd(penalties - rewards)} penalties"
        f" - {usd(covered)} covered = {usd(end.insurance_fund)} USD",
        f"bad debt          {usd(end.bad_debt)} USD",
        f"unhealthy         {len(result.first_liquidatable)} subaccount(s) became liquidatable,"
        f" {len(result.first_liquidatable) - unhandled} liquidated or backstopped,"
        f" {max(r.left_unhealthy for r in result.records)} left unhealthy after a bot tick",
        f"raised margin     {len(caught)} of them only because the multiplier rose (equity still"
        f" above maintenance at multiplier 1)" + (f": {', '.join(caught)}" if caught else ""),
        f"gas, keeper       {len(result.keeper_txs)} signed batches, {keeper_gas:,} gas"
        f" ({keeper_gas // max(len(result.keeper_txs), 1):,} per batch), {keeper_eth:.6f} ETH",
        f"gas, bot          {len(result.bot_txs)} transactions, {bot_gas:,} gas, {bot_eth:.6f} ETH",
    ]


def _reconciliation_lines(r: Reconciliation) -> list[str]:
    verdict = "holds to the wei" if r.holds else "DOES NOT HOLD"
    return [
        "reconciliation (USD)",
        f"  collateral of {r.subaccounts:>2} subaccounts      {usd(r.collateral, 6):>22}",
        f"  + insurance fund                  {usd(r.insurance_fund, 6):>22}",
        f"  - open notional                   {usd(r.open_notional, 6):>22}"
        "   (entry cost of open positions: longs +, shorts -)",
        f"  - bad debt                        {usd(r.bad_debt, 6):>22}",
        f"  + rounding kept by the engine     {r.rounding:>18} wei"
        f"   (1 wei on {r.rounding} of {r.fills} fills)",
        f"  = owed to accounts                {usd(r.expected, 6):>22}",
        f"  engine token balance              {usd(r.token_balance, 6):>22}",
        f"  difference                        {r.difference:>18} wei   {verdict}",
    ]


# ---------------------------------------------------------------------------------------------
# Chart


def plot_demo(result: DemoResult, path: str | Path) -> Path:
    """Write a PNG: each market's price with liquidation and backstop markers, and the
    multipliers in force."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    x = _chart_x(result)
    paths = result.scenario.paths
    fig, axes = plt.subplots(len(paths) + 1, 1, sharex=True, figsize=(12, 3.2 * (len(paths) + 1)))
    for ax, market in zip(axes, paths, strict=False):
        _plot_market(ax, result, market, x)
    ax_m = axes[-1]
    for market, style in zip(paths, ("-", "--", ":", "-."), strict=False):
        values = multipliers(result, market.market_id)
        ax_m.step(x, values, style, where="post", lw=1.5, label=market.name)
    ax_m.set_ylabel("multiplier in force")
    ax_m.legend(loc="upper left", fontsize=8)
    ax_m.grid(alpha=0.3)
    if result.scenario.times is None:
        ax_m.set_xlabel("hours from the open")
    else:
        fig.autofmt_xdate()
    fig.suptitle(f"Dynamic Margin demo: {result.scenario.title}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chart_x(result: DemoResult) -> list[Any]:
    if result.scenario.times is None:
        return list(range(result.scenario.steps + 1))
    return [datetime.fromtimestamp(t, UTC) for t in result.scenario.times]


def _plot_market(ax: Any, result: DemoResult, market: MarketPath, x: list[Any]) -> None:
    prices = [r.prices[market.market_id] for r in result.records]
    ax.plot(x, prices, color="black", lw=1.2, label=f"{market.name} (devnet feed)")
    liq = [e for e in result.liquidations if e.market_id == market.market_id]
    ax.scatter(
        [x[e.step] for e in liq],
        [e.price / WAD for e in liq],
        marker="v",
        s=60,
        color="tab:orange",
        zorder=3,
        label=f"liquidation ({len(liq)})",
    )
    backstops = [
        (e, fill) for e in result.backstops for m, fill in e.moves if m == market.market_id
    ]
    ax.scatter(
        [x[e.step] for e, _ in backstops],
        [fill.price / WAD for _, fill in backstops],
        marker="X",
        s=80,
        color="tab:red",
        zorder=4,
        label=f"backstop ({len(backstops)})",
    )
    _annotate(ax, [(x[e.step], e.price / WAD, result.labels[e.account]) for e in liq], 4, "black")
    _annotate(
        ax,
        [(x[e.step], f.price / WAD, result.labels[e.account]) for e, f in backstops],
        -11,
        "tab:red",
    )
    ax.set_ylabel(f"{market.name} price (USD)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)


def _annotate(ax: Any, points: list[tuple[Any, float, str]], dy: int, color: str) -> None:
    """One label per marker position, naming every account marked there."""
    names: dict[tuple[Any, float], list[str]] = {}
    for x, y, name in points:
        names.setdefault((x, y), []).append(name)
    for (x, y), labels in names.items():
        ax.annotate(
            ", ".join(sorted(set(labels))),
            (x, y),
            fontsize=7,
            xytext=(5, dy),
            textcoords="offset points",
            color=color,
        )


# ---------------------------------------------------------------------------------------------
# The run


class RecordingSender(TxSender):
    """A ``TxSender`` that keeps every mined transaction (for the gas figures)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mined: list[SentTx] = []

    def send(self, to: str, data: bytes, label: str = "tx", value: int = 0) -> SentTx:
        sent = super().send(to, data, label=label, value=value)
        self.mined.append(sent)
        return sent


def deploy_demo(actors: DemoActors, scenario: Scenario) -> System:
    """Token, feeds, registry and engine, with every market of ``scenario`` configured."""
    markets = [
        DevnetMarket(
            p.market_id,
            p.name,
            p.start,
            tiers=market_tiers(p.market_id),
            liquidation_fee=LIQUIDATION_FEES[p.market_id],
        )
        for p in scenario.paths
    ]
    system = deploy_system(
        actors.owner, markets=markets, keepers=[actors.keeper.address], exchange=actors.exchange
    )
    for m in markets:
        log.info("market %d (%s) at %s: %s", m.market_id, m.name, f"{m.price:,.2f}", rules(m))
    return system


def rules(m: DevnetMarket) -> str:
    """A market's tiers, guardrails and liquidation terms in one line."""
    g = m.guardrails
    tiers = ", ".join(
        f">{t.notional_floor / WAD:,.0f}: {t.maintenance_rate / WAD:.2%}" for t in m.tiers
    )
    return (
        f"tiers {tiers}; multiplier in [{g.min_multiplier / WAD:g}, {g.max_multiplier / WAD:g}],"
        f" +{g.max_increase / WAD:.0%}/-{g.max_decrease / WAD:.0%} per update,"
        f" {g.stale_multiplier / WAD:g}x when stale ({g.heartbeat} s);"
        f" liquidation penalty {m.liquidation_fee / WAD:.1%}"
    )


def feed_price(price: float) -> int:
    """The engine's WAD price for a USD price written to an 8-decimal feed."""
    return to_answer(price, FEED_DECIMALS) * 10 ** (18 - FEED_DECIMALS)


def static_maintenance(sizes: Mapping[int, int], prices: Mapping[int, int]) -> int:
    """Maintenance at multiplier 1 (what a static schedule asks) of positions ``sizes`` at WAD
    ``prices``; the engine's notional is ``ceil(|size| * price)``."""
    return sum(
        maintenance_margin(market_tiers(m), WAD, -(-abs(size) * prices[m] // WAD))
        for m, size in sizes.items()
    )


class DemoRun:
    """One demo on a deployed system: open the book, replay with the bots, collect."""

    def __init__(
        self,
        actors: DemoActors,
        scenario: Scenario,
        config: DemoConfig,
        w3: Any,
        system: System,
        first_block: int,
    ) -> None:
        self.actors = actors
        self.scenario = scenario
        self.config = config
        self.w3 = w3
        self.system = system
        self.first_block = first_block  # the deployment's first block
        self.names = {p.market_id: p.name for p in scenario.paths}
        self.engine = EngineClient(w3, system.engine.address)
        self.registry = RegistryClient(w3, system.registry.address)
        self.insurance = Subaccount(self.engine.address, 0)
        self.keeper = self._keeper()
        self.bot = self._bot()
        self.feeder = TxSender(w3, Account.from_key(actors.owner.private_key), DEMO_SENDER)
        self.records: list[StepRecord] = []
        self.liquidations: list[LiquidationEvent] = []
        self.backstops: list[BackstopEvent] = []
        self.first_liquidatable: dict[Subaccount, int] = {}
        self.caught_by_multiplier: dict[Subaccount, int] = {}
        self.labels: dict[Subaccount, str] = {
            Subaccount(actors.maker.address, 0): "maker/0",
            Subaccount(actors.liquidator.address, config.bot_subaccount): "bot",
            self.insurance: "insurance",
        }
        self.descriptions: dict[Subaccount, str] = {}
        self.initial_insurance = 0
        self.cursor = 0

    def _keeper(self) -> Keeper:
        self._set_balance(self.actors.keeper.address)
        markets = tuple(
            KeeperMarket(p.market_id, self.system.feeds[p.market_id].address, p.name)
            for p in self.scenario.paths
        )
        return Keeper(
            KeeperConfig(markets=markets),
            self.registry,
            FeedClient(self.w3),
            CalibratedRiskModel(
                {
                    p.market_id: market_tiers(p.market_id)[0].maintenance_rate
                    for p in self.scenario.paths
                },
                bar_seconds=self.scenario.step_seconds,
            ),
            self.actors.keeper,
            RecordingSender(self.w3, self.actors.keeper, DEMO_SENDER),
            self.w3.eth.chain_id,
            BotMetrics("keeper"),
            echo=log.info,
        )

    def _bot(self) -> Liquidator:
        key = Account.from_key(self.actors.liquidator.private_key)
        self._set_balance(key.address)
        return Liquidator(
            self.engine,
            RecordingSender(self.w3, key, DEMO_SENDER),
            LiquidatorConfig(liquidator_subaccount=self.config.bot_subaccount),
            BotMetrics("liquidator"),
        )

    # -- set-up -------------------------------------------------------------------------------

    def start_keeper(self) -> None:
        """Warm the keeper up on the scenario's history and push the first update."""
        now = latest_block(self.w3).timestamp
        step = self.scenario.step_seconds
        for p in self.scenario.paths:
            n = len(p.warm_up)
            self.keeper.warm_up(p.market_id, [now - step * (n - i) for i in range(n)], p.warm_up)
        self.keeper.tick(latest_block(self.w3))

    def open_book(self) -> None:
        """Fund the insurance fund, the maker and the bot; open every position of the book."""
        a, system, cfg = self.actors, self.system, self.config
        system.fund_insurance(a.owner, cfg.insurance)
        system.fund(a.maker, cfg.maker_collateral)
        system.fund(a.liquidator, cfg.bot_collateral, subaccount=cfg.bot_subaccount)
        for account in cfg.book:
            self._open(account)
        self.initial_insurance = self.engine.insurance_fund()
        self.cursor = latest_block(self.w3).number + 1
        log.info(
            "book open: %d trader subaccounts against the maker; insurance fund %s USD",
            len(cfg.book),
            usd(self.initial_insurance),
        )

    def _open(self, account: BookAccount) -> None:
        trader = self.actors.traders[account.trader]
        self.system.fund(trader, account.collateral, subaccount=account.subaccount)
        if account.isolated:
            self.system.engine.set_isolated(account.subaccount, account.isolated, sender=trader)
        for h in account.holdings:
            price = self.scenario.path(h.market_id).start
            size = position_size(account.collateral, h.leverage, price)
            self.system.trade(
                h.market_id, self.actors.maker, trader, size, price, taker_sub=account.subaccount
            )
        key = Subaccount(trader.address, account.subaccount)
        mode = f"{self.names[account.isolated]} only" if account.isolated else "cross"
        self.labels[key] = account.label
        self.descriptions[key] = f"{mode}: {describe(account, self.names)}"
        log.info(
            "opened %s (%s, %s USD): %s",
            account.label,
            mode,
            f"{account.collateral / USDC:,.0f}",
            describe(account, self.names),
        )

    # -- the replay ---------------------------------------------------------------------------

    def replay(self) -> None:
        """One step per price: feeds, then a keeper tick, then a bot tick; then the clock."""
        self.records.append(self._record(0, 0, 0))
        feeds = {
            self.system.feeds[p.market_id].address: list(p.prices) for p in self.scenario.paths
        }
        log.info(
            "replaying %d steps of %d s: %s",
            self.scenario.steps,
            self.scenario.step_seconds,
            self.scenario.title,
        )
        self._advance()
        replay(self.feeder, self.keeper.feeds, feeds, 0, self._on_step)

    def _on_step(self, index: int, mined: Mapping[str, SentTx]) -> None:
        step = index + 1
        self._log_prices(step)
        tick = self.keeper.tick(latest_block(self.w3))
        if tick.sent is None:
            reasons = "; ".join(f"{self.names[d.market_id]}: {d.reason}" for d in tick.decisions)
            log.info("keeper pushed nothing (%s)", reasons)
        found = scan(self.engine).liquidatable
        for health in found:
            self._first_seen(health, step)
        self.bot.tick(latest_block(self.w3))
        left = scan(self.engine).liquidatable
        for health in left:
            log.error("%s is still liquidatable after the bot's tick", self._label(health.account))
        self._collect_events(step)
        self.records.append(self._record(step, len(found), len(left)))
        self._advance()

    def _first_seen(self, health: Health, step: int) -> None:
        """Note when an account first became liquidatable, and whether a static schedule
        (multiplier 1) would have let it be."""
        account = health.account
        if account in self.first_liquidatable:
            return
        self.first_liquidatable[account] = step
        prices = {p.market_id: feed_price(p.prices[step - 1]) for p in self.scenario.paths}
        sizes = {
            m: self.engine.position(account.owner, account.subaccount, m)[0]
            for m in self.engine.markets_of(account.owner, account.subaccount)
        }
        static = static_maintenance(sizes, prices)
        if health.equity >= static:
            self.caught_by_multiplier[account] = step
            log.info(
                "%s is liquidatable only because margin rose: equity %s USD, maintenance %s"
                " now, %s at multiplier 1",
                self._label(account),
                usd(health.equity),
                usd(health.maintenance),
                usd(static),
            )

    def _advance(self) -> None:
        self.w3.provider.make_request("evm_increaseTime", [self.scenario.step_seconds])

    def _set_balance(self, address: str, wei: int = 100 * 10**18) -> None:
        self.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])

    def _record(self, step: int, found: int, left: int) -> StepRecord:
        prices = {
            p.market_id: (p.prices[step - 1] if step else p.start) for p in self.scenario.paths
        }
        return StepRecord(
            step=step,
            block=latest_block(self.w3).number,
            prices=prices,
            multipliers={m: self.registry.multiplier(m) for m in prices},
            insurance_fund=self.engine.insurance_fund(),
            bad_debt=self.engine.bad_debt(),
            liquidatable=found,
            left_unhealthy=left,
        )

    def _label(self, account: Subaccount) -> str:
        return self.labels.get(account, f"{account.owner[:10]}/{account.subaccount}")

    def _log_prices(self, step: int) -> None:
        moves = []
        for p in self.scenario.paths:
            before = p.prices[step - 2] if step > 1 else p.start
            now = p.prices[step - 1]
            moves.append(f"{p.name} {now:,.2f} ({now / before - 1:+.1%})")
        stamp = "" if self.scenario.times is None else f" [{_utc(self.scenario.times[step])}]"
        log.info("step %d/%d%s: %s", step, self.scenario.steps, stamp, ", ".join(moves))

    # -- events -------------------------------------------------------------------------------

    def _collect_events(self, step: int) -> None:
        """The step's ``Liquidation`` and ``Backstop`` logs, with a line for each."""
        head = latest_block(self.w3).number
        engine = self.system.engine
        for e in engine.Liquidation.range(self.cursor, head + 1):
            event = LiquidationEvent(
                step,
                int(e.block_number),
                _subaccount(e.owner, e.subaccount),
                _subaccount(e.liquidator, e.liquidator_subaccount),
                int(e.market_id),
                int(e.size),
                int(e.price),
                int(e.penalty),
                int(e.liquidator_reward),
            )
            self.liquidations.append(event)
            log.info(
                "liquidated %s (%s): %s %s closed at %s, penalty %s USD (bot %s)",
                self._label(event.account),
                self.descriptions.get(event.account, "?"),
                f"{abs(event.size) / WAD:,.4f}",
                self.names[event.market_id],
                usd(event.price),
                usd(event.penalty),
                usd(event.reward),
            )
        for e in engine.Backstop.range(self.cursor, head + 1):
            event = self._backstop(step, e)
            self.backstops.append(event)
            log.info(
                "backstopped %s (%s): equity %s USD; insurance fund covered %s, bad debt %s",
                self._label(event.account),
                self.descriptions.get(event.account, "?"),
                usd(event.equity),
                usd(event.covered),
                usd(event.bad_debt),
            )
        self.cursor = head + 1

    def _backstop(self, step: int, e: Any) -> BackstopEvent:
        """A ``Backstop`` log with the positions it moved (read at the block before) and the
        price of each move (the ``FundingAccrued`` log of the same transaction)."""
        block = int(e.block_number)
        account = _subaccount(e.owner, e.subaccount)
        prices = {
            int(f.market_id): int(f.price)
            for f in self.system.engine.FundingAccrued.range(block, block + 1)
            if f.transaction_hash == e.transaction_hash
        }
        view = self.engine.contract.functions
        owner, sub = account.owner, account.subaccount
        moves = []
        for market_id in view.markets_of(owner, sub).call(block_identifier=block - 1):
            size, _ = view.position(owner, sub, market_id).call(block_identifier=block - 1)
            moves.append((int(market_id), Fill(int(size), prices[int(market_id)])))
        return BackstopEvent(
            step, block, account, int(e.equity), int(e.covered), int(e.bad_debt), tuple(moves)
        )

    # -- the books ----------------------------------------------------------------------------

    def reconciliation(self) -> Reconciliation:
        """Every subaccount that holds or held collateral, every fill since the deployment."""
        engine = self.system.engine
        head = latest_block(self.w3).number + 1
        accounts = set(self.labels) | {e.liquidator for e in self.liquidations}
        accounts |= {
            _subaccount(d.owner, d.subaccount) for d in engine.Deposit.range(self.first_block, head)
        }
        fills = [
            Fill(int(t.size), int(t.price)) for t in engine.Trade.range(self.first_block, head)
        ]
        fills += [Fill(e.size, e.price) for e in self.liquidations]
        fills += [fill for e in self.backstops for _, fill in e.moves]
        open_notional = sum(
            self.engine.position(a.owner, a.subaccount, m)[1] for a in accounts for m in self.names
        )
        collateral = {a: self.engine.collateral_of(a.owner, a.subaccount) for a in accounts}
        balance = int(self.system.token.balanceOf(self.system.engine)) * TOKEN_SCALE
        return reconcile(
            balance, collateral, self.insurance, open_notional, self.engine.bad_debt(), fills
        )

    def result(self) -> DemoResult:
        book = list(self.descriptions)
        assert isinstance(self.keeper.sender, RecordingSender)
        assert isinstance(self.bot.sender, RecordingSender)
        return DemoResult(
            scenario=self.scenario,
            config=self.config,
            labels=self.labels,
            descriptions=self.descriptions,
            records=self.records,
            liquidations=self.liquidations,
            backstops=self.backstops,
            first_liquidatable=self.first_liquidatable,
            caught_by_multiplier=self.caught_by_multiplier,
            final_health=dict(zip(book, self.engine.health(book), strict=True)),
            keeper_txs=list(self.keeper.sender.mined),
            bot_txs=list(self.bot.sender.mined),
            reconciliation=self.reconciliation(),
            initial_insurance=self.initial_insurance,
            blocks=(self.first_block, latest_block(self.w3).number),
        )


def _subaccount(owner: str, subaccount: int) -> Subaccount:
    return Subaccount(to_checksum_address(owner), int(subaccount))


def _utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


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


def run_demo(
    actors: DemoActors,
    scenario: Scenario,
    rpc_url: str,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Deploy, open the book, replay ``scenario`` with the keeper and the bot, and collect the
    outcome; writes the chart when ``config.chart`` is set."""
    started = time.perf_counter()
    w3 = connect(rpc_url, timeout=10)
    first_block = latest_block(w3).number + 1
    system = deploy_demo(actors, scenario)
    run = DemoRun(actors, scenario, config or DemoConfig(), w3, system, first_block)
    run.start_keeper()
    run.open_book()
    run.replay()
    result = run.result()
    if result.config.chart is not None:
        result.chart = plot_demo(result, result.config.chart)
    result.seconds = time.perf_counter() - started
    return result


__all__ = [
    "DEFAULT_SEED",
    "DEMO_BOOK",
    "MARKET_BTC",
    "MARKET_ETH",
    "TOKEN_SCALE",
    "BackstopEvent",
    "BookAccount",
    "DemoActors",
    "DemoConfig",
    "DemoResult",
    "DemoRun",
    "Fill",
    "Holding",
    "LiquidationEvent",
    "MarketPath",
    "Reconciliation",
    "RecordingSender",
    "Scenario",
    "StepRecord",
    "Window",
    "demo_actors",
    "deploy_demo",
    "fold_path",
    "format_summary",
    "multipliers",
    "plot_demo",
    "quiet_history",
    "read_window",
    "reconcile",
    "run_demo",
    "seeded_scenario",
    "static_maintenance",
    "stop_devnet",
    "window_scenario",
]
