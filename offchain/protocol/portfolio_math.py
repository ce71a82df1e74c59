"""Pure-integer reference of the on-chain portfolio margin of a cross subaccount.

A *scenario group* is a set of markets and ``K <= 16`` joint price shocks, signed by the keepers.
A cross subaccount whose positions (at least two) all lie in the markets of one group, whose
scenarios are fresh, is margined on its worst scenario loss instead of the plain sum of its
positions' tiered margins; every other subaccount keeps the tiered sums. The engine computes
exactly this, to the wei; the keeper, the backtest and the tests use this module.

Formula (all integers, ``WAD = 1e18``; every rounding goes against the account)::

    positions i: signed size s_i (base units, WAD), mark price p_i (USD, WAD),
                 tiered maintenance m_i and initial im_i (the registry's tier formula)
    shocks z_ik: int16 basis points (1 = 0.01%), a price move of z_ik / 10_000
    group parameters: residual c, floor phi, initial_ratio r_g (WAD)

    T      = sum_i m_i,        T_I = sum_i im_i
    loss_k = ceil( -sum_i s_i * p_i * z_ik / (WAD * 10_000) )      (a gain is negative)
    L      = max(0, max_k loss_k)
    P      = max(L + ceil(c * T / WAD), ceil(phi * T / WAD))
    maintenance = min(T, P),    initial = min(T_I, ceil(P * r_g / WAD))

The sum inside ``loss_k`` is taken at full precision and rounded once, up (towards the account's
loss). Shocks of unused scenarios are zero, and a zero scenario loses nothing, so
``L`` over all 16 slots equals ``L`` over the ``K`` in use.

Shocks are stored one market to a 256-bit word: 16 two's-complement int16, scenario ``k`` in bits
``16k .. 16k + 15`` (:func:`pack_shocks`, :func:`unpack_shocks`).

Eligibility (:func:`is_portfolio_eligible`): cross margin, at least two positions of non-zero
size, every market of them in the group, scenarios fresh (:func:`scenarios_fresh`: updated, and
not older than the group's heartbeat). Otherwise the tiered sums apply, so stale or absent
scenarios never give credit.

A scenario update is checked against governance guardrails (:class:`ShockGuardrails`): each
shock within a per-market bound ``|z_ik| <= max_shock_i`` and, from the second update on, within
a per-update step ``|z_ik - z_ik(previous)| <= max_step_i``. :func:`clamp_shocks` gives the
closest update the guardrails accept (the keeper clamps before it signs; nothing is clamped
on-chain).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from offchain import WAD

BPS = 10_000
MAX_SCENARIOS = 16
SHOCK_BITS = 16
INT16_MIN = -(2 ** (SHOCK_BITS - 1))
INT16_MAX = 2 ** (SHOCK_BITS - 1) - 1
_MASK16 = (1 << SHOCK_BITS) - 1


class ShocksRejected(ValueError):  # noqa: N818 - mirrors the contract's revert
    """A scenario update the guardrails refuse; ``reason`` names the first failed check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Rounding and packing


def signed_ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for any integer ``a`` and ``b > 0`` (rounds towards +infinity)."""
    if b <= 0:
        raise ValueError(f"divisor must be positive, got {b}")
    return -(-a // b)


def check_shock(z: int) -> int:
    """Return ``z`` or raise ``ValueError`` unless it is an int16 (``-32768 .. 32767``)."""
    if isinstance(z, bool) or not isinstance(z, int):
        raise ValueError(f"shock must be an integer number of basis points, got {z!r}")
    if not INT16_MIN <= z <= INT16_MAX:
        raise ValueError(f"shock {z} bps does not fit an int16")
    return z


def pack_shocks(shocks: Sequence[int]) -> int:
    """One market's shocks as a 256-bit word: scenario ``k`` in bits ``16k .. 16k + 15``.

    .. math:: w = \\sum_{k=0}^{15} (z_k \\bmod 2^{16}) \\, 2^{16 k}

    Unused scenarios (``k >= len(shocks)``) are zero.

    Examples
    --------
    >>> hex(pack_shocks([-1, 2]))
    '0x2ffff'
    """
    if len(shocks) > MAX_SCENARIOS:
        raise ValueError(f"at most {MAX_SCENARIOS} scenarios, got {len(shocks)}")
    word = 0
    for k, z in enumerate(shocks):
        word |= (check_shock(z) & _MASK16) << (SHOCK_BITS * k)
    return word


def unpack_shocks(word: int, count: int = MAX_SCENARIOS) -> list[int]:
    """The first ``count`` shocks of a word made by :func:`pack_shocks` (two's complement).

    Examples
    --------
    >>> unpack_shocks(0x2FFFF, 3)
    [-1, 2, 0]
    """
    if not 0 <= word < 2**256:
        raise ValueError(f"word must be a uint256, got {word}")
    if not 0 <= count <= MAX_SCENARIOS:
        raise ValueError(f"count must lie in [0, {MAX_SCENARIOS}], got {count}")
    out = []
    for k in range(count):
        raw = (word >> (SHOCK_BITS * k)) & _MASK16
        out.append(raw - (1 << SHOCK_BITS) if raw > INT16_MAX else raw)
    return out


# ---------------------------------------------------------------------------------------------
# The margin


@dataclass(frozen=True)
class GroupParams:
    """A scenario group's governance parameters (WAD).

    Parameters
    ----------
    residual
        ``c``: the fraction of the tiered sum added to the worst scenario loss, for what ``K``
        scenarios cannot see (directions between them, moves beyond them, size tiers).
    floor
        ``phi``: the portfolio requirement never falls below this fraction of the tiered sum.
    initial_ratio
        ``r_g``: initial requirement = ``r_g`` times the portfolio requirement (capped at the
        tiered initial sum).
    """

    residual: int
    floor: int
    initial_ratio: int

    def __post_init__(self) -> None:
        if not 0 <= self.residual <= WAD:
            raise ValueError(f"residual must lie in [0, WAD], got {self.residual}")
        if not 0 <= self.floor <= WAD:
            raise ValueError(f"floor must lie in [0, WAD], got {self.floor}")
        if self.initial_ratio < WAD:
            raise ValueError(f"initial_ratio must be at least WAD, got {self.initial_ratio}")


@dataclass(frozen=True)
class PortfolioPosition:
    """One position of a subaccount as the engine sees it.

    ``shocks[k]`` is the group's shock of this position's market in scenario ``k`` (bps);
    ``maintenance`` and ``initial`` are its tiered requirements (USD, WAD).
    """

    size: int
    price: int
    maintenance: int
    initial: int
    shocks: Sequence[int] = ()

    def __post_init__(self) -> None:
        if self.price <= 0:
            raise ValueError(f"price must be positive, got {self.price}")
        if self.maintenance < 0 or self.initial < 0:
            raise ValueError("tiered requirements must be non-negative")
        if len(self.shocks) > MAX_SCENARIOS:
            raise ValueError(f"at most {MAX_SCENARIOS} shocks, got {len(self.shocks)}")
        for z in self.shocks:
            check_shock(z)


@dataclass(frozen=True)
class PortfolioMargin:
    """The pieces of the formula for one subaccount (USD, WAD)."""

    tiered_maintenance: int
    tiered_initial: int
    worst_loss: int
    requirement: int
    maintenance: int
    initial: int


def scenario_loss(positions: Sequence[PortfolioPosition], k: int) -> int:
    """``loss_k = ceil(-sum_i s_i p_i z_ik / (WAD * 10_000))``; a scenario a position has no
    shock for (``k >= len(shocks)``) moves it by zero."""
    total = 0
    for pos in positions:
        z = pos.shocks[k] if k < len(pos.shocks) else 0
        total += pos.size * pos.price * z
    return signed_ceil_div(-total, WAD * BPS)


def worst_scenario_loss(positions: Sequence[PortfolioPosition], n_scenarios: int) -> int:
    """``L = max(0, max_{k < K} loss_k)``."""
    if not 0 <= n_scenarios <= MAX_SCENARIOS:
        raise ValueError(f"n_scenarios must lie in [0, {MAX_SCENARIOS}], got {n_scenarios}")
    return max([0] + [scenario_loss(positions, k) for k in range(n_scenarios)])


def portfolio_requirement(tiered: int, worst_loss: int, params: GroupParams) -> int:
    """``P = max(L + ceil(c T / WAD), ceil(phi T / WAD))``."""
    if tiered < 0 or worst_loss < 0:
        raise ValueError("tiered sum and worst loss must be non-negative")
    return max(
        worst_loss + signed_ceil_div(params.residual * tiered, WAD),
        signed_ceil_div(params.floor * tiered, WAD),
    )


def portfolio_margin(
    positions: Sequence[PortfolioPosition], n_scenarios: int, params: GroupParams
) -> PortfolioMargin:
    """Maintenance ``min(T, P)`` and initial ``min(T_I, ceil(P r_g / WAD))`` of an eligible
    subaccount (the caller checks eligibility with :func:`is_portfolio_eligible`)."""
    tiered = sum(p.maintenance for p in positions)
    tiered_initial = sum(p.initial for p in positions)
    worst = worst_scenario_loss(positions, n_scenarios)
    req = portfolio_requirement(tiered, worst, params)
    return PortfolioMargin(
        tiered_maintenance=tiered,
        tiered_initial=tiered_initial,
        worst_loss=worst,
        requirement=req,
        maintenance=min(tiered, req),
        initial=min(tiered_initial, signed_ceil_div(req * params.initial_ratio, WAD)),
    )


# ---------------------------------------------------------------------------------------------
# Eligibility and freshness


def scenarios_fresh(updated_at: int, heartbeat: int, now: int) -> bool:
    """Fresh when the group has been updated and not more than ``heartbeat`` seconds ago
    (the registry's staleness rule for multipliers, applied to the group)."""
    return updated_at != 0 and now - updated_at <= heartbeat


def is_portfolio_eligible(
    cross: bool, markets: Sequence[int], group_markets: Collection[int], fresh: bool
) -> bool:
    """Whether the portfolio formula applies: a cross subaccount, at least two positions
    (``markets``: the market of each position of non-zero size), all in the group's markets,
    with fresh scenarios. Otherwise the tiered sums apply."""
    return cross and fresh and len(markets) >= 2 and all(m in group_markets for m in markets)


def account_requirements(
    positions: Sequence[PortfolioPosition],
    *,
    eligible: bool,
    n_scenarios: int,
    params: GroupParams,
) -> tuple[int, int]:
    """``(maintenance, initial)`` of a subaccount: :func:`portfolio_margin` when ``eligible``,
    else the tiered sums ``(T, T_I)``."""
    if eligible:
        pm = portfolio_margin(positions, n_scenarios, params)
        return pm.maintenance, pm.initial
    return sum(p.maintenance for p in positions), sum(p.initial for p in positions)


# ---------------------------------------------------------------------------------------------
# Update guardrails


@dataclass(frozen=True)
class ShockGuardrails:
    """Governance bounds on a group's shocks, per market of the group (bps).

    ``max_shock[i]`` bounds ``|z_ik|``. While the previous update is in force (within
    ``heartbeat``), the count may not fall and each previous scenario ``k`` moves at most
    ``max_step[i]`` (``|z_ik - z_ik(previous)|``); scenarios beyond the previous count start
    anywhere inside the bound. The caller passes ``previous=None`` to :func:`check_shocks` and
    :func:`clamp_shocks` when the group is stale or was reconfigured, as the registry starts
    afresh then; ``heartbeat`` (seconds) makes the group stale.
    """

    max_shock: tuple[int, ...]
    max_step: tuple[int, ...]
    heartbeat: int

    def __post_init__(self) -> None:
        if len(self.max_shock) != len(self.max_step) or not self.max_shock:
            raise ValueError("max_shock and max_step need one value per market")
        for b in self.max_shock:
            if not 0 < b <= INT16_MAX:
                raise ValueError(f"max_shock must lie in (0, {INT16_MAX}], got {b}")
        for s in self.max_step:
            if s <= 0:
                raise ValueError(f"max_step must be positive, got {s}")
        if self.heartbeat <= 0:
            raise ValueError(f"heartbeat must be positive, got {self.heartbeat}")


def _check_count(shocks: Sequence[Sequence[int]], previous: Sequence[Sequence[int]] | None) -> None:
    if previous is not None and previous and shocks and len(shocks[0]) < len(previous[0]):
        raise ShocksRejected(
            "scenarios: count lowered while scenarios are in force"
            f" ({len(previous[0])} -> {len(shocks[0])})"
        )


def _check_shape(shocks: Sequence[Sequence[int]], g: ShockGuardrails) -> None:
    if len(shocks) != len(g.max_shock):
        raise ShocksRejected(
            f"scenarios: one shock word per market ({len(shocks)} markets of shocks for a group"
            f" of {len(g.max_shock)})"
        )
    counts = {len(row) for row in shocks}
    if len(counts) != 1 or not 1 <= counts.pop() <= MAX_SCENARIOS:
        raise ShocksRejected(
            f"scenarios: count must be 1 to {MAX_SCENARIOS} (every market needs the same"
            f" 1 to {MAX_SCENARIOS} shocks)"
        )


def check_shocks(
    shocks: Sequence[Sequence[int]],
    previous: Sequence[Sequence[int]] | None,
    g: ShockGuardrails,
) -> None:
    """Raise :class:`ShocksRejected` unless ``shocks[i][k]`` (market ``i``, scenario ``k``) is
    within the bound and, when there is a ``previous`` update, within the step of it."""
    _check_shape(shocks, g)
    _check_count(shocks, previous)
    for i, row in enumerate(shocks):
        prev_row = previous[i] if previous is not None else None
        for k, z in enumerate(row):
            check_shock(z)
            if abs(z) > g.max_shock[i]:
                raise ShocksRejected(
                    f"scenarios: shock beyond its bound (market {i} scenario {k}: |{z}| bps"
                    " above the bound)"
                )
            if prev_row is not None and k < len(prev_row):
                old = prev_row[k]
                if abs(z - old) > g.max_step[i]:
                    raise ShocksRejected(
                        "scenarios: shock moved beyond the step limit"
                        f" (market {i} scenario {k}: step {z - old} bps)"
                    )


def clamp_shocks(
    shocks: Sequence[Sequence[int]],
    previous: Sequence[Sequence[int]] | None,
    g: ShockGuardrails,
) -> list[list[int]]:
    """The update closest to ``shocks`` that :func:`check_shocks` accepts: each shock is
    clamped into ``[-max_shock_i, max_shock_i]`` and then, for a scenario of the previous
    update, into ``previous +/- max_step_i`` (a previous shock within the bound keeps the result
    within it). A lower count than the previous one is refused, never clamped."""
    _check_shape(shocks, g)
    _check_count(shocks, previous)
    out: list[list[int]] = []
    for i, row in enumerate(shocks):
        bound, step = g.max_shock[i], g.max_step[i]
        prev_row = previous[i] if previous is not None else None
        clamped = []
        for k, z in enumerate(row):
            z = max(-bound, min(bound, check_shock(z)))
            if prev_row is not None and k < len(prev_row):
                old = prev_row[k]
                z = max(old - step, min(old + step, z))
            clamped.append(z)
        out.append(clamped)
    return out


__all__ = [
    "BPS",
    "INT16_MAX",
    "INT16_MIN",
    "MAX_SCENARIOS",
    "GroupParams",
    "PortfolioMargin",
    "PortfolioPosition",
    "ShockGuardrails",
    "ShocksRejected",
    "account_requirements",
    "check_shock",
    "check_shocks",
    "clamp_shocks",
    "is_portfolio_eligible",
    "pack_shocks",
    "portfolio_margin",
    "portfolio_requirement",
    "scenario_loss",
    "scenarios_fresh",
    "signed_ceil_div",
    "unpack_shocks",
    "worst_scenario_loss",
]
