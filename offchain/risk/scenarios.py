"""Joint stress scenarios for a group of markets: multivariate filtered historical simulation.

The on-chain portfolio margin (:mod:`offchain.protocol.portfolio_math`) charges a cross
subaccount its worst loss over ``K <= 16`` joint price shocks, plus a residual. This module
chooses those shocks, the same way every hour for the keeper and for the backtest.

**Filtered joint distribution.** Each market's hourly log returns are standardised by its own
volatility filter, the single-market model's (:func:`offchain.risk.risk_measures.
variance_forecasts` with :data:`offchain.risk.calibration.RECOMMENDED_MODEL`):
``z_it = r_it / sigma_it``. The markets are joined on the hour
(:mod:`offchain.risk.joint_returns`; only hours where every market has a candle and its next
candle an hour later give a joint vector ``z_t``); the cross-sectional
vectors are kept as they are, so the dependence of the tails (crashes together, decouplings) is
the historical one, and today's shocks are ``sigma_{i,now} z_t`` (Barone-Adesi et al. 1999;
its multivariate form keeps each market's filter and the joint residual vectors). As in the
single-market model the vectors are pooled with their mirror images ``-z_t`` (one scenario set
serves longs and shorts), the pool is every vector up to now, and it is refreshed every
``refresh`` hours (24, the single-market FHS cadence); the volatilities move every hour.

**What a scenario is.** For an exposure direction ``u`` (vol-weighted positions, long > 0) the
portfolio loses ``-u.z``; its 99% loss is the empirical quantile ``q(u)`` over the pool. The
scenario *for* ``u`` is the mean joint move of the pool's tail for ``u`` (the ``ceil(1% n)``
vectors where ``u`` loses most), scaled so that ``u`` loses exactly ``q(u)``: a realistic joint
move (BTC falling with ETH falling about as the data say), not a move of one market with the
others frozen. For an elliptical law this is the point where the 99% ellipsoid touches the
plane ``-u.z = q(u)``, so it covers ``u`` exactly and its neighbours nearly (step 3 below then
scales it so that its neighbours are covered too).

**Which directions, and why K.** Scenarios come in +/- pairs, in this order:

1. **each market alone** (``BTC down``/``BTC up``, ...): ``u = e_i``; a one-market book is
   charged its own 99% move, as the single-market model charges it today (a near-outright book,
   made eligible by a token second position, is covered the same way);
2. **gap fillers** up to ``K``: the direction whose 99% loss the current set covers worst
   (smallest ``max_k -u.v_k / q(u)`` over a grid of directions) gets its pair, greedily; then
   each filler pair in turn moves to the grid direction that most raises the worst coverage,
   until no move helps. The grid is even in the whitened geometry of the pool
   (:func:`whitened_directions`), where an elliptical law's coverage is a cosine of angles. The
   gaps are mixes of the market direction and a spread, that is, imperfect hedges: the fillers
   put scenarios where those books would slip through;
3. **cover every direction** (:func:`cover_scales`): ``K`` points pinned at their own quantile
   leave the directions between them short (a polytope inside the 99% surface: on the
   BTC/ETH/SOL pool of 2020-2023 the worst direction is charged 78% of its 99% loss at
   ``K = 12``, 82% at ``K = 16``; BTC/ETH 96% and 98%). Each scenario is scaled up just enough
   that every grid direction it is the best cover for is charged its full 99% loss (factors of
   1.2-1.3 with three markets, 1.02-1.04 with two); the residual charge is left for what the
   grid and the sample cannot see.

The principal directions of the pool were tried as fixed scenarios too (between steps 1 and
2): with them the worst coverage at ``K = 16`` on BTC/ETH/SOL is 78.7% before scaling, without
them 82.1%; the fillers find better places than the spread axes. Shocks are packed 16 int16 to
one storage word per market, so on-chain a larger ``K`` costs no storage read, only a few hundred
gas of arithmetic per scenario, and every pair makes the scenarios fit the 99% surface more
closely (less scaling); the calibration rule (:mod:`offchain.risk.portfolio_calibration`) builds
the set for every ``K`` from ``2M`` to 16 and keeps a smaller ``K`` only if it does as well.

**Rounding and bounds.** A scenario's joint log move ``sigma_i sqrt(h) v_ki`` becomes a price
move ``exp(x) - 1`` (square-root-of-time for ``h > 1`` hours, as the single-market model) in
whole basis points, rounded away from zero (:func:`shocks_bps`), then clamped into the
governance bound and step limit (:func:`offchain.protocol.portfolio_math.clamp_shocks`). From
one refresh to the next the gap fillers are matched to the slots they held (:func:`match_slots`),
so a slot's shock moves with the volatility and does not jump between directions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from offchain.protocol.portfolio_math import BPS, INT16_MAX, INT16_MIN, MAX_SCENARIOS
from offchain.risk.joint_returns import JointHistory
from offchain.risk.risk_measures import check_confidence, tail_count

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DIRECTION_CHUNK = 64  # directions projected at once (bounds memory at N x 64 floats)


# ---------------------------------------------------------------------------------------------
# Directions and tails (pure)


def sphere_directions(m: int, spacing_degrees: float) -> FloatArray:
    """Unit vectors about ``spacing_degrees`` apart over one half of the sphere in ``R^m``
    (their mirrors make the other half): evenly spaced angles for ``m = 2``, a Fibonacci
    lattice for ``m = 3``, seeded Gaussian draws above (as many as ``m = 3`` would get)."""
    if m < 1 or not 0 < spacing_degrees <= 90:
        raise ValueError(f"need m >= 1 and spacing in (0, 90] degrees, got {m}, {spacing_degrees}")
    step = math.radians(spacing_degrees)
    n = max(2, math.ceil(math.pi / step)) if m == 2 else max(4, math.ceil(2 * math.pi / step**2))
    if m == 1:
        return np.ones((1, 1))
    if m == 2:
        a = (np.arange(n) + 0.5) * math.pi / n
        return np.column_stack((np.cos(a), np.sin(a)))
    if m == 3:
        k = np.arange(2 * n) + 0.5
        zc = 1 - 2 * k / (2 * n)
        phi = math.pi * (1 + math.sqrt(5)) * k
        r = np.sqrt(1 - zc**2)
        pts = np.column_stack((r * np.cos(phi), r * np.sin(phi), zc))
        return pts[zc > 0]
    x = np.random.default_rng(12345).standard_normal((n, m))
    x[x[:, 0] < 0] *= -1
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def whitened_directions(pool: FloatArray, spacing_degrees: float) -> FloatArray:
    """Exposure directions evenly spread in the pool's whitened geometry.

    With ``S = L L^T`` the pool's second moment, a book ``u`` loses ``(L^T u) . y`` on the
    whitened vector ``y = L^{-1} z``; for an elliptical law its coverage by the scenarios is the
    cosine of angles between the ``L^T u``. The grid is :func:`sphere_directions` in that space,
    mapped back (``u = L^{-T} a``, normalised), so that highly correlated markets do not leave
    the spread directions, where coverage changes fastest, between grid points.
    """
    x = np.asarray(pool, dtype=np.float64)
    a = sphere_directions(x.shape[1], spacing_degrees)
    try:
        chol = np.linalg.cholesky(x.T @ x / len(x))
    except np.linalg.LinAlgError:
        return a
    u = np.linalg.solve(chol.T, a.T).T
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def direction_tails(
    pool: FloatArray, directions: FloatArray, confidence: float
) -> tuple[FloatArray, FloatArray]:
    """The 99% loss of each direction and the joint move that pins it.

    For direction ``u`` (a row of ``directions``) the loss of ``z`` is ``-u.z``; with
    ``k = ceil(n (1 - c))`` and ``T(u)`` the ``k`` vectors of largest loss:

    .. math:: q(u) = \\min_{z \\in T(u)} -u \\cdot z, \\qquad
              v(u) = \\frac{q(u)}{ES(u)} \\frac1k \\sum_{z \\in T(u)} z, \\qquad
              ES(u) = \\frac1k \\sum_{z \\in T(u)} -u \\cdot z

    so that ``-u.v(u) = q(u)``.

    Returns
    -------
    q : ndarray, shape (D,)
    v : ndarray, shape (D, M)
    """
    check_confidence(confidence)
    x = np.asarray(pool, dtype=np.float64)
    d = np.atleast_2d(np.asarray(directions, dtype=np.float64))
    n = x.shape[0]
    if n == 0:
        raise ValueError("empty pool")
    k = tail_count(n, confidence)
    q = np.full(d.shape[0], np.nan)
    v = np.full(d.shape, np.nan)
    outer, reach = _outer_shell(x, d, k)
    if outer is not None:
        # Exact shortcut: a vector outside the shell loses at most ``reach(u)`` on ``u``; where
        # the shell's k-th largest loss is at least that, the tail lies inside the shell.
        _tails_into(x[outer], d, k, q, v)
        redo = ~(q >= reach)
        if redo.any():
            sub_q, sub_v = np.empty(redo.sum()), np.empty((redo.sum(), d.shape[1]))
            _tails_into(x, d[redo], k, sub_q, sub_v)
            q[redo], v[redo] = sub_q, sub_v
    else:
        _tails_into(x, d, k, q, v)
    return q, v


SHELL_SHARE = 0.15  # the outer share of the pool (in whitened norm) searched first


def _outer_shell(
    x: FloatArray, d: FloatArray, k: int
) -> tuple[npt.NDArray[np.intp] | None, FloatArray]:
    """Indices of the pool's outer shell in whitened norm and, per direction, the largest loss
    a vector outside it can have (``|L^T u| r`` with ``Sigma = L L^T`` and ``r`` the shell's
    inner radius); ``None`` when the pool is too small or degenerate for the shortcut."""
    n = x.shape[0]
    size = max(int(SHELL_SHARE * n), 4 * k)
    if size >= n // 2 or n < 1000:
        return None, np.full(d.shape[0], np.inf)
    try:
        chol = np.linalg.cholesky(x.T @ x / n)
    except np.linalg.LinAlgError:
        return None, np.full(d.shape[0], np.inf)
    y_norm = np.linalg.norm(np.linalg.solve(chol, x.T), axis=0)
    outer = np.argpartition(y_norm, n - size)[n - size :]
    radius = float(y_norm[outer].min())
    reach = np.linalg.norm(d @ chol, axis=1) * radius
    return outer, reach


def _tails_into(x: FloatArray, d: FloatArray, k: int, q: FloatArray, v: FloatArray) -> None:
    """:func:`direction_tails` on ``x`` with the tail size ``k`` given, written into ``q, v``."""
    n = x.shape[0]
    for lo in range(0, d.shape[0], DIRECTION_CHUNK):
        u = d[lo : lo + DIRECTION_CHUNK]
        loss = -(x @ u.T)  # (n, D)
        top = np.argpartition(loss, n - k, axis=0)[n - k :]  # (k, D)
        tail_loss = np.take_along_axis(loss, top, axis=0)
        qs = tail_loss.min(axis=0)
        es = tail_loss.mean(axis=0)
        mean_move = x[top].mean(axis=0)  # (D, M)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(es > 0, qs / es, 0.0)
        q[lo : lo + len(u)] = qs
        v[lo : lo + len(u)] = mean_move * scale[:, None]


def coverage(scenarios: FloatArray, directions: FloatArray, q: FloatArray) -> FloatArray:
    """``max(0, max_k -u.v_k) / q(u)`` per direction: the share of each direction's 99% loss
    the scenarios charge (1 = covered exactly)."""
    worst = np.maximum(0.0, np.max(-(np.asarray(directions) @ np.asarray(scenarios).T), axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q > 0, worst / q, np.inf)


@dataclass(frozen=True)
class StandardScenarios:
    """Joint moves in units of each market's volatility (log returns over one hour).

    ``vectors[k]`` is scenario ``k``; ``directions[k]`` the exposure (unit vector) whose 99%
    loss ``quantiles[k]`` it pins; ``worst_coverage`` the smallest :func:`coverage` over the
    direction grid (what the residual charge must make up).
    """

    vectors: FloatArray
    directions: FloatArray
    quantiles: FloatArray
    labels: tuple[str, ...]
    worst_coverage: float

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, k: int) -> StandardScenarios:
        """The first ``k`` scenarios (the choice of a smaller ``K``)."""
        return StandardScenarios(
            self.vectors[:k], self.directions[:k], self.quantiles[:k], self.labels[:k], math.nan
        )


def choose_scenarios(
    pool: FloatArray,
    markets: Sequence[str],
    n_scenarios: int = MAX_SCENARIOS,
    confidence: float = 0.99,
    spacing_degrees: float = 8.0,
    symmetric: bool = False,
    bound: bool = True,
) -> StandardScenarios:
    """Market +/- pairs, then gap-filling pairs, scaled to cover every direction (module
    docstring); :func:`choose_scenario_sets` for one ``K``."""
    return choose_scenario_sets(
        pool, markets, (n_scenarios,), confidence, spacing_degrees, symmetric, bound
    )[n_scenarios]


def choose_scenario_sets(
    pool: FloatArray,
    markets: Sequence[str],
    ks: Sequence[int],
    confidence: float = 0.99,
    spacing_degrees: float = 8.0,
    symmetric: bool = False,
    bound: bool = True,
) -> dict[int, StandardScenarios]:
    """One scenario set per ``K`` in ``ks``, sharing the direction grid's tails.

    ``pool`` holds the joint residual vectors. With ``symmetric`` (the pool is closed under
    ``z -> -z``) the grid's mirrored half is not recomputed: ``q(-u) = q(u)`` and
    ``v(-u) = -v(u)``. With ``bound`` each scenario is scaled up just enough that every grid
    direction is charged at least its 99% loss (:func:`cover_scales`).
    """
    x = np.asarray(pool, dtype=np.float64)
    m = x.shape[1]
    if len(markets) != m:
        raise ValueError(f"{len(markets)} market names for {m} columns")
    for k in ks:
        if not 2 * m <= k <= MAX_SCENARIOS:
            raise ValueError(f"n_scenarios must lie in [{2 * m}, {MAX_SCENARIOS}], got {k}")
    half = whitened_directions(x, spacing_degrees)
    grid = np.vstack((half, -half))
    if symmetric:
        half_q, half_v = direction_tails(x, half, confidence)
        grid_q, grid_v = np.concatenate((half_q, half_q)), np.vstack((half_v, -half_v))
    else:
        grid_q, grid_v = direction_tails(x, grid, confidence)
    axes = np.repeat(np.eye(m), 2, axis=0) * np.tile([1.0, -1.0], m)[:, None]
    axis_labels = [f"{name} {side}" for name in markets for side in ("down", "up")]
    axis_q, axis_v = direction_tails(x, axes, confidence)
    out = {}
    for k in ks:
        fills = _gap_fillers(axis_v, grid, grid_q, grid_v, k - 2 * m)
        dirs = np.vstack((axes, grid[fills])) if fills else axes
        q = np.concatenate((axis_q, grid_q[fills]))
        v = np.vstack((axis_v, grid_v[fills])) if fills else axis_v
        labels = (*axis_labels, *(f"gap{j // 2 + 1}{'-+'[j % 2]}" for j in range(len(fills))))
        if bound:
            v = v * cover_scales(v, grid, grid_q)[:, None]
        worst = float(np.min(coverage(v, grid, grid_q)))
        out[k] = StandardScenarios(v, dirs, q, labels, worst)
    return out


def cover_scales(vectors: FloatArray, grid: FloatArray, grid_q: FloatArray) -> FloatArray:
    """Per-scenario factors ``s_k >= 1`` such that every grid direction is charged at least its
    99% loss: ``max_k s_k (-u.v_k) >= q(u)``.

    Each direction is assigned to the scenario that charges it most (after scaling) and
    ``s_k = max(1, max_{u in cell k} q(u) / -u.v_k)``; the assignment and the factors are
    iterated (at most 20 rounds) and the round with the smallest mean factor is kept. Every
    round's factors cover the whole grid, so the result does too.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(-(np.asarray(grid) @ np.asarray(vectors).T), 0.0) / grid_q[:, None]
    ratio = np.nan_to_num(ratio, nan=0.0, posinf=0.0)
    k = ratio.shape[1]
    scale = np.ones(k)
    best = None
    for _ in range(20):
        cell = np.argmax(ratio * scale, axis=1)
        covered = ratio[np.arange(len(cell)), cell] > 0
        need = np.ones(k)
        np.maximum.at(need, cell[covered], 1.0 / ratio[covered, cell[covered]])
        if best is None or need.mean() < best.mean():
            best = need
        if np.allclose(need, scale):
            break
        scale = need
    return best if best is not None else scale


def _gap_fillers(
    base: FloatArray, grid: FloatArray, grid_q: FloatArray, grid_v: FloatArray, count: int
) -> list[int]:
    """Grid indices of ``count`` gap fillers (mirrored pairs, ``grid[i + H] = -grid[i]``).

    Greedy first (each pair at the worst-covered direction), then swaps: each pair in turn
    moves to the grid direction that most raises the worst coverage, until no swap helps.
    """
    if count <= 0:
        return []
    half = len(grid) // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(-(grid @ grid_v.T), 0.0) / grid_q[:, None]  # (G, G): g under c
    ratio = np.nan_to_num(ratio, nan=np.inf)
    fixed = coverage(base, grid, grid_q)
    pair_cover = np.maximum(ratio[:, :half], ratio[:, half:])  # (G, H): pair c, c + H
    pairs: list[int] = []
    for _ in range(count // 2):
        cover = np.max([fixed, *(pair_cover[:, c] for c in pairs)], axis=0)
        c = int(np.argmin(cover)) % half
        pairs.append(c)
    for _ in range(5):
        improved = False
        for i in range(len(pairs)):
            others = np.max(
                [fixed, *(pair_cover[:, c] for j, c in enumerate(pairs) if j != i)], axis=0
            )
            trial = np.minimum.reduce(np.maximum(others[:, None], pair_cover), axis=0)  # (H,)
            now = float(np.min(np.maximum(others, pair_cover[:, pairs[i]])))
            best = int(np.argmax(trial))
            if trial[best] > now + 1e-12:
                pairs[i], improved = best, True
        if not improved:
            break
    out = [idx for c in pairs for idx in (c, c + half)]
    if count % 2:
        cover = np.max([fixed, *(pair_cover[:, c] for c in pairs)], axis=0)
        out.append(int(np.argmin(cover)))
    return out


def match_slots(
    new: StandardScenarios, previous: StandardScenarios, fixed: int
) -> StandardScenarios:
    """Reorder the pairs after the first ``fixed`` scenarios so that each takes the slot of the
    previous pair it is closest to (sum of absolute moves, either orientation).

    The chain stores shocks by slot and bounds the step of each slot; without matching, a gap
    filler that moves to another region would change its slot by a whole scenario.
    """
    k = len(new)
    if len(previous) != k or k - fixed < 4:
        return new
    slots = [tuple(range(i, min(i + 2, k))) for i in range(fixed, k, 2)]

    def moved(src: Sequence[int], dst: Sequence[int]) -> float:
        if len(src) != len(dst):
            return math.inf
        return float(
            sum(
                np.abs(new.vectors[a] - previous.vectors[b]).sum()
                for a, b in zip(src, dst, strict=True)
            )
        )

    straight = np.array([[moved(a, b) for b in slots] for a in slots])
    swapped = np.array([[moved(a[::-1], b) for b in slots] for a in slots])
    rows, cols = linear_sum_assignment(np.minimum(straight, swapped))
    order = list(range(k))
    for r, c in zip(rows, cols, strict=True):
        src = slots[r][::-1] if swapped[r, c] < straight[r, c] else slots[r]
        for dst, s in zip(slots[c], src, strict=True):
            order[dst] = s
    idx = np.array(order)
    return StandardScenarios(
        new.vectors[idx],
        new.directions[idx],
        new.quantiles[idx],
        tuple(new.labels[i] for i in idx),
        new.worst_coverage,
    )


def shocks_bps(vectors: FloatArray, sigma: FloatArray, horizon: int = 1) -> IntArray:
    """Price moves in whole basis points, rounded away from zero, int16-saturated.

    .. math:: z_{ki} = \\operatorname{sign}(m)\\lceil 10^4 |m| \\rceil,
              \\quad m = \\exp(\\sigma_i \\sqrt h \\, v_{ki}) - 1

    ``vectors`` is ``(..., K, M)`` and ``sigma`` broadcasts against ``(..., M)``.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 hour, got {horizon}")
    v = np.asarray(vectors, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)[..., None, :]
    move = np.expm1(s * math.sqrt(horizon) * v) * BPS
    # 1e-9 bp of slack so that a move of exactly n bps (in floating point) stays n
    out = np.sign(move) * np.ceil(np.abs(move) - 1e-9)
    return np.clip(np.nan_to_num(out), INT16_MIN, INT16_MAX).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Design and walk-forward


@dataclass(frozen=True)
class ScenarioDesign:
    """How the keeper chooses scenarios.

    Parameters
    ----------
    n_scenarios
        ``K``, between twice the number of markets and 16.
    confidence
        The loss quantile each scenario pins.
    horizon
        Liquidation horizon in hours (the single-market model's).
    symmetric
        Pool the joint residuals with their mirror images (as the single-market model).
    refresh
        Hours between two re-estimations of the scenarios' joint moves.
    min_obs
        Joint residual vectors needed before the first scenario set.
    window
        Most recent joint vectors in the pool (``None``: all).
    spacing_degrees
        Angle between neighbours of the direction grid searched for coverage gaps (8 degrees:
        a direction between grid points is at most 4 degrees away, 0.25% of its loss).
    bound
        Scale the scenarios so that every grid direction is charged its 99% loss
        (:func:`cover_scales`); without it each scenario pins its own direction only.
    """

    n_scenarios: int = MAX_SCENARIOS
    confidence: float = 0.99
    horizon: int = 1
    symmetric: bool = True
    refresh: int = 24
    min_obs: int = 720
    window: int | None = None
    spacing_degrees: float = 8.0
    bound: bool = True

    def __post_init__(self) -> None:
        check_confidence(self.confidence)
        if not 2 <= self.n_scenarios <= MAX_SCENARIOS:
            raise ValueError(f"n_scenarios must lie in [2, 16], got {self.n_scenarios}")
        if not 1 <= self.horizon <= 168:
            raise ValueError(f"horizon must be 1 to 168 hours, got {self.horizon}")
        if self.refresh < 1:
            raise ValueError(f"refresh must be at least 1 hour, got {self.refresh}")
        if self.min_obs < 100:
            raise ValueError(f"min_obs must be at least 100, got {self.min_obs}")
        if self.window is not None and self.window < self.min_obs:
            raise ValueError(f"window ({self.window}) below min_obs ({self.min_obs})")
        if not 0 < self.spacing_degrees <= 45:
            raise ValueError(f"spacing_degrees must lie in (0, 45], got {self.spacing_degrees}")

    def pool(self, residual: FloatArray) -> FloatArray:
        """The pool from joint residual rows (NaN rows dropped, window, mirror)."""
        x = np.asarray(residual, dtype=np.float64)
        x = x[np.all(np.isfinite(x), axis=1)]
        if self.window is not None:
            x = x[-self.window :]
        return np.concatenate((x, -x)) if self.symmetric else x


def pool_at(history: JointHistory, row: int, design: ScenarioDesign) -> FloatArray:
    """The pool the keeper has after the close of candle ``row``: residuals of rows before it
    (the residual of row ``j`` needs the close of row ``j + 1``)."""
    return design.pool(history.residual[:row])


def latest_scenarios(
    history: JointHistory, design: ScenarioDesign, row: int | None = None
) -> tuple[StandardScenarios, IntArray]:
    """The scenarios and their shocks (bps, ``(K, M)``) after the close of candle ``row``
    (default: the last one). Raises ``ValueError`` while the pool is too short."""
    row = len(history) - 1 if row is None else row
    pool = pool_at(history, row, design)
    if len(pool) < design.min_obs * (2 if design.symmetric else 1):
        raise ValueError(
            f"{len(pool)} joint residual vectors up to row {row}; need {design.min_obs}"
        )
    std = choose_scenarios(
        pool,
        history.markets,
        design.n_scenarios,
        design.confidence,
        design.spacing_degrees,
        design.symmetric,
        design.bound,
    )
    return std, shocks_bps(std.vectors, history.sigma[row], design.horizon)


def first_refresh_row(history: JointHistory, design: ScenarioDesign) -> int | None:
    """The first row whose pool holds ``min_obs`` joint residual vectors (the first scenario
    set), or ``None`` while the history is too short."""
    valid_before = np.concatenate(([0], np.cumsum(history.valid)))
    first = int(np.searchsorted(valid_before, design.min_obs))
    return first if first < len(history) else None


def refresh_row_at(history: JointHistory, design: ScenarioDesign, row: int) -> int | None:
    """The row of the scenario set in force after the close of ``row``: the last refresh at or
    before it on the schedule ``first, first + refresh, ...`` (``None`` before the first)."""
    first = first_refresh_row(history, design)
    if first is None or row < first:
        return None
    return first + (row - first) // design.refresh * design.refresh


def refresh_scenarios(
    history: JointHistory,
    design: ScenarioDesign,
    row: int,
    ks: Sequence[int],
    previous: dict[int, StandardScenarios],
) -> dict[int, StandardScenarios]:
    """The scenario sets chosen at a refresh ``row`` (from the pool before it), each gap-filler
    slot matched to the slot it held in ``previous`` (same ``K``): one step of
    :func:`walk_forward_vectors`, and what the keeper runs at each refresh."""
    m = len(history.markets)
    chosen = choose_scenario_sets(
        pool_at(history, row, design),
        history.markets,
        ks,
        design.confidence,
        design.spacing_degrees,
        design.symmetric,
        design.bound,
    )
    out = {}
    for k, std in chosen.items():
        out[k] = match_slots(std, previous[k], 2 * m) if k in previous else std
    return out


def walk_forward_vectors(
    history: JointHistory,
    design: ScenarioDesign,
    progress: bool = False,
    ks: Sequence[int] | None = None,
) -> tuple[dict[int, FloatArray], BoolArray, list[StandardScenarios]]:
    """Standardised scenarios in force after each row's close, refreshed every ``refresh``
    rows from the data up to the refresh (:func:`refresh_scenarios`), slots matched across
    refreshes.

    Returns
    -------
    vectors : dict of ndarray, shape (T, K, M)
        Per ``K`` in ``ks`` (default: the design's); NaN before the first set.
    ready : ndarray of bool, shape (T,)
    sets : list of StandardScenarios
        The design's ``K``, one per refresh (for reports).
    """
    from tqdm import tqdm

    ks = list(ks) if ks is not None else [design.n_scenarios]
    if design.n_scenarios not in ks:
        ks.append(design.n_scenarios)
    n, m = len(history), len(history.markets)
    out = {k: np.full((n, k, m), np.nan) for k in ks}
    ready = np.zeros(n, dtype=bool)
    first = first_refresh_row(history, design)
    sets: list[StandardScenarios] = []
    previous: dict[int, StandardScenarios] = {}
    refreshes = range(n if first is None else first, n, design.refresh)
    for row in tqdm(refreshes, desc="scenarios", unit="refresh", disable=not progress, leave=False):
        previous = refresh_scenarios(history, design, row, ks, previous)
        for k, std in previous.items():
            out[k][row : row + design.refresh] = std.vectors
        sets.append(previous[design.n_scenarios])
        ready[row : row + design.refresh] = True
    return out, ready, sets


def walk_forward_shocks(
    history: JointHistory, vectors: FloatArray, design: ScenarioDesign
) -> IntArray:
    """The shocks (bps, ``(T, K, M)``) the keeper would compute after each row's close: the
    standardised scenarios in force scaled by that hour's volatilities (zero where none)."""
    safe = np.nan_to_num(vectors)
    return shocks_bps(safe, history.sigma, design.horizon)


__all__ = [
    "ScenarioDesign",
    "StandardScenarios",
    "choose_scenario_sets",
    "choose_scenarios",
    "cover_scales",
    "coverage",
    "direction_tails",
    "first_refresh_row",
    "latest_scenarios",
    "match_slots",
    "pool_at",
    "refresh_row_at",
    "refresh_scenarios",
    "shocks_bps",
    "sphere_directions",
    "walk_forward_shocks",
    "walk_forward_vectors",
    "whitened_directions",
]
