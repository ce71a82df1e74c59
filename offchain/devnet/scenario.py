"""The demo's inputs: the markets, the price paths and the book of trader subaccounts.

Markets and book
----------------
BTC uses the devnet tiers (0.5% of notional to 1M USD, 1% to 10M, 2.5% above), ETH riskier ones
(0.75% to 500k, 1.5% to 5M, 3% above); both the shipped guardrails of ``deploy/risk.yaml``'s BTC
market (multiplier in [2, 10], x3 / -5% per update, 6x when no update for 2 hours, increases
phased in over 30 minutes, funding within 1.9e-7/s and a 2-hour funding reserve), the shipped
scenario group (BTC/ETH) and account classes (devnet scale). Liquidation penalties are 0.3%
(BTC) and 0.5% (ETH), half to the liquidator; a backstop pays its caller 10 USD from the
insurance fund. ``DEMO_BOOK`` holds thirteen trader subaccounts, cross and isolated, long and
short, from 1.25x to 20x, against one market maker; among them a hedged pair (BTC long, ETH
short) beside an outright BTC long of the same gross notional, and a two-sided market maker
(``turnover``: round trips before its position) whose record earns the discount class. For each
account that becomes liquidatable the demo also says whether it would have been healthy at the
multipliers in force before the crash.

Scenarios
---------
``seeded_scenario(seed=7)`` (the default) builds each market's path with
``offchain.devnet.replay.crash_scenario``, one price per hour:

* BTC from 60,000: 6 calm hours (0.3%/h noise), a 30% fall over 6 hours (-5.8%/h), then an 8%
  rebound over 4 hours;
* ETH from 3,000 (seed + 1): 6 calm hours (0.4%/h), a 38% fall over 6 hours (-7.7%/h), then a
  10% rebound over 4 hours.

The keeper runs the backtested model (``CalibratedRiskModel``: FHS on a dual EWMA filter, 99%
one-hour VaR, stressed floor), one bar per hourly step, and first warms up on 721 quiet hours
(seeded; BTC and ETH correlated 0.8 hour by hour, as they have been since 2018, so that the
joint scenarios see a hedge); on the same bars it signs the BTC/ETH group's joint scenarios,
each market's funding from the engine's premium (the interest term while fills trade at the
oracle) and, each hour, the account classes. ``window_scenario`` replays the hourly closes of a
real window instead (e.g. ``2020-03-11`` to ``2020-03-14`` inclusive), scaled so that the
window's first close is the devnet price (60,000 BTC, 3,000 ETH); the 721 hours before the window
warm the keeper up.
ETH replays its own candles when a file is given, otherwise the same relative moves as BTC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from offchain import WAD
from offchain.devnet.replay import CrashScenario, crash_scenario, to_answer
from offchain.devnet.system import (
    DEVNET_TIERS,
    FEED_DECIMALS,
    USDC,
)
from offchain.protocol.margin_math import Tier, maintenance_margin
from offchain.protocol.tx_sender import SenderConfig
from offchain.risk.prices import HOUR, load_candles

MARKET_BTC = 1
MARKET_ETH = 2
BTC_PRICE = 60_000.0
ETH_PRICE = 3_000.0
TOKEN_SCALE = 10**12  # 6-decimal token units to WAD
DEFAULT_SEED = 7
# The keeper's model proposes from the backtest's warm-up on: 720 hours of data before the first
# proposal, i.e. 721 bars.
WARM_UP_HOURS = 721
WINDOW_WARM_UP_HOURS = 721
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
# The warm-up's hour-by-hour correlation between markets (BTC/ETH hourly returns: about 0.8).
WARM_UP_CORRELATION = 0.8
WARM_UP_OWN = 0.6  # sqrt(1 - 0.8^2)
BACKSTOP_REWARD = 10 * WAD  # USD paid to whoever backstops an account, from the insurance fund
DEMO_KEEPER_KEY = keccak(text="dynamic-margin demo keeper")  # a devnet-only key


def utc_label(t: int) -> str:
    """``2020-03-12 08:00`` (UTC) for a Unix time."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


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


def quiet_history(
    end_price: float, hours: int, vol: float, seed: int, common: np.ndarray | None = None
) -> tuple[float, ...]:
    """``hours`` hourly prices of a seeded random walk (``vol`` per hour) that ends next to
    ``end_price`` (the walk is generated backwards from it), oldest first. With ``common``
    (standard normal draws shared by several markets) each hour's shock is
    ``0.8 common + 0.6 own``: the markets move together with correlation 0.8."""
    rng = np.random.default_rng(seed)
    own = rng.normal(0.0, 1.0, hours)
    z = own if common is None else WARM_UP_CORRELATION * common + WARM_UP_OWN * own
    backwards = end_price * np.cumprod(np.exp(vol * z))
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
    common = np.random.default_rng(seed + 2000).normal(0.0, 1.0, WARM_UP_HOURS)
    return Scenario(
        title,
        (
            _crash_path(MARKET_BTC, "BTC", btc, common),
            _crash_path(MARKET_ETH, "ETH", eth, common),
        ),
    )


def _crash_path(market_id: int, name: str, s: CrashScenario, common: np.ndarray) -> MarketPath:
    warm = quiet_history(s.start_price, WARM_UP_HOURS, s.calm_vol, s.seed + 1000, common)
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
            f"{path}: fewer than 2 hourly closes from {utc_label(start)} to {utc_label(end)} UTC"
            f" (the file covers {utc_label(int(t[0]))} to {utc_label(int(t[-1]))})"
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
    """A trader subaccount of the book: collateral (token units), isolation, positions, and
    ``turnover`` (round trips against the maker before the positions, in multiples of the
    collateral: bought, then sold back, in the first market held)."""

    trader: int
    subaccount: int
    collateral: int
    holdings: tuple[Holding, ...]
    isolated: int = 0
    role: str = ""  # "hedged", "outright", "two-sided": what the summary shows it for
    turnover: float = 0.0

    @property
    def label(self) -> str:
        return f"{TRADER_NAMES[self.trader]}/{self.subaccount}"


# From comfortable to reckless, sized against the default crash: the hedged and short accounts
# ride it out; the 3x-6x longs become liquidatable as the multiplier climbs (partially or fully
# closed, several at the bottom only because margin rose); the 20x ETH long gaps far below zero
# on the first crash hour and is backstopped beyond what the insurance fund holds, and the
# deficit is recovered from the most profitable shorts (auto-deleveraging: carol/3's 5x ETH
# short ranks first by profit times leverage). alice/3 and alice/4
# are the portfolio pair: the same 60,000 USD gross, hedged (BTC long, ETH short) and outright
# (BTC long). bob/3 trades 9x its collateral both ways before holding a small BTC short: a
# two-sided record the profile rule rewards with the maker class (its equity must stay above the
# class's minimum, which a short does through a crash).
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
    BookAccount(
        0, 3, 20_000 * USDC, (Holding(MARKET_BTC, 1.5), Holding(MARKET_ETH, -1.5)), role="hedged"
    ),
    BookAccount(0, 4, 20_000 * USDC, (Holding(MARKET_BTC, 3.0),), role="outright"),
    BookAccount(1, 3, 60_000 * USDC, (Holding(MARKET_BTC, -1.0),), role="two-sided", turnover=9.0),
    BookAccount(2, 3, 30_000 * USDC, (Holding(MARKET_ETH, -5.0),), isolated=MARKET_ETH),
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
