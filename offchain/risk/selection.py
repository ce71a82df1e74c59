"""The written rule that chooses every parameter of the shipped configuration, on past data only.

**Data.** The rule sees candles that open before ``through`` (2021-12-31 24:00 UTC for the shipped
configuration) and nothing else: :func:`select` truncates every series first. Each market is
scored over its hours after the model's warm-up (BTC and ETH from 2018-01-31, SOL from
2020-09-10).

**Objective** (:func:`score`). For each market and side, on the scored hours:

* ``C1`` breach rate in ``[0.8%, 1.2%]``, ``C2`` Christoffersen independence ``p >= 0.05``,
  ``C3`` dynamic-quantile ``p >= 0.01``; per market ``C4`` peak/trough ``<= 5`` and ``C5``
  largest one-day rise ``<= 3`` points of notional (:class:`Goals`).

A configuration's score is ``(failed, shortfall)``, compared lexicographically: the number of
the constraints above that fail, summed over markets, then the sum over markets of its total
shortfall divided by the previous model's on the same hours (so that each market weighs the
same). Lower is better.

**Search** (:func:`select`). Coordinate descent over the declared grid :data:`GRID`, from the
declared start :data:`START`: parameters are visited in the order of :data:`GRID`; each is set
to the grid value with the best score (a value replaces the current one only if strictly
better); passes repeat until one changes nothing (at most :data:`MAX_PASSES`). ``floor`` (the
lowest maintenance rate, hence ``min_multiplier``) is chosen per market, scored on that market
alone; every other parameter is shared by all markets. Then:

* ``increase_ramp``: the longest ramp in its grid whose score equals the best (the hourly test
  cannot see a ramp shorter than an hour; a longer ramp lets maintenance phase in);
* ``stale_multiplier`` (:func:`choose_stale`): under the seeded keeper outages of
  :class:`~offchain.risk.backtest.OutagePlan`, the smallest multiple of ``min_multiplier`` in
  :data:`STALE_STEPS` for which the breach rate during stale hours is at most the target on both
  sides of every market, and at least a quarter of ``max_multiplier`` (the deployment check);
* ``heartbeat`` two hours (two keeper bars: one missed update does not make a market stale) and
  ``max_funding_rate`` 1e-6/s are fixed by argument, not searched; the keeper's hysteresis is
  not searched either: with hourly bars its refresh (half the heartbeat) pushes every bar.

**Nested walk-forward** (:func:`walk_forward`): the same rule run with ``through`` at the end of
2019 and of 2020, each choice then scored on the following year (every market with data), to show
how the rule does out of sample inside the calibration period. **Sensitivity**
(:func:`sensitivity`): each parameter one grid step either way, every constraint's pass or fail
on the calibration period and on the report period.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from offchain import WAD
from offchain.protocol.margin_math import MAX_MULTIPLIER
from offchain.risk.backtest import realised_losses
from offchain.risk.calibration import (
    DEFAULT_POLICY,
    PREVIOUS_GUARDRAILS,
    PREVIOUS_TIERS,
    RECOMMENDED_MODEL,
    target_series,
)
from offchain.risk.coverage_tests import christoffersen, dynamic_quantile
from offchain.risk.margin_model import MarginModel, proposal_series
from offchain.risk.prices import Candles
from offchain.risk.procyclicality import max_rise, rise_budget
from offchain.risk.replay import OutagePlan, evaluation_window, replay_guardrails, update_times
from offchain.risk.risk_config import MarketRisk

FloatArray = npt.NDArray[np.float64]

log = logging.getLogger("dmm.selection")

MAX_PASSES = 3
STALE_STEPS = (1.25, 1.5, 2.0, 3.0, 4.0, 5.0)
# The declared grid, in the order the search visits it. ``apc`` values are (tool, strength).
GRID: dict[str, tuple[Any, ...]] = {
    "floor": (0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025),
    "cap_ratio": (3.0, 4.0, 5.0),
    "quantile": (0.975, 0.98, 0.985, 0.99, 0.995),
    "apc": (
        ("buffer", 0.25),
        ("buffer", 0.5),
        ("buffer", 0.75),
        ("buffer", 1.0),
        ("stressed_weight", 0.25),
        ("lookback_floor", 0.25),
        ("none", 0.25),
    ),
    "slow": (0.96, 0.97, 0.98, 0.99),
    "fast": (None, 0.6, 0.7, 0.8),
    "measure": ("var", "es"),
    "tail_window": (2 * 8760, None),
    "rise_budget": (0.02, 0.03, 0.04, None),
    "max_increase": (0.5, 1.0, 2.0),
    "max_decrease": (0.05, 0.1, 0.2),
    "min_decrease_interval": (3600, 7200),
    "increase_ramp": (0, 1800, 3600),
}
START: dict[str, Any] = {
    "floor": 0.01,
    "cap_ratio": 5.0,
    "quantile": 0.985,
    "apc": ("buffer", 0.5),
    "slow": 0.97,
    "fast": 0.7,
    "measure": "var",
    "tail_window": None,
    "rise_budget": 0.03,
    "max_increase": 1.0,
    "max_decrease": 0.1,
    "min_decrease_interval": 3600,
    "increase_ramp": 0,
}
PER_MARKET = ("floor",)
HEARTBEAT_S = 7200


@dataclass(frozen=True)
class Goals:
    """The declared constraints of the objective (see the module docstring)."""

    breach_low: float = 0.008
    breach_high: float = 0.012
    independence_p: float = 0.05
    dq_p: float = 0.01
    peak_to_trough: float = 5.0
    max_increase_1d: float = 0.03


@dataclass(frozen=True)
class Figures:
    """What the objective looks at, for one market over one window."""

    hours: int
    breach_rate: tuple[float, float]
    independence_p: tuple[float, float]
    dq_p: tuple[float, float]
    peak_to_trough: float
    max_increase_1d: float
    shortfall: float
    avg_margin: float

    def checks(self, goals: Goals) -> dict[str, bool]:
        """Each constraint, by name (``breach_long``, ..., ``rise_1d``), and whether it holds."""
        out: dict[str, bool] = {}
        for i, side in enumerate(("long", "short")):
            out[f"breach_{side}"] = goals.breach_low <= self.breach_rate[i] <= goals.breach_high
            out[f"independence_{side}"] = self.independence_p[i] >= goals.independence_p
            out[f"dq_{side}"] = self.dq_p[i] >= goals.dq_p
        out["peak_to_trough"] = self.peak_to_trough <= goals.peak_to_trough + 1e-9
        out["rise_1d"] = self.max_increase_1d <= goals.max_increase_1d + 1e-9
        return out

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def figures(margin: FloatArray, loss_long: FloatArray, loss_short: FloatArray, p: float) -> Figures:
    """The objective's figures of one margin series."""
    rates, ind, dq = [], [], []
    for loss in (loss_long, loss_short):
        b = loss > margin
        rates.append(float(b.mean()))
        ind.append(christoffersen(b, p)[0].p_value)
        dq.append(dynamic_quantile(b, margin, p).p_value)
    sf = float(
        np.sum(np.clip(loss_long - margin, 0, None)) + np.sum(np.clip(loss_short - margin, 0, None))
    )
    return Figures(
        hours=int(margin.size),
        breach_rate=(rates[0], rates[1]),
        independence_p=(ind[0], ind[1]),
        dq_p=(dq[0], dq[1]),
        peak_to_trough=float(margin.max() / margin.min()),
        max_increase_1d=max_rise(margin, 24),
        shortfall=sf,
        avg_margin=float(margin.mean()),
    )


# ---------------------------------------------------------------------------------------------
# Configurations


def market_from_params(base: MarketRisk, params: Mapping[str, Any], floor: float) -> MarketRisk:
    """``base`` with the searched parameters (``floor`` in rate units for this market)."""
    tier0 = base.tiers[0].maintenance_rate
    min_m = _multiplier(floor, tier0)
    max_m = min(int(min_m * params["cap_ratio"]), MAX_MULTIPLIER // WAD * WAD)
    tool, strength = params["apc"]
    model = dataclasses.replace(
        base.model,
        quantile=params["quantile"],
        apc=tool,
        apc_strength=strength,
        slow=params["slow"],
        fast=params["fast"],
        measure=params["measure"],
        tail_window=params["tail_window"],
        rise_budget=params["rise_budget"],
    )
    g = dataclasses.replace(
        base.guardrails,
        min_multiplier=min_m,
        max_multiplier=max_m,
        max_increase=_wad(params["max_increase"]),
        max_decrease=_wad(params["max_decrease"]),
        min_decrease_interval=int(params["min_decrease_interval"]),
        heartbeat=HEARTBEAT_S,
        stale_multiplier=min(max(base.guardrails.stale_multiplier, min_m, -(-max_m // 4)), max_m),
        increase_ramp=int(params["increase_ramp"]),
    )
    return dataclasses.replace(base, model=model, guardrails=g)


def _wad(x: float) -> int:
    return round(x * WAD)


def _multiplier(rate: float, tier0: int) -> int:
    """The multiplier (wei) whose first-tier rate is ``rate``, to 1e-6 x."""
    return round(rate * WAD / tier0 * 1_000_000) * (WAD // 1_000_000)


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Evaluator:
    """Scores markets over fixed windows, caching what does not change between evaluations."""

    candles: Mapping[str, Candles]
    bases: Mapping[str, MarketRisk]
    windows: Mapping[str, tuple[int | None, int | None]]
    p: float = 0.01
    goals: Goals = field(default_factory=Goals)
    implied: Mapping[str, FloatArray] = field(default_factory=dict)
    _rates: dict[tuple[str, MarginModel], FloatArray] = field(default_factory=dict)
    _reference: dict[tuple[str, int | None, int | None], float] = field(default_factory=dict)
    evaluations: int = 0

    def raw_rate(self, name: str, model: MarginModel) -> FloatArray:
        """The model's rate before the band and the speed limit (cached per model)."""
        key = (name, dataclasses.replace(model, rise_budget=None))
        if key not in self._rates:
            c = self.candles[name]
            implied = self.implied.get(name) if model.vol_index_weight > 0 else None
            if implied is not None:
                implied = implied[: len(c)]
            series = proposal_series(c, key[1], 1e-9, 0.999999, implied)
            self._rates[key] = series.rate
            if len(self._rates) > 64:
                self._rates.pop(next(iter(self._rates)))
        return self._rates[key]

    def margin(
        self,
        market: MarketRisk,
        start: int | None,
        stop: int | None,
        skip: Callable[[int], np.ndarray] | None = None,
    ) -> tuple[FloatArray, Any, Any]:
        """The replayed margin in force over the scored hours, the losses and the replay."""
        c = self.candles[market.name]
        m = market.model
        w = evaluation_window(c, m.warmup, m.horizon, start, stop)
        rate = self.raw_rate(market.name, m)
        banded = np.where(np.isnan(rate), np.nan, np.clip(rate, market.floor_rate, market.cap_rate))
        proposal = (
            banded if m.rise_budget is None else rise_budget(banded, m.rise_budget, m.rise_window)
        )
        lands, ends = update_times(c, w, m.horizon)
        mask = skip(w.stop - w.replay_from) if skip is not None else None
        rep = replay_guardrails(
            proposal[w.replay_from : w.stop],
            lands,
            market.guardrails,
            market.tiers,
            market.hysteresis,
            ends,
            skip=mask,
        )
        score = slice(w.start - w.replay_from, w.stop - w.replay_from)
        losses = realised_losses(c, w.start, w.stop, m.horizon)
        return rep.rate[score], losses, (rep, score, mask)

    def figures(
        self, market: MarketRisk, start: int | None = None, stop: int | None = None
    ) -> Figures:
        self.evaluations += 1
        margin, losses, _ = self.margin(market, start, stop)
        return figures(margin, losses.long, losses.short, self.p)

    def reference_shortfall(self, name: str, start: int | None, stop: int | None) -> float:
        """The previous model's total shortfall on the same hours (the normaliser)."""
        key = (name, start, stop)
        if key not in self._reference:
            c = self.candles[name]
            base = self.bases[name]
            w = evaluation_window(c, base.model.warmup, base.model.horizon, start, stop)
            series = target_series(c, RECOMMENDED_MODEL, DEFAULT_POLICY, base.model.horizon)
            lands, ends = update_times(c, w, base.model.horizon)
            rep = replay_guardrails(
                series.rate[w.replay_from : w.stop],
                lands,
                PREVIOUS_GUARDRAILS,
                PREVIOUS_TIERS,
                DEFAULT_POLICY.hysteresis,
                ends,
            )
            losses = realised_losses(c, w.start, w.stop, base.model.horizon)
            m = rep.rate[w.start - w.replay_from :]
            self._reference[key] = float(
                np.sum(np.clip(losses.long - m, 0, None))
                + np.sum(np.clip(losses.short - m, 0, None))
            )
        return self._reference[key]


def score(
    figs: Mapping[str, Figures], reference: Mapping[str, float], goals: Goals
) -> tuple[int, float]:
    """``(failed constraints, sum of shortfall / previous shortfall)`` (module docstring)."""
    failed = sum(not ok for f in figs.values() for ok in f.checks(goals).values())
    relative = sum(f.shortfall / max(reference[name], 1e-12) for name, f in figs.items())
    return failed, relative


@dataclass
class Selection:
    """The rule's choice and the trail that led to it."""

    params: dict[str, Any]
    floors: dict[str, float]
    markets: dict[str, MarketRisk]
    score: tuple[int, float]
    figures: dict[str, Figures]
    through: int
    trail: list[dict[str, object]] = field(default_factory=list)


def _configs(
    ev: Evaluator, params: Mapping[str, Any], floors: Mapping[str, float]
) -> dict[str, MarketRisk]:
    return {n: market_from_params(ev.bases[n], params, floors[n]) for n in ev.bases}


def _evaluate_all(
    ev: Evaluator, markets: Mapping[str, MarketRisk]
) -> tuple[tuple[int, float], dict[str, Figures]]:
    figs = {n: ev.figures(m, *ev.windows[n]) for n, m in markets.items()}
    ref = {n: ev.reference_shortfall(n, *ev.windows[n]) for n in markets}
    return score(figs, ref, ev.goals), figs


def select(
    candles: Mapping[str, Candles],
    bases: Mapping[str, MarketRisk],
    through: int,
    goals: Goals | None = None,
    grid: Mapping[str, tuple[Any, ...]] = GRID,
    start: Mapping[str, Any] = START,
    min_hours: int = 24 * 180,
    progress: bool = False,
) -> Selection:
    """Apply the rule on the candles that open before ``through`` (UTC seconds).

    Markets with fewer than ``min_hours`` scored hours before ``through`` are left out of the
    choice (they keep the shared parameters and the start floor).
    """
    from tqdm import tqdm

    goals = goals or Goals()
    cut = {n: candles_before(c, through) for n, c in candles.items()}
    usable = {}
    for n, c in cut.items():
        warm = bases[n].model.warmup
        if len(c) - warm - 1 >= min_hours:
            usable[n] = c
        else:
            log.info("selection through %s: %s left out (%d hours)", _day(through), n, len(c))
    if not usable:
        raise ValueError(f"no market has {min_hours} hours before {_day(through)}")
    ev = Evaluator(
        usable, {n: bases[n] for n in usable}, {n: (None, None) for n in usable}, goals=goals
    )
    params = dict(start)
    floors = {n: start["floor"] for n in bases}
    best, figs = _evaluate_all(ev, _configs(ev, params, floors))
    trail: list[dict[str, object]] = [{"pass": 0, "param": "start", "score": list(best)}]
    names = [k for k in grid if k != "increase_ramp"]
    for pass_no in range(1, MAX_PASSES + 1):
        changed = False
        bar = tqdm(names, desc=f"selection pass {pass_no}", disable=not progress, leave=False)
        for name in bar:
            if name in PER_MARKET:
                for market in usable:
                    for value in grid[name]:
                        if value == floors[market]:
                            continue
                        trial = dict(floors, **{market: value})
                        cfg = market_from_params(ev.bases[market], params, value)
                        f = ev.figures(cfg, *ev.windows[market])
                        others = {n: figs[n] for n in usable if n != market}
                        s, _ = _score_with(ev, others | {market: f})
                        if s < best:
                            best, floors, figs = s, trial, others | {market: f}
                            changed = True
                            trail.append(
                                {
                                    "pass": pass_no,
                                    "param": f"floor[{market}]",
                                    "value": value,
                                    "score": list(s),
                                }
                            )
                continue
            for value in grid[name]:
                if value == params[name]:
                    continue
                trial = dict(params, **{name: value})
                try:
                    s, f = _evaluate_all(ev, _configs(ev, trial, floors))
                except ValueError as exc:  # a combination the registry or the model refuses
                    log.debug("selection: %s=%r refused: %s", name, value, exc)
                    continue
                if s < best:
                    best, params, figs = s, trial, f
                    changed = True
                    trail.append(
                        {"pass": pass_no, "param": name, "value": _plain(value), "score": list(s)}
                    )
        log.info("selection through %s, pass %d: score %s", _day(through), pass_no, best)
        if not changed:
            break
    params["increase_ramp"] = _longest_equal_ramp(ev, params, floors, best, grid["increase_ramp"])
    markets = _configs(ev, params, floors)
    stale = choose_stale(ev, markets)
    markets = {
        n: dataclasses.replace(
            m, guardrails=dataclasses.replace(m.guardrails, stale_multiplier=stale[n])
        )
        for n, m in markets.items()
    }
    for n in bases:
        if n not in markets:
            markets[n] = market_from_params(bases[n], params, floors[n])
    return Selection(params, floors, markets, best, figs, through, trail)


def _score_with(ev: Evaluator, figs: Mapping[str, Figures]) -> tuple[tuple[int, float], None]:
    ref = {n: ev.reference_shortfall(n, *ev.windows[n]) for n in figs}
    return score(figs, ref, ev.goals), None


def _longest_equal_ramp(
    ev: Evaluator,
    params: Mapping[str, Any],
    floors: Mapping[str, float],
    best: tuple[int, float],
    ramps: Iterable[int],
) -> int:
    chosen = int(params["increase_ramp"])
    for ramp in sorted(ramps):
        s, _ = _evaluate_all(ev, _configs(ev, dict(params, increase_ramp=ramp), floors))
        if s <= best and ramp > chosen:
            chosen = ramp
    return chosen


def choose_stale(
    ev: Evaluator, markets: Mapping[str, MarketRisk], plan: OutagePlan | None = None
) -> dict[str, int]:
    """The smallest ``STALE_STEPS`` multiple of the minimum that keeps the breach rate during
    stale hours at or below the target on both sides (see the module docstring), per market."""
    plan = plan or OutagePlan()
    out = {}
    for name, market in markets.items():
        g = market.guardrails
        lowest = -(-g.max_multiplier // 4)
        chosen = g.max_multiplier
        for step in STALE_STEPS:
            stale = min(max(int(g.min_multiplier * step), lowest), g.max_multiplier)
            trial = dataclasses.replace(
                market, guardrails=dataclasses.replace(g, stale_multiplier=stale)
            )
            margin, losses, (rep, score_slice, _) = ev.margin(
                trial, *ev.windows[name], skip=plan.mask
            )
            in_stale = rep.stale[score_slice]
            if not in_stale.any():
                chosen = stale
                break
            worst = max(
                np.mean(losses.long[in_stale] > margin[in_stale]),
                np.mean(losses.short[in_stale] > margin[in_stale]),
            )
            if worst <= ev.p:
                chosen = stale
                break
        out[name] = chosen
    return out


# ---------------------------------------------------------------------------------------------
# Out of sample: nested walk-forward and the sensitivity surface


def split_figures(
    ev: Evaluator, market: MarketRisk, through: int, until: int | None = None
) -> tuple[Figures, Figures]:
    """Figures before ``through`` and from ``through`` to ``until`` (one continuous replay)."""
    margin, losses, _ = ev.margin(market, None, until)
    c = ev.candles[market.name]
    w = evaluation_window(c, market.model.warmup, market.model.horizon, None, until)
    k = int(np.searchsorted(c.timestamps[w.start : w.stop], through, side="left"))
    parts = []
    for sl in (slice(0, k), slice(k, None)):
        parts.append(figures(margin[sl], losses.long[sl], losses.short[sl], ev.p))
    return parts[0], parts[1]


def walk_forward(
    candles: Mapping[str, Candles],
    bases: Mapping[str, MarketRisk],
    folds: Iterable[tuple[int, int]],
    goals: Goals | None = None,
    progress: bool = False,
) -> list[dict[str, object]]:
    """For each ``(through, until)``: the rule on the data before ``through``, its choice
    scored on ``[through, until)`` for every market with data there."""
    goals = goals or Goals()
    out = []
    for through, until in folds:
        chosen = select(candles, bases, through, goals, progress=progress)
        cut = {n: candles_before(c, until) for n, c in candles.items()}
        ev = Evaluator(cut, bases, {n: (through, until) for n in cut}, goals=goals)
        tested = {}
        for name, market in chosen.markets.items():
            try:
                tested[name] = ev.figures(market, through, until)
            except ValueError as exc:
                log.info("walk-forward %s: %s not scored (%s)", _day(through), name, exc)
        out.append(
            {
                "selected_through": _day(through),
                "tested_until": _day(until),
                "params": {k: _plain(v) for k, v in chosen.params.items()},
                "floors": chosen.floors,
                "in_sample_score": list(chosen.score),
                "test": {
                    n: {"figures": f.as_dict(), "checks": f.checks(goals)}
                    for n, f in tested.items()
                },
            }
        )
    return out


def neighbours(grid: Mapping[str, tuple[Any, ...]], value: Any, name: str) -> list[Any]:
    """The grid values one step below and above ``value`` (those that exist)."""
    values = list(grid[name])
    if value not in values:
        return []
    i = values.index(value)
    return [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]


def sensitivity(
    candles: Mapping[str, Candles],
    selection: Selection,
    through: int,
    goals: Goals | None = None,
    grid: Mapping[str, tuple[Any, ...]] = GRID,
    progress: bool = False,
) -> list[dict[str, object]]:
    """Each parameter one grid step either way (``floor`` per market), everything else as
    chosen: every constraint on the calibration period (before ``through``) and on the report
    period (from ``through``), per market. (``stale_multiplier`` only acts when the keeper is
    silent; its effect is in the outage replay of the backtest.)"""
    from tqdm import tqdm

    goals = goals or Goals()
    ev = Evaluator(candles, selection.markets, {n: (None, None) for n in candles}, goals=goals)
    variants: list[tuple[str, Any, dict[str, MarketRisk]]] = [
        ("chosen", None, dict(selection.markets))
    ]
    for name in grid:
        if name in PER_MARKET:
            for market in selection.markets:
                for value in neighbours(grid, selection.floors[market], name):
                    m = market_from_params(selection.markets[market], selection.params, value)
                    m = dataclasses.replace(
                        m,
                        guardrails=dataclasses.replace(
                            m.guardrails,
                            stale_multiplier=min(
                                max(
                                    selection.markets[market].guardrails.stale_multiplier,
                                    m.guardrails.min_multiplier,
                                ),
                                m.guardrails.max_multiplier,
                            ),
                        ),
                    )
                    variants.append((f"floor[{market}]", value, {market: m}))
            continue
        for value in neighbours(grid, selection.params[name], name):
            params = dict(selection.params, **{name: value})
            changed = {}
            for market, chosen in selection.markets.items():
                m = market_from_params(chosen, params, selection.floors[market])
                changed[market] = dataclasses.replace(
                    m,
                    guardrails=dataclasses.replace(
                        m.guardrails, stale_multiplier=chosen.guardrails.stale_multiplier
                    ),
                )
            variants.append((name, _plain(value), changed))
    rows = []
    for name, value, markets in tqdm(
        variants, desc="sensitivity", disable=not progress, leave=False
    ):
        for market, config in markets.items():
            try:
                cal, rep = split_figures(ev, config, through)
            except ValueError as exc:
                log.info("sensitivity %s=%r on %s refused: %s", name, value, market, exc)
                continue
            rows.append(
                {
                    "param": name,
                    "value": value,
                    "market": market,
                    "calibration": {"figures": cal.as_dict(), "checks": cal.checks(goals)},
                    "report": {"figures": rep.as_dict(), "checks": rep.checks(goals)},
                }
            )
    return rows


def candles_before(c: Candles, through: int) -> Candles:
    k = int(np.searchsorted(c.timestamps, through, side="left"))
    return Candles(
        c.timestamps[:k], c.open[:k], c.high[:k], c.low[:k], c.close[:k], c.symbol, c.has_ohlc
    )


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


__all__ = [
    "GRID",
    "MAX_PASSES",
    "PER_MARKET",
    "STALE_STEPS",
    "START",
    "Evaluator",
    "Figures",
    "Goals",
    "Selection",
    "candles_before",
    "choose_stale",
    "figures",
    "market_from_params",
    "neighbours",
    "score",
    "select",
    "sensitivity",
    "split_figures",
    "walk_forward",
]
