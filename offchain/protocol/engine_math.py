"""Pure-integer reference of the margin engine's account maths, equal to the contract to the wei.

``contracts/modules/engine_core.vy`` is the source of truth; this module restates its formulas
(the contract docstrings and the README) as small functions over plain values, so that the
liquidation bot can plan a close, the demo can reconcile, and the tests can hold the contract to
an independent model. Registry rules (tiers, multiplier in force, funding in force) come from
:mod:`offchain.protocol.margin_math`.

Per position ``i`` (every rounding against the account; ``WAD = 1e18``)::

    value_i   = floor(s_i * p_i / WAD)
    owed_i    = ceil(s_i * (index_i - snapshot_i) / WAD)                  (unpaid funding)
    N_i       = ceil(|s_i| * p_i / WAD)
    m_i       = min(N_i, ceil(S_i(N_i) * mult_i / WAD**2))
    im_i      = min(N_i, ceil(ceil(S_i(N_i) * imult_i / WAD**2) * ratio_i / WAD))
    reserve_i = ceil(N_i * |rate_i| * reserve_seconds_i / WAD)   (paying side; rate in WAD/s)

``mult_i`` is the multiplier in force times the account's class multiplier, rounded up (a
discount never below the market's minimum multiplier); ``imult_i`` the same at
``max(multiplier, target)``. Then::

    equity = collateral + sum_i (value_i - open_notional_i - owed_i)
    T = sum m_i,  T_I = sum im_i,  R = sum reserve_i
    portfolio (cross, >= 2 positions, all in one group with fresh scenarios):
        loss_k = ceil(-sum_i s_i p_i z_ik / (WAD * 10_000)),  L = max(0, max_k loss_k)
        P = max(L + ceil(c T / WAD), ceil(phi T / WAD))
        maintenance = min(T, P) + R,  initial = min(T_I, ceil(P r_g / WAD)) + R
    otherwise maintenance = T + R, initial = T_I + R.

The funding index grows by ``price * integral of the rate in force / WAD`` between touches
(:func:`funding_accrued`), and :func:`closable` is the partial-liquidation rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from offchain import WAD
from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    Tier,
    base_margin,
    ceil_div,
    funding_rate_in_force,
    multiplier_in_force,
)

BPS = 10_000
MAX_SCENARIOS = 16
LIQUIDATION_BUFFER = WAD // 10
DEEP_UNDERWATER = WAD // 2
DUST_NOTIONAL = 10 * WAD
CLOSE_GRID = 2**16
VOLUME_WINDOW = 30 * 86_400
INT16 = 2**16


def signed_ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ``b > 0``, any sign of ``a``."""
    return -(-a // b)


def trunc_div(a: int, b: int) -> int:
    """``a / b`` truncated toward zero for ``b > 0`` (the EVM's signed division)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def ceil_mul(x: int, y: int) -> int:
    """``ceil(x * y / WAD)``."""
    return ceil_div(x * y, WAD)


# ---------------------------------------------------------------------------------------------
# Funding


def funding_accrued(
    rate: int, updated_at: int, heartbeat: int, start: int, finish: int, price: int
) -> int:
    """Growth of the funding index over ``[start, finish]`` at ``price``::

        price * rate * (2H * fresh + (e - x0)**2 - (e - x1)**2) / (2H * WAD)

    ``fresh`` the seconds up to ``updated_at + H``, ``[x0, x1]`` the part inside the decay
    ``(updated_at + H, e = updated_at + 2H]``; truncated toward zero. Zero before any update.
    """
    if updated_at == 0 or rate == 0 or finish <= start:
        return 0
    fresh_until = updated_at + heartbeat
    ends = fresh_until + heartbeat
    fresh = min(finish, fresh_until) - start if start < fresh_until else 0
    x0, x1 = max(start, fresh_until), min(finish, ends)
    decay = (ends - x0) ** 2 - (ends - x1) ** 2 if x0 < x1 else 0
    return trunc_div(rate * (2 * heartbeat * fresh + decay) * price, 2 * heartbeat * WAD)


# ---------------------------------------------------------------------------------------------
# Prices


@dataclass(frozen=True)
class FeedReading:
    """What ``latestRoundData`` gave, as the engine classifies it: ``status`` is ``"ok"``,
    ``"stale"`` (a positive answer older than the max age) or ``"invalid"``."""

    price: int
    time: int
    status: str


def mark_price(feed: FeedReading, last_price: int, last_time: int) -> tuple[int, int, str]:
    """The engine's mark price: the fresh answer; otherwise the fresher (by feed time) of a stale
    answer and the last good price stored at the market's last touch. Raises ``ValueError``
    (the contract's ``engine: no price``) when there is neither."""
    if feed.status == "ok":
        return feed.price, feed.time, "ok"
    if feed.status == "stale" and (feed.time >= last_time or last_price == 0):
        return feed.price, feed.time, "stale"
    if last_price == 0:
        raise ValueError("engine: no price")
    return last_price, last_time, feed.status


# ---------------------------------------------------------------------------------------------
# One position


@dataclass(frozen=True)
class MarketView:
    """What the engine holds of a market at the time of a health check.

    ``state``/``guardrails``/``tiers``/``initial_ratio`` are the registry's (pushed copies),
    ``price`` the mark price, ``index`` the funding index now, ``group`` the market's scenario
    group (0: none) and ``shocks`` its scenario moves in basis points.
    """

    tiers: tuple[Tier, ...]
    guardrails: Guardrails
    initial_ratio: int
    state: MarketState
    price: int
    index: int = 0
    reserve_seconds: int = 0
    group: int = 0
    shocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class GroupView:
    """A scenario group as the engine holds it: scenario count, when it goes stale, and the
    portfolio parameters (WAD)."""

    count: int
    fresh_until: int
    residual: int
    floor: int
    initial_ratio: int

    def in_force(self, now: int) -> bool:
        return self.count > 0 and now <= self.fresh_until


@dataclass(frozen=True)
class Position:
    size: int
    open_notional: int
    snapshot: int = 0


@dataclass(frozen=True)
class Leg:
    """One position's figures in a health check (USD WAD unless said otherwise)."""

    market_id: int
    size: int
    open_notional: int
    price: int
    notional: int
    value: int
    owed: int
    mult: int
    maintenance: int
    initial: int
    reserve_rate: int
    reserve: int
    group: int
    shocks: tuple[int, ...]


def with_class(multiplier: int, class_mult: int, min_multiplier: int) -> int:
    """``ceil(multiplier * class_mult / WAD)``; a discount never below ``min_multiplier``."""
    if class_mult == WAD:
        return multiplier
    m = ceil_mul(multiplier, class_mult)
    return max(m, min_multiplier) if class_mult < WAD else m


def leg_of(market_id: int, pos: Position, market: MarketView, class_mult: int, now: int) -> Leg:
    """The figures of one position (module docstring)."""
    size, price, g = pos.size, market.price, market.guardrails
    notional = ceil_div(abs(size) * price, WAD)
    base = base_margin(market.tiers, notional)
    m = multiplier_in_force(market.state, g, now)
    mult = with_class(m, class_mult, g.min_multiplier)
    imult = with_class(max(m, market.state.target), class_mult, g.min_multiplier)
    rate = funding_rate_in_force(market.state, g, now)
    paying = (rate > 0 and size > 0) or (rate < 0 and size < 0)
    reserve_rate = abs(rate) * market.reserve_seconds if paying else 0
    return Leg(
        market_id=market_id,
        size=size,
        open_notional=pos.open_notional,
        price=price,
        notional=notional,
        value=(size * price) // WAD,
        owed=signed_ceil_div(size * (market.index - pos.snapshot), WAD),
        mult=mult,
        maintenance=min(notional, ceil_div(base * mult, WAD * WAD)),
        initial=min(notional, ceil_mul(ceil_div(base * imult, WAD * WAD), market.initial_ratio)),
        reserve_rate=reserve_rate,
        reserve=ceil_mul(notional, reserve_rate),
        group=market.group,
        shocks=market.shocks,
    )


# ---------------------------------------------------------------------------------------------
# The account


@dataclass(frozen=True)
class Health:
    legs: tuple[Leg, ...]
    cash: int
    equity: int
    maintenance: int
    initial: int
    tiered: int
    group: int  # the common scenario group of two or more legs (0: none)
    portfolio: bool = False  # whether the portfolio rule set the requirements

    @property
    def liquidatable(self) -> bool:
        return self.equity < self.maintenance

    @property
    def reserve(self) -> int:
        return sum(leg.reserve for leg in self.legs)

    def leg(self, market_id: int) -> int:
        for i, leg in enumerate(self.legs):
            if leg.market_id == market_id:
                return i
        raise ValueError("engine: no position")


@dataclass(frozen=True)
class AccountView:
    """An account's stored state: collateral, positions by market (in the engine's list order),
    its class multiplier in force (WAD, 1x by default)."""

    collateral: int
    positions: dict[int, Position] = field(default_factory=dict)
    class_mult: int = WAD


def scenario_move(legs: Sequence[Leg], k: int, skip: int | None = None) -> int:
    """``sum_i s_i p_i z_ik`` over the legs but ``skip`` (a gain is positive)."""
    return sum(
        leg.size * leg.price * (leg.shocks[k] if k < len(leg.shocks) else 0)
        for i, leg in enumerate(legs)
        if i != skip
    )


def worst_loss(moves: Sequence[int]) -> int:
    """``L = max(0, max_k ceil(-move_k / (WAD * 10_000)))``."""
    return max([0] + [signed_ceil_div(-move, WAD * BPS) for move in moves])


def portfolio(tiered: int, tiered_initial: int, worst: int, group: GroupView) -> tuple[int, int]:
    """``(min(T, P), min(T_I, ceil(P r_g / WAD)))``, ``P = max(L + ceil(c T), ceil(phi T))``."""
    p = max(worst + ceil_mul(tiered, group.residual), ceil_mul(tiered, group.floor))
    return min(tiered, p), min(tiered_initial, ceil_mul(p, group.initial_ratio))


def common_group(legs: Sequence[Leg]) -> int:
    """The scenario group every leg lies in, when there are two legs or more (0: none)."""
    groups = {leg.group for leg in legs}
    return groups.pop() if len(legs) >= 2 and len(groups) == 1 else 0


def health(
    account: AccountView,
    markets: dict[int, MarketView],
    groups: dict[int, GroupView],
    now: int,
) -> Health:
    """Equity and requirements of an account (module docstring)."""
    legs = tuple(
        leg_of(m, pos, markets[m], account.class_mult, now)
        for m, pos in account.positions.items()
        if pos.size != 0
    )
    cash = account.collateral - sum(leg.owed for leg in legs)
    equity = cash + sum(leg.value - leg.open_notional for leg in legs)
    tiered = sum(leg.maintenance for leg in legs)
    tiered_initial = sum(leg.initial for leg in legs)
    reserve = sum(leg.reserve for leg in legs)
    group = common_group(legs)
    view = groups.get(group) if group else None
    if view is not None and view.in_force(now):
        moves = [scenario_move(legs, k) for k in range(view.count)]
        maintenance, initial = portfolio(tiered, tiered_initial, worst_loss(moves), view)
        return Health(
            legs, cash, equity, maintenance + reserve, initial + reserve, tiered, group, True
        )
    return Health(legs, cash, equity, tiered + reserve, tiered_initial + reserve, tiered, group)


# ---------------------------------------------------------------------------------------------
# Liquidation


def fee_rate(leg: Leg, fee: int) -> int:
    """The liquidation fee capped at the position's maintenance rate in force (rounded down)."""
    return min(fee, leg.maintenance * WAD // leg.notional) if leg.notional else 0


def penalty(closed: int, price: int, rate: int, equity: int) -> int:
    """``min(ceil(ceil(closed * price) * rate), equity - 1)``, zero when equity <= 1."""
    if equity <= 1:
        return 0
    return min(ceil_mul(ceil_mul(closed, price), rate), equity - 1)


def maintenance_after(
    h: Health,
    j: int,
    remaining: int,
    market: MarketView,
    group: GroupView | None,
) -> int:
    """The account's maintenance once leg ``j`` holds ``remaining`` base units (same side)."""
    leg = h.legs[j]
    notional = ceil_div(remaining * leg.price, WAD)
    m = min(notional, ceil_div(base_margin(market.tiers, notional) * leg.mult, WAD * WAD))
    tiered = h.tiered - leg.maintenance + m
    reserve = h.reserve - leg.reserve + ceil_mul(notional, leg.reserve_rate)
    if group is None:
        return tiered + reserve
    size = remaining if leg.size > 0 else -remaining
    moves = [
        scenario_move(h.legs, k, skip=j)
        + size * leg.price * (leg.shocks[k] if k < len(leg.shocks) else 0)
        for k in range(group.count)
    ]
    return portfolio(tiered, 0, worst_loss(moves), group)[0] + reserve


def closable(
    h: Health, j: int, fee: int, market: MarketView, groups: dict[int, GroupView], now: int
) -> int:
    """The most of leg ``j`` one liquidation may close (the contract's rule):

    - equity below 50% of maintenance: the whole position;
    - otherwise the smallest ``q = ceil(|s| k / 2**16)`` (16-step bisection on ``k``) with
      ``E - penalty(q) >= ceil(1.1 * M(q))``, ``M(q)`` the maintenance after the close; the
      whole position when even closing all of it does not get there;
    - the whole position when the remainder would be worth less than 10 USD.
    """
    leg = h.legs[j]
    abs_size = abs(leg.size)
    if h.equity * WAD < h.maintenance * DEEP_UNDERWATER:
        return abs_size
    rate = fee_rate(leg, fee)
    view = groups.get(h.group) if h.group else None
    group = view if view is not None and view.in_force(now) else None

    def restores(k: int) -> bool:
        q = ceil_div(abs_size * k, CLOSE_GRID)
        left = h.equity - penalty(q, leg.price, rate, h.equity)
        need = ceil_mul(
            maintenance_after(h, j, abs_size - q, market, group), WAD + LIQUIDATION_BUFFER
        )
        return left >= need

    if not restores(CLOSE_GRID):
        return abs_size
    lo, hi = 0, CLOSE_GRID
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if restores(mid):
            hi = mid
        else:
            lo = mid
    q = max(ceil_div(abs_size * hi, CLOSE_GRID), 1)
    if (abs_size - q) * leg.price // WAD < DUST_NOTIONAL:
        return abs_size
    return q


def adl_transfer(deficit: int, closed: int, fund_size: int, equity: int) -> int:
    """What a deleveraged account pays on top of closing ``closed`` at the mark price (closing
    at the bankruptcy price of the fund's share): ``min(ceil(deficit * closed / |fund
    position|), equity - 1)``."""
    return min(ceil_div(deficit * closed, abs(fund_size)), equity - 1)


# ---------------------------------------------------------------------------------------------
# Activity accumulators


@dataclass(frozen=True)
class VolumeBuckets:
    """An owner's two rolling 30-day buckets of traded notional."""

    epoch: int = 0
    current: int = 0
    previous: int = 0

    def rolled(self, now: int) -> VolumeBuckets:
        epoch = now // VOLUME_WINDOW
        if self.epoch + 1 == epoch:
            return VolumeBuckets(epoch, 0, self.current)
        if self.epoch != epoch:
            return VolumeBuckets(epoch, 0, 0)
        return self

    def trailing(self, now: int) -> int:
        """``current + previous * (time left in the window) / window``, rounded down."""
        b = self.rolled(now)
        left = VOLUME_WINDOW - now % VOLUME_WINDOW
        return b.current + b.previous * left // VOLUME_WINDOW

    def add(self, notional: int, now: int) -> VolumeBuckets:
        b = self.rolled(now)
        return replace(b, current=min(b.current + notional, 2**112 - 1))


def fill_premium(price: int, mark: int) -> int:
    """``(fill - mark) / mark`` in WAD, truncated toward zero."""
    return trunc_div((price - mark) * WAD, mark)


def add_premium(weighted: int, total: int, notional: int, price: int, mark: int) -> tuple[int, int]:
    """The premium accumulators after a fill of ``notional`` at ``price`` against ``mark``."""
    return weighted + trunc_div(notional * fill_premium(price, mark), WAD), total + notional


__all__ = [
    "BPS",
    "CLOSE_GRID",
    "DEEP_UNDERWATER",
    "DUST_NOTIONAL",
    "LIQUIDATION_BUFFER",
    "AccountView",
    "FeedReading",
    "GroupView",
    "Health",
    "Leg",
    "MarketView",
    "Position",
    "VolumeBuckets",
    "add_premium",
    "adl_transfer",
    "ceil_mul",
    "closable",
    "common_group",
    "fee_rate",
    "fill_premium",
    "funding_accrued",
    "health",
    "leg_of",
    "maintenance_after",
    "mark_price",
    "penalty",
    "portfolio",
    "scenario_move",
    "signed_ceil_div",
    "trunc_div",
    "with_class",
    "worst_loss",
]
