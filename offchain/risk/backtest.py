"""Walk-forward backtest of the shipped margin configuration through the registry's rules.

For each hour ``t`` after the warm-up:

1. the market's model (:func:`offchain.risk.margin_model.proposal_series`, the code the keeper
   runs) proposes a rate from the closes up to candle ``t`` only;
2. the keeper's policy turns it into a multiplier, clamps it with ``margin_math`` and pushes it
   unless the change is inside the hysteresis band; the update lands at the close of candle
   ``t`` and is applied with :func:`offchain.protocol.margin_math.apply_update`, exactly as the
   registry would (step limits, decrease interval, increase ramp, stale fallback);
3. the loss over the next ``h`` candles, ``1 - P_{t+h}/P_t`` for a long and ``P_{t+h}/P_t - 1``
   for a short, is compared with the maintenance rate **in force when it is realised** (just
   before the next update lands: the ramp has then run, a silent keeper's market may be
   stale). A larger loss is a **breach**. The intra-hour check compares the next candle's
   adverse extreme (its low for a long, its high for a short) with the lowest rate in force
   during that hour.

The replay runs from the end of the warm-up to the end of the file, continuously; only the hours
of the evaluation window (``start``/``stop``, the command line's ``--from``/``--to``) are scored,
so every hour before the window is warm-up for the model *and* for the replayed registry state.

Models and baselines in one run (see :class:`BacktestConfig`):

* ``recommended``: the shipped configuration of the market (``deploy/risk.yaml``);
* ``previous``: the model and guardrails this project shipped before (FHS on a dual EWMA, 99% VaR,
  a floor at 12.5% of the five-year stressed ES, 1x-18x, +200% per update, stale 4x): the
  reference for "no more total shortfall than before";
* ``static_ex_ante``: a static rate set each month, ex ante, at the 99% historical VaR of the
  trailing year's hourly losses (what an exchange with a fixed schedule would charge);
  ``static_ex_ante_equal_margin``: the same schedule scaled by one factor so that its average
  over the window equals the recommended model's (its path is ex ante, its level is matched);
  ``static_equal_margin``: a constant at the recommended model's average over the window (a
  hindsight benchmark: it uses the window's own average); flat 3% and 0.5%;
* candidates (``candidates=True``): the recommended model with each other EMIR tool
  (``apc_buffer``/``apc_stressed_weight``/``apc_lookback_floor``/``apc_none``), with the implied
  volatility blend (``dvol_blend``, when an index is given), and the older RiskMetrics, GARCH-t,
  FHS, range and ES models, each replayed under the market's guardrails.

Figures (:mod:`offchain.risk.coverage_tests`, :mod:`offchain.risk.procyclicality`): breach rates
and Kupiec, Christoffersen independence and conditional coverage, the Engle-Manganelli DQ test,
the Christoffersen-Pelletier duration test and the Basel traffic light per side; margin level,
peak/trough and its largest 1-, 5- and 30-day rises; total shortfall. Further validation
(:func:`validate`): breaches by margin regime, the Acerbi-Szekely ES test, bootstrap intervals on
the shortfall cuts, replayed keeper outages and non-overlapping multi-hour horizons.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from offchain.protocol.margin_math import Guardrails, Tier, validate_guardrails, validate_tiers
from offchain.risk.calibration import (
    DEFAULT_POLICY,
    PREVIOUS_GUARDRAILS,
    PREVIOUS_TIERS,
    RECOMMENDED_MODEL,
    stressed_es_series,
    target_series,
)
from offchain.risk.coverage_tests import (
    CoverageTest,
    RegimeBreaches,
    TrafficLight,
    breaches_by_regime,
    christoffersen,
    duration_test,
    dynamic_quantile,
    kupiec_pof,
    traffic_light,
    transition_counts,
)
from offchain.risk.margin_model import MarginModel, proposal_series
from offchain.risk.prices import HOUR, Candles
from offchain.risk.procyclicality import increases
from offchain.risk.replay import (
    OutagePlan,
    Window,
    evaluation_window,
    replay_guardrails,
    static_ex_ante,
    update_times,
)
from offchain.risk.risk_config import MarketRisk, load_risk_config
from offchain.risk.risk_measures import RiskModel, check_confidence

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

log = logging.getLogger("dmm.backtest")

SPEC_KEYS = (
    "breach_rate_long",
    "breach_rate_short",
    "kupiec_p_long",
    "kupiec_p_short",
    "christoffersen_p_long",
    "christoffersen_p_short",
    "avg_margin_rate",
    "peak_margin_rate",
    "total_shortfall",
    "max_daily_margin_increase",
    "dq_p_long",
    "dq_p_short",
    "peak_to_trough",
    "max_increase_1d",
    "max_increase_5d",
    "max_increase_30d",
    "breach_rate_intrahour_long",
    "breach_rate_intrahour_short",
)
NO_HASH = b"\x00" * 32
YEAR_H = 8760


@dataclass(frozen=True)
class BacktestConfig:
    """What to backtest: a market's shipped configuration, the window and the comparisons.

    ``start``/``stop`` are UTC seconds (candle open times): hours before ``start`` are warm-up
    only, ``stop`` is exclusive. ``implied`` is the hourly implied volatility per candle (NaN
    where unknown) for the ``dvol_blend`` candidate with weight ``dvol_weight``.
    """

    market: MarketRisk
    confidence: float = 0.99
    start: int | None = None
    stop: int | None = None
    candidates: bool = True
    previous: bool = True
    outages: OutagePlan | None = field(default_factory=OutagePlan)
    horizons: tuple[int, ...] = (2, 4, 8)
    implied: FloatArray | None = field(default=None, repr=False, compare=False)
    dvol_weight: float = 0.5
    flat_rates: tuple[tuple[str, float], ...] = (("flat_3pct", 0.03), ("flat_0_5pct", 0.005))

    def __post_init__(self) -> None:
        check_confidence(self.confidence)
        validate_guardrails(self.market.guardrails)
        validate_tiers(self.market.tiers)
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError("the evaluation window ends before it starts")
        for name, rate in self.flat_rates:
            if not 0 < rate < 1:
                raise ValueError(f"flat rate {name} must lie in (0, 1), got {rate}")

    @property
    def horizon(self) -> int:
        return self.market.model.horizon


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ModelResult:
    """One model's (or baseline's) figures over the evaluation window."""

    name: str
    description: str
    hours: int
    breaches_long: int
    breaches_short: int
    intrahour_long: int
    intrahour_short: int
    kupiec_long: CoverageTest
    kupiec_short: CoverageTest
    independence_long: CoverageTest
    independence_short: CoverageTest
    cc_long: CoverageTest
    cc_short: CoverageTest
    dq_long: CoverageTest
    dq_short: CoverageTest
    duration_long: CoverageTest
    duration_short: CoverageTest
    traffic_long: TrafficLight
    traffic_short: TrafficLight
    regimes_long: tuple[RegimeBreaches, ...]
    regimes_short: tuple[RegimeBreaches, ...]
    clustered_long: int
    clustered_short: int
    avg_margin_rate: float
    peak_margin_rate: float
    trough_margin_rate: float
    shortfall_long: float
    shortfall_short: float
    increases: dict[str, float]
    pushes: int | None = None

    @property
    def breach_rate_long(self) -> float:
        return self.breaches_long / self.hours

    @property
    def breach_rate_short(self) -> float:
        return self.breaches_short / self.hours

    @property
    def total_shortfall(self) -> float:
        return self.shortfall_long + self.shortfall_short

    @property
    def peak_to_trough(self) -> float:
        return self.peak_margin_rate / self.trough_margin_rate

    @property
    def max_daily_margin_increase(self) -> float:
        return self.increases["max_increase_1d"]

    def spec_dict(self) -> dict[str, float]:
        """Exactly the keys of SPEC.md's "Backtest output"."""
        return {
            "breach_rate_long": self.breach_rate_long,
            "breach_rate_short": self.breach_rate_short,
            "kupiec_p_long": self.kupiec_long.p_value,
            "kupiec_p_short": self.kupiec_short.p_value,
            "christoffersen_p_long": self.independence_long.p_value,
            "christoffersen_p_short": self.independence_short.p_value,
            "avg_margin_rate": self.avg_margin_rate,
            "peak_margin_rate": self.peak_margin_rate,
            "total_shortfall": self.total_shortfall,
            "max_daily_margin_increase": self.max_daily_margin_increase,
            "dq_p_long": self.dq_long.p_value,
            "dq_p_short": self.dq_short.p_value,
            "peak_to_trough": self.peak_to_trough,
            **self.increases,
            "breach_rate_intrahour_long": self.intrahour_long / self.hours,
            "breach_rate_intrahour_short": self.intrahour_short / self.hours,
        }


@dataclass(frozen=True)
class Losses:
    """Realised losses over the evaluated hours (fractions of notional)."""

    long: FloatArray
    short: FloatArray
    intrahour_long: FloatArray
    intrahour_short: FloatArray


def horizon_losses(
    close: FloatArray, start: int, stop: int, horizon: int
) -> tuple[FloatArray, FloatArray]:
    """Long and short losses (fractions of notional) from candle ``t`` to ``t + horizon``."""
    c = np.asarray(close, dtype=np.float64)
    ratio = c[start + horizon : stop + horizon] / c[start:stop]
    return 1 - ratio, ratio - 1


def realised_losses(candles: Candles, start: int, stop: int, horizon: int) -> Losses:
    """Close-to-close losses over ``horizon`` and the next candle's adverse extreme.

    The intra-hour loss of a long is ``1 - low_{t+1} / close_t`` and of a short
    ``high_{t+1} / close_t - 1`` (the close itself for files without high and low).
    """
    long, short = horizon_losses(candles.close, start, stop, horizon)
    c = candles.close[start:stop]
    return Losses(
        long,
        short,
        1 - candles.low[start + 1 : stop + 1] / c,
        candles.high[start + 1 : stop + 1] / c - 1,
    )


def evaluate(
    name: str,
    description: str,
    margin: FloatArray,
    losses: Losses,
    p: float,
    intrahour_margin: FloatArray | None = None,
    pushes: int | None = None,
) -> ModelResult:
    """Every coverage test and margin statistic of one margin series."""
    b_long, b_short = losses.long > margin, losses.short > margin
    m_in = margin if intrahour_margin is None else intrahour_margin
    ind_l, cc_l = christoffersen(b_long, p)
    ind_s, cc_s = christoffersen(b_short, p)
    return ModelResult(
        name=name,
        description=description,
        hours=len(margin),
        breaches_long=int(b_long.sum()),
        breaches_short=int(b_short.sum()),
        intrahour_long=int(np.sum(losses.intrahour_long > m_in)),
        intrahour_short=int(np.sum(losses.intrahour_short > m_in)),
        kupiec_long=kupiec_pof(b_long, p),
        kupiec_short=kupiec_pof(b_short, p),
        independence_long=ind_l,
        independence_short=ind_s,
        cc_long=cc_l,
        cc_short=cc_s,
        dq_long=dynamic_quantile(b_long, margin, p),
        dq_short=dynamic_quantile(b_short, margin, p),
        duration_long=duration_test(b_long),
        duration_short=duration_test(b_short),
        traffic_long=traffic_light(b_long, p),
        traffic_short=traffic_light(b_short, p),
        regimes_long=breaches_by_regime(b_long, margin, p),
        regimes_short=breaches_by_regime(b_short, margin, p),
        clustered_long=transition_counts(b_long)[3],
        clustered_short=transition_counts(b_short)[3],
        avg_margin_rate=float(np.mean(margin)),
        peak_margin_rate=float(np.max(margin)),
        trough_margin_rate=float(np.min(margin)),
        shortfall_long=float(np.sum(np.clip(losses.long - margin, 0, None))),
        shortfall_short=float(np.sum(np.clip(losses.short - margin, 0, None))),
        increases=increases(margin),
        pushes=pushes,
    )


@dataclass(frozen=True)
class BacktestResult:
    """Everything one run measured; :meth:`to_json` is SPEC.md's "Backtest output"."""

    asset: str
    market: str
    hours: int
    confidence: float
    horizon: int
    models: dict[str, ModelResult]
    recommended: MarginModel
    times: IntArray = field(repr=False)
    close: FloatArray = field(repr=False)
    losses: Losses = field(repr=False)
    margins: dict[str, FloatArray] = field(repr=False)
    intrahour_margins: dict[str, FloatArray] = field(repr=False)
    window: Window = field(repr=False)
    proposal: FloatArray = field(repr=False)

    @property
    def loss_long(self) -> FloatArray:
        return self.losses.long

    @property
    def loss_short(self) -> FloatArray:
        return self.losses.short

    def to_json(self) -> dict[str, object]:
        """``{"asset", "hours", "confidence", "horizon_hours", "models": {NAME: {...}}}``."""
        return {
            "asset": self.asset,
            "hours": self.hours,
            "confidence": self.confidence,
            "horizon_hours": self.horizon,
            "models": {name: m.spec_dict() for name, m in self.models.items()},
        }


# ---------------------------------------------------------------------------------------------
# The run


def _candidates(config: BacktestConfig) -> list[tuple[str, MarginModel | RiskModel]]:
    """The comparison models (see the module docstring)."""
    rec = config.market.model
    out: list[tuple[str, MarginModel | RiskModel]] = []
    for tool in ("buffer", "stressed_weight", "lookback_floor", "none"):
        if tool != rec.apc:
            strength = rec.apc_strength if tool in ("buffer", "stressed_weight") else 0.5
            strength = max(strength, 0.25)
            out.append((f"apc_{tool}", dataclasses.replace(rec, apc=tool, apc_strength=strength)))
    if config.implied is not None:
        out.append(("dvol_blend", dataclasses.replace(rec, vol_index_weight=config.dvol_weight)))
    c = config.confidence
    es_level = round(1 - 2.5 * (1 - c), 10)
    out += [
        ("ewma", RiskModel(name="ewma", volatility="ewma", tail="normal", lam=0.94, confidence=c)),
        (
            "garch_t",
            RiskModel(name="garch_t", volatility="garch_t", tail="student_t", confidence=c),
        ),
        ("fhs", RiskModel(name="fhs", volatility="ewma", tail="fhs", lam=0.94, confidence=c)),
        (
            "range_gk",
            RiskModel(name="range_gk", volatility="range", tail="fhs", lam=0.94, confidence=c),
        ),
        (
            "fhs_es",
            dataclasses.replace(
                RECOMMENDED_MODEL, name="fhs_es", measure="es", confidence=es_level
            ),
        ),
    ]
    return out


def describe(model: MarginModel | RiskModel) -> str:
    """A short description of a model for the tables."""
    if isinstance(model, MarginModel):
        filt = f"EWMA {model.slow}" if model.fast is None else f"max EWMA {model.slow}/{model.fast}"
        apc = {
            "none": "no APC",
            "buffer": f"buffer {model.apc_strength:.0%}",
            "stressed_weight": f"stressed weight {model.apc_strength:.0%}",
            "lookback_floor": "10y look-back floor",
        }[model.apc]
        extra = f", DVOL {model.vol_index_weight:.0%}" if model.vol_index_weight else ""
        budget = (
            f", rise <= {model.rise_budget:.1%}/{model.rise_window}h" if model.rise_budget else ""
        )
        return f"FHS {model.measure.upper()} {model.quantile:.2%}, {filt}, {apc}{budget}{extra}"
    vol = {
        "ewma": f"EWMA {model.lam}",
        "dual_ewma": f"max EWMA {model.slow}/{model.fast}",
        "garch_t": f"GARCH(1,1)-t refit {model.garch_refit_every}h",
        "range": f"Garman-Klass EWMA {model.lam}",
    }[model.volatility]
    tail = {"normal": "normal", "student_t": "Student-t", "fhs": "FHS", "historical": "hist."}
    return f"{tail[model.tail]} {model.measure.upper()} {model.confidence:.1%}, {vol}"


def shipped_model_only(candles: Candles, horizon: int | None = None) -> BacktestConfig:
    """The shipped configuration of ``candles``' market (``deploy/risk.yaml``), replayed alone:
    no previous model, no candidates, no flat baselines. ``horizon`` (hours) replaces the
    model's when given. Other studies (funding reserve, portfolio margin) compare against it."""
    market = load_risk_config().market(candles.symbol)
    if horizon is not None and horizon != market.model.horizon:
        market = dataclasses.replace(
            market, model=dataclasses.replace(market.model, horizon=horizon)
        )
    return BacktestConfig(market, candidates=False, previous=False, flat_rates=())


def run_backtest(
    candles: Candles, config: BacktestConfig, progress: bool = False
) -> BacktestResult:
    """Walk forward over ``candles`` with the market's model, the baselines and the candidates
    (see the module docstring)."""
    market = config.market
    model = market.model
    h = model.horizon
    w = evaluation_window(candles, model.warmup, h, config.start, config.stop)
    lands, ends = update_times(candles, w, h)
    score = slice(w.start - w.replay_from, w.stop - w.replay_from)
    losses = realised_losses(candles, w.start, w.stop, h)
    p = 1 - config.confidence
    g, tiers = market.guardrails, market.tiers
    models: dict[str, ModelResult] = {}
    margins: dict[str, FloatArray] = {}
    intrahour: dict[str, FloatArray] = {}

    def replayed(
        key: str,
        desc: str,
        rates: FloatArray,
        rails: Guardrails,
        sched: Sequence[Tier],
        hysteresis: float,
    ) -> None:
        rep = replay_guardrails(
            rates,
            lands,
            rails,
            sched,
            hysteresis,
            ends,
            progress=progress,
            desc=f"{candles.symbol} {key}",
        )
        margins[key], intrahour[key] = rep.rate[score], rep.rate_start[score]
        models[key] = evaluate(key, desc, margins[key], losses, p, intrahour[key], rep.pushes)
        log.info(
            "%s %s: %d pushes, %d clamped hours, %s",
            candles.symbol,
            key,
            rep.pushes,
            rep.clamped_hours,
            _one_line(models[key]),
        )

    def margin_model(key: str, m: MarginModel, implied: FloatArray | None = None) -> None:
        series = proposal_series(candles, m, market.floor_rate, market.cap_rate, implied)
        replayed(
            key, describe(m), series.proposal[w.replay_from : w.stop], g, tiers, market.hysteresis
        )

    rec_series = proposal_series(candles, model, market.floor_rate, market.cap_rate)
    rec_proposal = rec_series.proposal[w.replay_from : w.stop]
    replayed("recommended", describe(model), rec_proposal, g, tiers, market.hysteresis)
    if config.previous:
        prev = dataclasses.replace(RECOMMENDED_MODEL, confidence=config.confidence)
        series = target_series(candles, prev, DEFAULT_POLICY, h, progress=progress)
        replayed(
            "previous",
            "previous: " + describe(prev) + ", 12.5% stressed-ES floor, 1x-18x",
            series.rate[w.replay_from : w.stop],
            PREVIOUS_GUARDRAILS,
            PREVIOUS_TIERS,
            DEFAULT_POLICY.hysteresis,
        )
    ex_ante = static_ex_ante(candles, w, config.confidence, h)[score]
    rec_avg = models["recommended"].avg_margin_rate
    baselines = [
        (
            "static_equal_margin",
            "static at the recommended average (hindsight)",
            np.full(w.stop - w.start, rec_avg),
        ),
        ("static_ex_ante", "trailing-year 99% VaR, set monthly", ex_ante),
        (
            "static_ex_ante_equal_margin",
            "static_ex_ante scaled to the recommended average",
            ex_ante * (rec_avg / float(np.mean(ex_ante))),
        ),
        *[
            (name, f"flat {rate:.1%}", np.full(w.stop - w.start, rate))
            for name, rate in config.flat_rates
        ],
    ]
    for name, desc, margin in baselines:
        margins[name] = intrahour[name] = margin
        models[name] = evaluate(name, desc, margin, losses, p)
    if config.candidates:
        stressed: dict[float, FloatArray] = {}
        for key, cand in _candidates(config):
            if isinstance(cand, MarginModel):
                margin_model(key, cand, config.implied if cand.vol_index_weight else None)
                continue
            if cand.confidence not in stressed:
                stressed[cand.confidence] = stressed_es_series(candles, cand.confidence, h)
            series = target_series(
                candles,
                cand,
                DEFAULT_POLICY,
                h,
                progress=progress,
                stressed=stressed[cand.confidence],
            )
            replayed(
                key,
                describe(cand),
                np.fmax(series.rate[w.replay_from : w.stop], 0.0),
                g,
                tiers,
                market.hysteresis,
            )
    first = ("recommended", "static_equal_margin", "static_ex_ante", "static_ex_ante_equal_margin")
    models = {k: models[k] for k in first} | {k: v for k, v in models.items() if k not in first}
    return BacktestResult(
        asset=candles.symbol,
        market=market.name,
        hours=w.stop - w.start,
        confidence=config.confidence,
        horizon=h,
        models=models,
        recommended=model,
        times=candles.timestamps[w.start : w.stop] + HOUR,
        close=candles.close[w.start : w.stop],
        losses=losses,
        margins=margins,
        intrahour_margins=intrahour,
        window=w,
        proposal=rec_proposal,
    )


def _one_line(m: ModelResult) -> str:
    return (
        f"breaches {m.breach_rate_long:.3%}/{m.breach_rate_short:.3%}, "
        f"independence p {m.independence_long.p_value:.3f}/{m.independence_short.p_value:.3f}, "
        f"DQ p {m.dq_long.p_value:.3f}/{m.dq_short.p_value:.3f}, "
        f"avg margin {m.avg_margin_rate:.3%}, peak/trough {m.peak_to_trough:.1f}, "
        f"shortfall {m.total_shortfall:.4f}"
    )


__all__ = [
    "SPEC_KEYS",
    "BacktestConfig",
    "BacktestResult",
    "Losses",
    "ModelResult",
    "describe",
    "evaluate",
    "horizon_losses",
    "realised_losses",
    "run_backtest",
    "shipped_model_only",
]
