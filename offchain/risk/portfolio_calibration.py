"""The written rule that chooses K, the residual c, the floor phi and the shock guardrails on
data up to 2021-12-31 (the report period, 2022-2023, is never looked at here).

**Data.** Every group the rule is given (the project runs it on BTC/ETH from 2018 and on
BTC/ETH/SOL from SOL's listing in 2020-08), walked forward with the keeper's unclamped
scenarios (:func:`loose_config`), hours opening before 2022-01-01.

**Grid.** ``K`` from twice the number of markets to 16 in steps of 2 (each set built for its
own ``K``: market pairs, then gap-filling pairs, scaled to cover every direction); ``c`` from 0
to 0.30 in steps of 0.01; ``phi`` from 0.05 to 0.50 in steps of 0.05.

**Constraints**, on every group, for each of the families ``hedged_pair``, ``random``,
``concentrated`` and ``near_outright`` (``outright`` keeps the tiered sum and is not moved by
these parameters): breach rate <= 1% and Christoffersen independence p (the family's median, as
reported) >= 0.05.

**Objective.** The mean over groups and those families of the average margin saving versus the
tiered sum. For each ``(K, phi)`` the best ``c`` is the smallest feasible one (the saving falls
as ``c`` rises); the best ``(K, phi, c)`` maximises the objective; then the **smallest K whose
objective is within 0.5 points of the best** is chosen (fewer scenarios: less gas, less to
sign), with its own best ``(phi, c)``.

**Guardrails.** ``max_shock`` per market: 1.5 times the largest ``|shock|`` the keeper proposed
up to 2021 in any group, rounded up to 500 bps (room for a crash half again as large as any in
the sample before the bound clips it). ``max_step``: 1.5 times the largest change of one shock
between two consecutive hourly updates, rounded up to 100 bps (the keeper must be able to follow
a volatility spike within an hour; a larger spike is clamped, then caught up over the next
updates).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from offchain.protocol.portfolio_math import INT16_MAX, MAX_SCENARIOS
from offchain.risk.backtest import christoffersen
from offchain.risk.portfolio_backtest import (
    PreparedBacktest,
    book_margins,
    standard_families,
    worst_losses,
)
from offchain.risk.portfolio_config import CALIBRATION_END, PortfolioConfig, market_name

log = logging.getLogger("dmm.portfolio_calibration")

RULE_FAMILIES = ("hedged_pair", "random", "concentrated", "near_outright")


@dataclass(frozen=True)
class CalibrationRule:
    """The rule's constants (module docstring)."""

    families: tuple[str, ...] = RULE_FAMILIES
    max_breach_rate: float = 0.01
    min_christoffersen_p: float = 0.05
    residuals: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(31))
    floors: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 11))
    k_tolerance: float = 0.005
    bound_headroom: float = 1.5
    bound_round_bps: int = 500
    step_headroom: float = 1.5
    step_round_bps: int = 100


@dataclass(frozen=True)
class GridPoint:
    """One ``(K, phi)`` with its smallest feasible ``c`` (``None``: none on the grid)."""

    n_scenarios: int
    floor: float
    residual: float | None
    objective: float
    savings: dict[str, float]
    breach_rates: dict[str, float]
    christoffersen: dict[str, float]


def loose_config(config: PortfolioConfig) -> PortfolioConfig:
    """``config`` with K = 16 and guardrails that never bind: the keeper's raw proposals."""
    return dataclasses.replace(
        config,
        n_scenarios=MAX_SCENARIOS,
        max_shock_bps=(),
        default_max_shock_bps=INT16_MAX,
        max_step_bps=2**16,
    )


def k_options(n_markets: int) -> list[int]:
    """``2M, 2M + 2, ..., 16``: the market pairs, then every further gap-filling pair."""
    return list(range(2 * n_markets, MAX_SCENARIOS + 1, 2))


@dataclass(frozen=True)
class _Scored:
    loss: np.ndarray
    tiered: np.ndarray
    worst: dict[int, np.ndarray]
    eligible: np.ndarray
    fresh: np.ndarray


def _prepare_scores(prep: PreparedBacktest, families: Sequence[str], ks: Sequence[int]) -> dict:
    rows = prep.rows(None, CALIBRATION_END)
    out = {}
    for fam in standard_families(prep.markets):
        if fam.name not in families:
            continue
        w = fam.weights
        out[fam.name] = _Scored(
            loss=-(prep.moves[rows] @ w.T),
            tiered=prep.rates[rows] @ np.abs(w).T,
            worst={k: worst_losses(w, prep.replays[k].shocks[rows], [k])[k] for k in ks},
            eligible=fam.eligible,
            fresh=prep.fresh[rows],
        )
    return out


def _family_figures(s: _Scored, k: int, c: float, phi: float, p: float) -> tuple[float, float]:
    margin = book_margins(s.tiered, s.worst[k], s.eligible, s.fresh, c, phi)
    return float((s.loss > margin).mean()), float(np.mean(1 - margin / s.tiered))


def calibration_grid(
    preps: Sequence[PreparedBacktest], rule: CalibrationRule | None = None
) -> list[GridPoint]:
    """Every ``(K, phi)`` of the grid with its smallest feasible ``c`` and the objective."""
    rule = rule or CalibrationRule()
    ks = sorted(set.intersection(*(set(k_options(len(p.markets))) for p in preps)))
    scored = [_prepare_scores(p, rule.families, ks) for p in preps]
    p_tail = 1 - preps[0].config.confidence
    points = []
    for k in ks:
        for phi in rule.floors:
            found: GridPoint | None = None
            for c in rule.residuals:
                savings, breaches, chris = {}, {}, {}
                ok = True
                for g, group in enumerate(scored):
                    for name, s in group.items():
                        key = f"{'/'.join(preps[g].markets)} {name}"
                        breach, saving = _family_figures(s, k, c, phi, p_tail)
                        breaches[key], savings[key] = breach, saving
                        if breach > rule.max_breach_rate:
                            ok = False
                            break
                    if not ok:
                        break
                if not ok:
                    continue
                for g, group in enumerate(scored):
                    for name, s in group.items():
                        key = f"{'/'.join(preps[g].markets)} {name}"
                        margin = book_margins(s.tiered, s.worst[k], s.eligible, s.fresh, c, phi)
                        ps = [christoffersen(b, p_tail)[0].p_value for b in (s.loss > margin).T]
                        chris[key] = float(np.median(ps))
                        ok &= chris[key] >= rule.min_christoffersen_p
                if ok:
                    found = GridPoint(
                        k, phi, c, float(np.mean(list(savings.values()))), savings, breaches, chris
                    )
                    break
            points.append(found or GridPoint(k, phi, None, -math.inf, {}, {}, {}))
            log.info(
                "K=%d phi=%.2f: c=%s objective %.4f",
                k,
                phi,
                points[-1].residual,
                points[-1].objective,
            )
    return points


def choose(points: Sequence[GridPoint], rule: CalibrationRule | None = None) -> GridPoint:
    """The smallest ``K`` within ``k_tolerance`` of the best objective, at its best point."""
    rule = rule or CalibrationRule()
    feasible = [p for p in points if p.residual is not None]
    if not feasible:
        raise ValueError("no (K, phi, c) on the grid meets the constraints")
    best = max(p.objective for p in feasible)
    for k in sorted({p.n_scenarios for p in feasible}):
        at_k = max((p for p in feasible if p.n_scenarios == k), key=lambda p: p.objective)
        if at_k.objective >= best - rule.k_tolerance:
            return at_k
    raise AssertionError("unreachable: the best K is within tolerance of itself")


@dataclass(frozen=True)
class ShockStatistics:
    """The keeper's unclamped proposals up to 2021, per market name (bps)."""

    max_abs_shock: dict[str, int]
    max_step: dict[str, int]
    step_p999: dict[str, float]


def shock_statistics(preps: Sequence[PreparedBacktest]) -> ShockStatistics:
    """Largest ``|shock|``, largest change of one shock between consecutive pushed updates, and
    the 99.9th percentile of those changes, up to 2021 (the largest over the groups given)."""
    biggest: dict[str, int] = {}
    step: dict[str, int] = {}
    p999: dict[str, float] = {}
    for prep in preps:
        t = prep.history.timestamps
        keep = prep.replay.pushed & (t < CALIBRATION_END)
        z = prep.replay.shocks[keep]  # (U, K, M)
        consecutive = np.diff(t[keep]) <= prep.config.heartbeat
        dz = np.abs(np.diff(z, axis=0))[consecutive]
        for i, name in enumerate(prep.markets):
            biggest[name] = max(biggest.get(name, 0), int(np.abs(z[:, :, i]).max()))
            if len(dz):
                step[name] = max(step.get(name, 0), int(dz[:, :, i].max()))
                p999[name] = max(p999.get(name, 0.0), float(np.quantile(dz[:, :, i], 0.999)))
    return ShockStatistics(biggest, step, p999)


def propose_guardrails(
    stats: ShockStatistics, rule: CalibrationRule | None = None
) -> tuple[dict[str, int], int]:
    """``(max_shock per market, max_step)`` by the rule (module docstring)."""
    rule = rule or CalibrationRule()

    def up(x: float, unit: int) -> int:
        return int(math.ceil(x / unit) * unit)

    bounds = {
        m: min(INT16_MAX, up(rule.bound_headroom * v, rule.bound_round_bps))
        for m, v in stats.max_abs_shock.items()
    }
    step = up(rule.step_headroom * max(stats.max_step.values()), rule.step_round_bps)
    return bounds, step


def calibrated_config(
    base: PortfolioConfig, point: GridPoint, bounds: dict[str, int], step: int
) -> PortfolioConfig:
    """``base`` with the rule's ``K``, ``c``, ``phi`` and guardrails."""
    assert point.residual is not None
    return dataclasses.replace(
        base,
        n_scenarios=point.n_scenarios,
        residual=point.residual,
        floor=point.floor,
        max_shock_bps=tuple(sorted((market_name(m), b) for m, b in bounds.items())),
        default_max_shock_bps=max(bounds.values()),
        max_step_bps=step,
    )


__all__ = [
    "RULE_FAMILIES",
    "CalibrationRule",
    "GridPoint",
    "ShockStatistics",
    "calibrated_config",
    "calibration_grid",
    "choose",
    "k_options",
    "loose_config",
    "propose_guardrails",
    "shock_statistics",
]
