"""Walk-forward backtest of the portfolio margin against the plain tiered sum.

For each hour ``j`` (a candle every market of the group shares), after the warm-up:

1. **tiered rates**: each market's maintenance rate in force after the close of candle ``j``,
   exactly the single-market backtest's (:func:`single_market_rates` calls
   :func:`offchain.risk.backtest.run_backtest` with its frozen configuration, so a new
   single-market model changes these results by itself);
2. **scenarios**: the keeper's joint shocks from the data up to that close
   (:mod:`offchain.risk.scenarios`), rounded outward to basis points and clamped into the
   group's guardrails against the previous signed update
   (:func:`offchain.protocol.portfolio_math.clamp_shocks`, :func:`replay_keeper`); the group is
   fresh while the last signed update is at most ``heartbeat`` old (:func:`fresh_rows`);
3. **margin** of a book with signed notional weights ``w`` (gross ``sum |w_i| = 1``), per unit
   of gross notional: ``T = sum_i |w_i| rate_i``,
   ``L = max(0, max_k -sum_i w_i z_ik / 10^4)``, ``P = max(L + c T, phi T)`` and
   ``min(T, P)`` when the book is eligible (two positions or more, fresh scenarios), ``T``
   otherwise (:func:`book_margins`; the integer formula is
   :func:`offchain.protocol.portfolio_math.portfolio_margin`, equal to this up to wei rounding);
4. **loss** over the next ``h`` hours, ``-sum_i w_i (P_{i,j+h} / P_{i,j} - 1)``; a loss above the
   margin is a breach.

Portfolio families (:func:`standard_families`): ``outright`` (one position, each market, long
and short: the tiered sum by the eligibility rule), ``hedged_pair`` (the first two markets,
BTC long / ETH short at equal notional and the reverse), ``random`` (64 books: two markets or
more, random signs, Dirichlet(1) weights, seed 7), ``concentrated`` (90% in one market, 10% in
another, every pair and sign), ``near_outright`` (99% / 1%: an outright position made eligible
by a token second position, the cheapest way to game the eligibility rule) and ``adversarial``
when a search result is given (:mod:`offchain.risk.portfolio_search`).

Per family (:class:`FamilyResult`): ``breach_rate`` over all its books and hours; ``kupiec_p``
and ``christoffersen_p``, the **median** over its books of each book's Kupiec and Christoffersen
independence p-values (the books of a family share their hours, so pooling them as independent
draws would count one crash hour as dozens of observations; the median reads "the typical book
of the family"), with the **minimum** and the largest book breach rate beside them;
``avg_margin_saving_vs_tiered``, the mean over hours and books of ``1 - margin / T``;
``total_shortfall`` and ``tiered_total_shortfall``, the sum over hours of the loss beyond the
margin (portfolio, resp. tiered sum) as a fraction of gross notional, averaged over the books.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from offchain.protocol.portfolio_math import ShockGuardrails, clamp_shocks
from offchain.risk.backtest import BacktestConfig, christoffersen, kupiec_pof, run_backtest
from offchain.risk.joint_returns import JointHistory, joint_history
from offchain.risk.portfolio_config import (
    CALIBRATION_END,
    FROZEN_PORTFOLIO,
    PortfolioConfig,
    market_name,
)
from offchain.risk.portfolio_search import AdversarialResult
from offchain.risk.prices import HOUR, Candles
from offchain.risk.scenarios import (
    ScenarioDesign,
    StandardScenarios,
    walk_forward_shocks,
    walk_forward_vectors,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

log = logging.getLogger("dmm.portfolio_backtest")

SPEC_FAMILY_KEYS = (
    "breach_rate",
    "kupiec_p",
    "christoffersen_p",
    "avg_margin_saving_vs_tiered",
    "total_shortfall",
    "tiered_total_shortfall",
)
ROW_CHUNK = 2048


# ---------------------------------------------------------------------------------------------
# Families


@dataclass(frozen=True)
class Family:
    """Books with signed notional weights, one row each, gross ``sum |w| = 1``."""

    name: str
    weights: FloatArray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        w = np.asarray(self.weights)
        if w.ndim != 2 or len(w) != len(self.labels) or len(w) == 0:
            raise ValueError(f"family {self.name}: weights must be (books, markets) with labels")
        if not np.allclose(np.abs(w).sum(axis=1), 1.0):
            raise ValueError(f"family {self.name}: every book needs gross weight 1")

    @property
    def eligible(self) -> BoolArray:
        """Books with two positions or more (the portfolio formula may apply)."""
        return np.count_nonzero(self.weights, axis=1) >= 2


def _book_label(w: FloatArray, markets: Sequence[str]) -> str:
    return " ".join(f"{x:+.0%} {m}" for x, m in zip(w, markets, strict=True) if x != 0)


def _dominant_books(m: int, share: float) -> FloatArray:
    """``share`` of the gross in one market and the rest in another, every pair and sign."""
    books = []
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            for si in (1.0, -1.0):
                for sj in (1.0, -1.0):
                    w = np.zeros(m)
                    w[i], w[j] = share * si, (1 - share) * sj
                    books.append(w)
    return np.array(books)


def standard_families(markets: Sequence[str], n_random: int = 64, seed: int = 7) -> list[Family]:
    """``outright``, ``hedged_pair``, ``random``, ``concentrated`` and ``near_outright``
    (module docstring)."""
    m = len(markets)
    if m < 2:
        raise ValueError(f"need at least two markets, got {m}")
    eye = np.eye(m)
    outright = np.vstack((eye, -eye))
    pair = np.zeros((2, m))
    pair[0, :2] = (0.5, -0.5)
    pair[1, :2] = (-0.5, 0.5)
    rng = np.random.default_rng(seed)
    rand = np.zeros((n_random, m))
    for b in range(n_random):
        count = int(rng.integers(2, m + 1))
        chosen = rng.choice(m, size=count, replace=False)
        rand[b, chosen] = rng.dirichlet(np.ones(count)) * rng.choice((-1.0, 1.0), size=count)
    out = []
    for name, w in (
        ("outright", outright),
        ("hedged_pair", pair),
        ("random", rand),
        ("concentrated", _dominant_books(m, 0.9)),
        ("near_outright", _dominant_books(m, 0.99)),
    ):
        out.append(Family(name, w, tuple(_book_label(row, markets) for row in w)))
    return out


# ---------------------------------------------------------------------------------------------
# Inputs: tiered rates, keeper replay


def single_market_rates(
    candles: Sequence[Candles], history: JointHistory, horizon: int, progress: bool = False
) -> FloatArray:
    """Each market's maintenance rate in force after the close of every joint row (NaN where
    the single-market backtest has none: its warm-up and last ``horizon`` hours).

    One call of :func:`offchain.risk.backtest.run_backtest` per market with its frozen
    configuration (recommended model only): the rate the registry would have in force.
    """
    out = np.full((len(history), len(candles)), np.nan)
    for i, c in enumerate(candles):
        result = run_backtest(c, BacktestConfig(horizon=horizon, candidates=()), progress=progress)
        opens = result.times - HOUR  # rates are stamped at their candle's close
        pos = np.searchsorted(opens, history.timestamps)
        pos = np.clip(pos, 0, len(opens) - 1)
        hit = opens[pos] == history.timestamps
        out[hit, i] = result.margins["recommended"][pos[hit]]
    return out


@dataclass(frozen=True)
class KeeperReplay:
    """What the group held after each row's close: the signed shocks (bps, ``(T, K, M)``),
    whether an update was pushed then, and how often the guardrails clamped the proposal."""

    shocks: IntArray
    pushed: BoolArray
    clamped_updates: int
    clamped_shocks: int


def replay_keeper(
    proposed: IntArray, ready: BoolArray, guardrails: ShockGuardrails
) -> KeeperReplay:
    """Sign every ready hour's proposal, clamped against the previous signed update.

    Hours before the first proposal hold nothing (zeros, never pushed). As the registry does,
    the step limit binds only while the previous update is in force (pushed at most
    ``heartbeat`` seconds, here whole hours, before); after a gap the group starts afresh.
    """
    n = len(proposed)
    if _never_clamped(proposed, ready, guardrails):
        held = np.where(ready[:, None, None], proposed, 0)
        idx = np.maximum.accumulate(np.where(ready, np.arange(n), -1))
        held = np.where((idx >= 0)[:, None, None], held[np.maximum(idx, 0)], 0)
        return KeeperReplay(held, np.asarray(ready, dtype=bool).copy(), 0, 0)
    held = np.zeros_like(proposed)
    pushed = np.zeros(n, dtype=bool)
    previous: list[list[int]] | None = None
    last_push = -1
    in_force_hours = guardrails.heartbeat // HOUR
    clamped_updates = clamped_shocks = 0
    for j in range(n):
        if not ready[j]:
            if previous is not None:
                held[j] = np.array(previous).T
            continue
        by_market = proposed[j].T.tolist()  # (M, K) as the chain stores it
        in_force = previous if last_push >= 0 and j - last_push <= in_force_hours else None
        signed = clamp_shocks(by_market, in_force, guardrails)
        last_push = j
        diff = int(np.count_nonzero(np.array(signed) != np.array(by_market)))
        clamped_shocks += diff
        clamped_updates += diff > 0
        previous = signed
        held[j] = np.array(signed).T
        pushed[j] = True
    return KeeperReplay(held, pushed, clamped_updates, clamped_shocks)


def _never_clamped(proposed: IntArray, ready: BoolArray, g: ShockGuardrails) -> bool:
    """Whether every ready proposal is inside the bounds and the step from the one before (the
    replay is then the proposals themselves; the calibration's loose guardrails)."""
    z = np.asarray(proposed)[np.asarray(ready, dtype=bool)]
    if len(z) == 0:
        return True
    bound = np.asarray(g.max_shock)[None, None, :]
    step = np.asarray(g.max_step)[None, None, :]
    return bool(np.all(np.abs(z) <= bound) and np.all(np.abs(np.diff(z, axis=0)) <= step))


def fresh_rows(timestamps: IntArray, pushed: BoolArray, heartbeat: int) -> BoolArray:
    """Whether the group is fresh right after each row's close: its last update (landing at
    the close of the row that pushed it) is at most ``heartbeat`` seconds old."""
    close = np.asarray(timestamps, dtype=np.int64) + HOUR
    last = np.where(pushed, close, np.iinfo(np.int64).min)
    last = np.maximum.accumulate(last)
    return (last > np.iinfo(np.int64).min) & (close - last <= heartbeat)


# ---------------------------------------------------------------------------------------------
# Margins of books (vectorised over hours and books)


def scenario_losses(weights: FloatArray, shocks: IntArray) -> FloatArray:
    """``-sum_i w_pi z_eki / 10^4``: each book's loss (fraction of gross) in each scenario,
    shape ``(E, K, P)`` for shocks ``(E, K, M)`` and weights ``(P, M)``."""
    return -np.einsum("ekm,pm->ekp", np.asarray(shocks, dtype=np.float64), weights) / 1e4


def worst_losses(weights: FloatArray, shocks: IntArray, ks: Sequence[int]) -> dict[int, FloatArray]:
    """``L`` of each book on each hour using only the first ``K`` scenarios, for each ``K`` in
    ``ks``: ``{K: (E, P)}``."""
    e = len(shocks)
    out = {k: np.empty((e, len(weights))) for k in ks}
    for lo in range(0, e, ROW_CHUNK):
        per = scenario_losses(weights, shocks[lo : lo + ROW_CHUNK])
        running = np.maximum.accumulate(np.maximum(per, 0.0), axis=1)
        for k in ks:
            out[k][lo : lo + ROW_CHUNK] = running[:, k - 1]
    return out


def book_margins(
    tiered: FloatArray,
    worst: FloatArray,
    eligible: BoolArray,
    fresh: BoolArray,
    residual: float,
    floor: float,
) -> FloatArray:
    """``min(T, max(L + c T, phi T))`` where the book is eligible and the group fresh, else
    ``T`` (arrays ``(E, P)``, ``eligible`` per book, ``fresh`` per hour)."""
    portfolio = np.minimum(tiered, np.maximum(worst + residual * tiered, floor * tiered))
    use = np.asarray(fresh)[:, None] & np.asarray(eligible)[None, :]
    return np.where(use, portfolio, tiered)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FamilyResult:
    """One family's figures over one window (see the module docstring)."""

    name: str
    books: int
    hours: int
    breach_rate: float
    kupiec_p: float
    christoffersen_p: float
    kupiec_p_min: float
    christoffersen_p_min: float
    breach_rate_max: float
    avg_margin_saving_vs_tiered: float
    total_shortfall: float
    tiered_total_shortfall: float
    tiered_breach_rate: float
    avg_margin: float
    avg_tiered: float

    def spec_dict(self) -> dict[str, float]:
        """SPEC.md's keys first, then the figures behind them."""
        keys = (
            *SPEC_FAMILY_KEYS,
            "kupiec_p_min",
            "christoffersen_p_min",
            "breach_rate_max",
            "tiered_breach_rate",
            "avg_margin",
            "avg_tiered",
        )
        out: dict[str, float] = {k: float(getattr(self, k)) for k in keys}
        out["books"] = self.books
        return out


def family_result(
    name: str, loss: FloatArray, margin: FloatArray, tiered: FloatArray, p: float
) -> FamilyResult:
    """Figures of a family from its ``(E, P)`` losses, margins and tiered sums."""
    breach = loss > margin
    kup, ind = [], []
    for b in breach.T:
        kup.append(kupiec_pof(b, p).p_value)
        ind.append(christoffersen(b, p)[0].p_value)
    return FamilyResult(
        name=name,
        books=loss.shape[1],
        hours=loss.shape[0],
        breach_rate=float(breach.mean()),
        kupiec_p=float(np.median(kup)),
        christoffersen_p=float(np.median(ind)),
        kupiec_p_min=float(np.min(kup)),
        christoffersen_p_min=float(np.min(ind)),
        breach_rate_max=float(breach.mean(axis=0).max()),
        avg_margin_saving_vs_tiered=float(np.mean(1 - margin / tiered)),
        total_shortfall=float(np.clip(loss - margin, 0, None).sum(axis=0).mean()),
        tiered_total_shortfall=float(np.clip(loss - tiered, 0, None).sum(axis=0).mean()),
        tiered_breach_rate=float((loss > tiered).mean()),
        avg_margin=float(margin.mean()),
        avg_tiered=float(tiered.mean()),
    )


@dataclass(frozen=True)
class Period:
    """A window of evaluated hours and its family figures."""

    name: str
    start: int
    end: int
    hours: int
    families: dict[str, FamilyResult]

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.start,
            "to": self.end,
            "hours": self.hours,
            "families": {k: f.spec_dict() for k, f in self.families.items()},
        }


@dataclass(frozen=True)
class PreparedBacktest:
    """Everything that does not depend on ``c`` and ``phi`` (built once, scored many times)."""

    history: JointHistory
    config: PortfolioConfig
    rates: FloatArray
    moves: FloatArray
    replays: dict[int, KeeperReplay]
    fresh: BoolArray
    ready: BoolArray
    sets: list[StandardScenarios] = field(repr=False)

    @property
    def markets(self) -> tuple[str, ...]:
        return tuple(market_name(m) for m in self.history.markets)

    @property
    def replay(self) -> KeeperReplay:
        """What the keeper signed with the configuration's ``K``."""
        return self.replays[self.config.n_scenarios]

    def rows(self, start: int | None = None, end: int | None = None) -> IntArray:
        """Evaluated rows: tiered rates, a scenario set and the next ``h`` closes exist, and
        the candle opens in ``[start, end)`` (UTC seconds)."""
        t = self.history.timestamps
        ok = self.ready & np.all(np.isfinite(self.rates), axis=1)
        ok &= np.all(np.isfinite(self.moves), axis=1)
        if start is not None:
            ok &= t >= start
        if end is not None:
            ok &= t < end
        return np.flatnonzero(ok)


def prepare(
    candles: Sequence[Candles],
    config: PortfolioConfig = FROZEN_PORTFOLIO,
    progress: bool = False,
    ks: Sequence[int] = (),
) -> PreparedBacktest:
    """Join the markets, replay the single-market model and the keeper's scenarios (for the
    configuration's ``K`` and any other ``ks``, each built for its own ``K``)."""
    design: ScenarioDesign = config.design()
    history = joint_history(candles)
    rates = single_market_rates(candles, history, config.horizon, progress)
    h = config.horizon
    moves = np.full_like(history.close, np.nan)
    moves[:-h] = history.close[h:] / history.close[:-h] - 1
    vectors, ready, sets = walk_forward_vectors(history, design, progress, ks)
    guardrails = config.guardrails(history.markets)
    replays = {
        k: replay_keeper(walk_forward_shocks(history, v, design), ready, guardrails)
        for k, v in vectors.items()
    }
    replay = replays[config.n_scenarios]
    fresh = fresh_rows(history.timestamps, replay.pushed, config.heartbeat)
    log.info(
        "%s: %d joint hours, %d scenario refreshes, %d of %d updates clamped (%d shocks)",
        "/".join(market_name(m) for m in history.markets),
        len(history),
        len(sets),
        replay.clamped_updates,
        int(replay.pushed.sum()),
        replay.clamped_shocks,
    )
    return PreparedBacktest(history, config, rates, moves, replays, fresh, ready, sets)


@dataclass(frozen=True)
class PortfolioBacktestResult:
    """One run: the whole window, the calibration and report periods, the series to plot."""

    markets: tuple[str, ...]
    confidence: float
    horizon: int
    config: PortfolioConfig
    overall: Period
    periods: dict[str, Period]
    times: IntArray = field(repr=False)
    series: dict[str, dict[str, FloatArray]] = field(repr=False)
    keeper: dict[str, dict[str, object]] = field(default_factory=dict)
    adversarial: dict[str, AdversarialResult] | None = None

    def to_json(self) -> dict[str, object]:
        """SPEC.md's "Portfolio backtest output", plus the two periods and the parameters."""
        c = self.config
        out: dict[str, object] = {
            "markets": list(self.markets),
            "hours": self.overall.hours,
            "confidence": self.confidence,
            "horizon_hours": self.horizon,
            "families": {k: f.spec_dict() for k, f in self.overall.families.items()},
            "periods": {k: p.to_json() for k, p in self.periods.items()},
            "parameters": {
                "n_scenarios": c.n_scenarios,
                "residual": c.residual,
                "floor": c.floor,
                "initial_ratio": c.initial_ratio,
                "max_shock_bps": {m: c.bound_of(m) for m in self.markets},
                "max_step_bps": c.max_step_bps,
                "heartbeat": c.heartbeat,
            },
        }
        out["keeper"] = self.keeper
        if self.adversarial is not None:
            out["adversarial"] = {k: a.to_json() for k, a in self.adversarial.items()}
        return out


def score(
    prep: PreparedBacktest,
    families: Sequence[Family],
    rows: IntArray,
    residual: float,
    floor: float,
    worst: dict[str, FloatArray] | None = None,
) -> dict[str, tuple[FloatArray, FloatArray, FloatArray]]:
    """``{family: (loss, margin, tiered)}``, each ``(E, P)``, on ``rows``.

    ``worst`` may hold each family's precomputed ``L`` on these rows (the calibration grid).
    """
    k = prep.config.n_scenarios
    shocks = prep.replay.shocks[rows][:, :k]
    rates, moves, fresh = prep.rates[rows], prep.moves[rows], prep.fresh[rows]
    out = {}
    for fam in families:
        w = fam.weights
        tiered = rates @ np.abs(w).T
        loss = -(moves @ w.T)
        lw = worst[fam.name] if worst is not None else worst_losses(w, shocks, [k])[k]
        margin = book_margins(tiered, lw, fam.eligible, fresh, residual, floor)
        out[fam.name] = (loss, margin, tiered)
    return out


def evaluate_period(
    prep: PreparedBacktest,
    families: Sequence[Family],
    name: str,
    start: int | None,
    end: int | None,
) -> tuple[Period, IntArray, dict[str, tuple[FloatArray, FloatArray, FloatArray]]]:
    """Score ``families`` on the rows opening in ``[start, end)`` with the frozen ``c, phi``."""
    rows = prep.rows(start, end)
    if len(rows) < 2:
        raise ValueError(f"{name}: {len(rows)} evaluated hours; need at least 2")
    p = 1 - prep.config.confidence
    scored = score(prep, families, rows, prep.config.residual, prep.config.floor)
    results = {n: family_result(n, *v, p) for n, v in scored.items()}
    t = prep.history.timestamps[rows]
    return Period(name, int(t[0]), int(t[-1]), len(rows), results), rows, scored


def run_portfolio_backtest(
    candles: Sequence[Candles],
    config: PortfolioConfig = FROZEN_PORTFOLIO,
    start: int | None = None,
    end: int | None = None,
    progress: bool = False,
    extra_families: Sequence[Family] = (),
    prepared: PreparedBacktest | None = None,
) -> PortfolioBacktestResult:
    """Walk forward over the joint hours; evaluate ``[start, end)`` (every earlier hour is
    warm-up), split at 2022-01-01 into the calibration and report periods."""
    prep = prepared or prepare(candles, config, progress)
    families = [*standard_families(prep.markets), *extra_families]
    overall, rows, scored = evaluate_period(prep, families, "window", start, end)
    periods = {}
    keeper = {"window": keeper_figures(prep, rows)}
    for name, lo, hi in (("calibration", start, CALIBRATION_END), ("report", CALIBRATION_END, end)):
        lo_ok = lo is None or hi is None or lo < hi
        if lo_ok and len(prep.rows(lo, hi)) >= 2:
            periods[name] = evaluate_period(prep, families, name, lo, hi)[0]
            keeper[name] = keeper_figures(prep, prep.rows(lo, hi))
    series = {
        name: {
            "margin": margin.mean(axis=1),
            "tiered": tiered.mean(axis=1),
            "loss": np.abs(loss).mean(axis=1),
        }
        for name, (loss, margin, tiered) in scored.items()
    }
    for name, f in overall.families.items():
        log.info(
            "%s: breach %.3f%% (tiered %.3f%%), Kupiec p %.3f, Christoffersen p %.3f, "
            "saving %.1f%%",
            name,
            100 * f.breach_rate,
            100 * f.tiered_breach_rate,
            f.kupiec_p,
            f.christoffersen_p,
            100 * f.avg_margin_saving_vs_tiered,
        )
    return PortfolioBacktestResult(
        markets=prep.markets,
        confidence=config.confidence,
        horizon=config.horizon,
        config=config,
        overall=overall,
        periods=periods,
        times=prep.history.timestamps[rows],
        series=series,
        keeper=keeper,
    )


def keeper_figures(prep: PreparedBacktest, rows: IntArray) -> dict[str, object]:
    """What the keeper signed on ``rows``: updates, clamped updates, largest ``|shock|`` and
    largest change of one shock between consecutive updates, per market (bps)."""
    r = prep.replay
    signed = r.shocks[rows][r.pushed[rows]]
    steps = np.abs(np.diff(signed, axis=0)) if len(signed) > 1 else np.zeros((1, *signed.shape[1:]))
    return {
        "updates": int(r.pushed[rows].sum()),
        "clamped_updates_all_hours": r.clamped_updates,
        "stale_hours": int((~prep.fresh[rows]).sum()),
        "max_abs_shock_bps": {
            m: int(np.abs(signed[:, :, i]).max()) if len(signed) else 0
            for i, m in enumerate(prep.markets)
        },
        "max_step_bps": {m: int(steps[:, :, i].max()) for i, m in enumerate(prep.markets)},
    }


__all__ = [
    "SPEC_FAMILY_KEYS",
    "Family",
    "FamilyResult",
    "KeeperReplay",
    "Period",
    "PortfolioBacktestResult",
    "PreparedBacktest",
    "book_margins",
    "evaluate_period",
    "family_result",
    "fresh_rows",
    "keeper_figures",
    "prepare",
    "replay_keeper",
    "run_portfolio_backtest",
    "scenario_losses",
    "score",
    "single_market_rates",
    "standard_families",
    "worst_losses",
]
