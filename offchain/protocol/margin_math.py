"""Pure-Python reference of the registry's margin maths, equal to the contract to the wei.

``contracts/RiskParameterRegistry.vy`` is the source of truth; this module mirrors it so that
the keeper can clamp before it signs (nothing is clamped on-chain), the backtest can replay the
guardrails exactly, and the tests can compare the contract against an independent model.

Formulas (all integers, WAD = 1e18 fixed point)::

    S(N)        = sum_i rate_i * clamp(N - floor_i, 0, floor_{i+1} - floor_i)   (full precision)
    maintenance = min(N, ceil(S(N) * m / WAD**2))
    initial     = min(N, ceil(ceil(S(N) * max(m, target) / WAD**2) * initial_ratio / WAD))

where ``m`` is the multiplier in force: the target, except during an increase ramp, when it moves
linearly (rounded up) from the multiplier in force when the update landed to the target; once
the last update is older than ``heartbeat``, ``max(stale_multiplier, target * (1 -
max_decrease) ** n)`` with ``n`` the whole ``min_decrease_interval`` s since the heartbeat (the
stale multiplier before any update). The funding rate in force decays linearly to zero over the
heartbeat after that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from offchain import WAD
from offchain.protocol.signing import RiskUpdate

MAX_TIERS = 8
MAX_MULTIPLIER = 2**64 - 1  # packed in 64 bits on-chain (about 18.4x)
MAX_FUNDING_RATE_BOUND = 2**47 - 1  # packed in a signed 48-bit field on-chain
MAX_SECONDS = 2**40 - 1  # timestamps are packed in 40 bits on-chain
MAX_DURATION = 2**32 - 1  # heartbeat, ramp and decrease interval: 32 bits in the engine


class UpdateRejected(ValueError):  # noqa: N818 - mirrors the contract's revert
    """The registry would revert this update; ``reason`` is the contract's revert string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Tier:
    """One notional bracket: ``maintenance_rate`` applies to notional above ``notional_floor``."""

    notional_floor: int
    maintenance_rate: int


@dataclass(frozen=True)
class Guardrails:
    """Governance bounds within which keepers move a market's multiplier and funding rate."""

    min_multiplier: int
    max_multiplier: int
    max_increase: int
    max_decrease: int
    min_decrease_interval: int
    heartbeat: int
    stale_multiplier: int
    increase_ramp: int
    max_funding_rate: int

    def as_tuple(self) -> tuple[int, ...]:
        """The struct in the contract's field order."""
        return (
            self.min_multiplier,
            self.max_multiplier,
            self.max_increase,
            self.max_decrease,
            self.min_decrease_interval,
            self.heartbeat,
            self.stale_multiplier,
            self.increase_ramp,
            self.max_funding_rate,
        )


@dataclass(frozen=True)
class MarketState:
    """What the registry stores per market after its updates (zero before the first)."""

    target: int = 0
    ramp_from: int = 0
    funding_rate: int = 0
    updated_at: int = 0
    observed_at: int = 0
    last_decrease_at: int = 0


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ``a >= 0``, ``b > 0``."""
    return -(-a // b)


def validate_tiers(tiers: Sequence[Tier]) -> None:
    """Raise ``ValueError`` with the contract's message if the schedule would be rejected."""
    if not 1 <= len(tiers) <= MAX_TIERS:
        raise ValueError("registry: tier count must be 1 to 8")
    if tiers[0].notional_floor != 0:
        raise ValueError("registry: first tier floor must be 0")
    if tiers[0].maintenance_rate == 0:
        raise ValueError("registry: first tier rate is zero")
    for prev, tier in pairwise(tiers):
        if tier.notional_floor <= prev.notional_floor:
            raise ValueError("registry: tier floors not strictly increasing")
        if tier.maintenance_rate < prev.maintenance_rate:
            raise ValueError("registry: tier rates decreasing")
    for tier in tiers:
        if tier.maintenance_rate > WAD:
            raise ValueError("registry: tier rate above 100%")
        if tier.notional_floor >= 2**128:
            raise ValueError("registry: tier floor too large")


def validate_guardrails(g: Guardrails) -> None:
    """Raise ``ValueError`` with the contract's message if the guardrails are inconsistent."""
    checks = [
        (g.min_multiplier > 0, "registry: min multiplier is zero"),
        (g.min_multiplier <= g.max_multiplier, "registry: min multiplier above max"),
        (g.max_multiplier <= MAX_MULTIPLIER, "registry: max multiplier too large"),
        (
            g.min_multiplier <= g.stale_multiplier <= g.max_multiplier,
            "registry: stale multiplier outside [min, max]",
        ),
        (0 < g.max_increase <= MAX_MULTIPLIER, "registry: max increase out of range"),
        (0 < g.max_decrease < WAD, "registry: max decrease out of range"),
        (0 < g.heartbeat <= MAX_DURATION, "registry: heartbeat out of range"),
        (g.min_decrease_interval <= MAX_DURATION, "registry: decrease interval too large"),
        (g.increase_ramp <= g.heartbeat, "registry: increase ramp longer than heartbeat"),
        (g.max_funding_rate <= MAX_FUNDING_RATE_BOUND, "registry: funding bound too large"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def base_margin(tiers: Sequence[Tier], notional: int) -> int:
    """``S(N)``: the progressive tier sum at full precision (WAD * WAD units)."""
    total = 0
    for i, tier in enumerate(tiers):
        if notional <= tier.notional_floor:
            break
        top = tiers[i + 1].notional_floor if i + 1 < len(tiers) else notional
        total += tier.maintenance_rate * (min(notional, top) - tier.notional_floor)
    return total


def is_stale(state: MarketState, g: Guardrails, now: int) -> bool:
    """Stale when there has been no update or the last landed more than ``heartbeat`` ago."""
    return state.updated_at == 0 or now - state.updated_at > g.heartbeat


def multiplier_in_force(state: MarketState, g: Guardrails, now: int) -> int:
    """The maintenance multiplier at time ``now``: the target (or the increase ramp to it) while
    fresh, :func:`stale_multiplier_in_force` once stale."""
    if is_stale(state, g, now):
        return stale_multiplier_in_force(state, g, now)
    elapsed = now - state.updated_at
    if state.ramp_from >= state.target or elapsed >= g.increase_ramp:
        return state.target
    return state.ramp_from + ceil_div((state.target - state.ramp_from) * elapsed, g.increase_ramp)


def stale_multiplier_in_force(state: MarketState, g: Guardrails, now: int) -> int:
    """The conservative fallback of a stale market::

        max(stale, target * (1 - max_decrease) ** n),
        n = (now - updated_at - heartbeat) // max(min_decrease_interval, 1)

    a silent keeper never lowers margin faster than a live one could. The power is taken by
    squaring with every product rounded up, exactly as the registry does; before any update the
    stale multiplier applies.
    """
    stale = g.stale_multiplier
    decayed = state.target
    if state.updated_at == 0 or decayed <= stale:
        return stale
    steps = (now - state.updated_at - g.heartbeat) // max(g.min_decrease_interval, 1)
    base = WAD - g.max_decrease
    while steps and decayed > stale:
        if steps & 1:
            decayed = ceil_div(decayed * base, WAD)
        steps >>= 1
        if steps:
            base = ceil_div(base * base, WAD)
    return max(decayed, stale)


def funding_rate_in_force(state: MarketState, g: Guardrails, now: int) -> int:
    """The funding rate at ``now``: the signed rate while fresh, then decaying linearly to zero
    over one more heartbeat (truncated toward zero), zero after that and before any update."""
    if state.updated_at == 0:
        return 0
    fresh_until = state.updated_at + g.heartbeat
    if now <= fresh_until:
        return state.funding_rate
    left = fresh_until + g.heartbeat - now
    if left <= 0:
        return 0
    magnitude = abs(state.funding_rate) * left // g.heartbeat
    return magnitude if state.funding_rate >= 0 else -magnitude


def maintenance_margin(tiers: Sequence[Tier], multiplier: int, notional: int) -> int:
    """``min(N, ceil(S(N) * m / WAD**2))``."""
    return min(notional, ceil_div(base_margin(tiers, notional) * multiplier, WAD * WAD))


def initial_margin(
    tiers: Sequence[Tier], multiplier: int, target: int, initial_ratio: int, notional: int
) -> int:
    """``min(N, ceil(M * initial_ratio / WAD))`` with ``M`` at ``max(multiplier, target)``."""
    m = ceil_div(base_margin(tiers, notional) * max(multiplier, target), WAD * WAD)
    return min(notional, ceil_div(m * initial_ratio, WAD))


def steps_apply(state: MarketState, g: Guardrails) -> bool:
    """Whether the step limits bind the next update: from the second update on, unless a
    reconfiguration moved ``[min, max]`` past the last target (then it starts afresh)."""
    return state.updated_at != 0 and g.min_multiplier <= state.target <= g.max_multiplier


def _check_step(state: MarketState, g: Guardrails, multiplier: int, now: int) -> None:
    if not steps_apply(state, g):
        return
    if multiplier * WAD > state.target * (WAD + g.max_increase):
        raise UpdateRejected("registry: update exceeds max increase")
    if multiplier < state.target:
        if multiplier * WAD < state.target * (WAD - g.max_decrease):
            raise UpdateRejected("registry: update exceeds max decrease")
        if state.last_decrease_at != 0 and now < state.last_decrease_at + g.min_decrease_interval:
            raise UpdateRejected("registry: decrease inside min interval")


def apply_update(state: MarketState, g: Guardrails, update: RiskUpdate, now: int) -> MarketState:
    """The market state after ``update`` lands at ``now``; raises ``UpdateRejected`` exactly
    when the contract would revert (signature checks aside)."""
    if now > update.deadline:
        raise UpdateRejected("registry: update past its deadline")
    if update.observed_at > now:
        raise UpdateRejected("registry: observed_at in the future")
    if update.observed_at <= state.observed_at:
        raise UpdateRejected("registry: observed_at not after the last update")
    if state.updated_at == now:
        raise UpdateRejected("registry: market already updated in this block")
    if update.multiplier < g.min_multiplier:
        raise UpdateRejected("registry: multiplier below minimum")
    if update.multiplier > g.max_multiplier:
        raise UpdateRejected("registry: multiplier above maximum")
    if abs(update.funding_rate) > g.max_funding_rate:
        raise UpdateRejected("registry: funding rate beyond its bound")
    _check_step(state, g, update.multiplier, now)
    in_force = multiplier_in_force(state, g, now)
    ramping = g.increase_ramp > 0 and in_force < update.multiplier
    ramp_from = in_force if ramping else update.multiplier
    decreased = steps_apply(state, g) and update.multiplier < state.target
    return MarketState(
        target=update.multiplier,
        ramp_from=ramp_from,
        funding_rate=update.funding_rate,
        updated_at=now,
        observed_at=update.observed_at,
        last_decrease_at=now if decreased else state.last_decrease_at,
    )


def clamp_multiplier(state: MarketState, g: Guardrails, proposed: int, now: int) -> int:
    """The multiplier closest to ``proposed`` that the registry would accept at ``now``."""
    m = min(max(proposed, g.min_multiplier), g.max_multiplier)
    if not steps_apply(state, g):
        return m
    up = state.target * (WAD + g.max_increase) // WAD
    down = ceil_div(state.target * (WAD - g.max_decrease), WAD)
    m = min(max(m, down), up)
    if m < state.target and (
        state.last_decrease_at != 0 and now < state.last_decrease_at + g.min_decrease_interval
    ):
        return state.target
    return min(max(m, g.min_multiplier), g.max_multiplier)


def with_funding_bound(funding_rate: int, g: Guardrails) -> int:
    """Clamp a funding rate to ``[-max_funding_rate, max_funding_rate]``."""
    return max(-g.max_funding_rate, min(g.max_funding_rate, funding_rate))


__all__ = [
    "MAX_DURATION",
    "MAX_FUNDING_RATE_BOUND",
    "MAX_MULTIPLIER",
    "MAX_SECONDS",
    "MAX_TIERS",
    "Guardrails",
    "MarketState",
    "Tier",
    "UpdateRejected",
    "apply_update",
    "base_margin",
    "ceil_div",
    "clamp_multiplier",
    "funding_rate_in_force",
    "initial_margin",
    "is_stale",
    "maintenance_margin",
    "multiplier_in_force",
    "stale_multiplier_in_force",
    "steps_apply",
    "validate_guardrails",
    "validate_tiers",
    "with_funding_bound",
]
