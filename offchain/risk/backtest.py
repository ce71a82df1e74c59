"""Walk-forward backtest of margin models through the registry's guardrails.

For each hour ``t`` after a warm-up (720 hours: the first GARCH fit and a month of residuals):

1. every model computes its rate from the closes up to candle ``t`` only
   (:func:`offchain.risk.calibration.target_series`; all of its pieces are causal);
2. the keeper's policy turns it into a multiplier, clamps it with ``margin_math`` and pushes it
   unless the change is inside the hysteresis band
   (:func:`offchain.risk.calibration.push_decision`);
   the update lands at the close of candle ``t`` and is applied with
   :func:`offchain.protocol.margin_math.apply_update`, exactly as the registry would;
3. the maintenance rate in force right after it (``margin_math.multiplier_in_force``: the ramped
   multiplier during an increase ramp, the stale multiplier if the market went stale) must
   cover the loss over the next ``h`` candles: ``1 - P_{t+h}/P_t`` for a long and
   ``P_{t+h}/P_t - 1`` for a short. A loss above it is a **breach**.

Recalibration is hourly: the variance recursion is O(1) per hour, and the registry's heartbeat (2
hours) needs a push at least every other hour anyway; a slower cadence would only delay the
reaction to a shock, which is what the independence test punishes. The slow parts are refreshed
less often, from data up to the refresh: GARCH parameters every 720 hours (expanding window),
FHS residual tails and the stressed ES every 24 hours.

Reported per model (long and short):

* breach rate against ``1 - confidence``;
* Kupiec's proportion-of-failures test (``LR_uc``, chi-square with 1 degree of freedom);
* Christoffersen's independence test (``LR_ind``, 1 d.o.f., from the first-order Markov
  transitions of the breach sequence) and conditional coverage (``LR_cc = LR_uc + LR_ind``,
  2 d.o.f.); the JSON's ``christoffersen_p_*`` is the independence p-value;
* average and peak maintenance rate in force;
* ``max_daily_margin_increase``: ``max_t (m_t - min(m_{t-24}, ..., m_t))``, the largest rise of
  the rate within any 24 hours (catches a rise spread over several updates, which the
  point-to-point ``m_t - m_{t-24}`` can miss);
* ``total_shortfall``: sum over breaches of the loss beyond margin, longs and shorts together,
  as a fraction of the notional of one position on each side.

Baselines in the same run: a static rate equal to the recommended model's average rate
(``static_equal_margin``; it uses the whole sample's average, a look-ahead allowed for a
benchmark), and flat 3% and 0.5%.

**Why the recommended model covers VaR, not ES, at the target confidence.** A margin covering
ES at 99% is breached far less than 1% of the hours (about 0.4% here), and ES at 97.5% (the
Basel FRTB counterpart of a 99% VaR, equal for a normal law) still only about 0.75% with these
fat-tailed residuals: both fail Kupiec's two-sided test by over-coverage with 32,000 hours. A
margin whose breaches should happen 1% of the hours is a 99% VaR; ES is computed and reported,
drives the stressed floor, and an ES candidate is in the table for comparison.

For ``h > 1`` the loss windows overlap, so breaches are serially dependent by construction and
the independence test is no longer meaningful.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.special import xlogy

from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    Tier,
    apply_update,
    clamp_multiplier,
    multiplier_in_force,
    validate_guardrails,
    validate_tiers,
)
from offchain.protocol.signing import RiskUpdate
from offchain.risk.calibration import (
    DEFAULT_GUARDRAILS,
    DEFAULT_POLICY,
    DEFAULT_TIERS,
    RECOMMENDED_MODEL,
    Policy,
    multiplier_for_rate,
    push_decision,
    rate_of_multiplier,
    stressed_es_series,
    target_series,
)
from offchain.risk.prices import HOUR, Candles
from offchain.risk.risk_measures import RiskModel, check_confidence

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

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
)
DAY = 24
NO_HASH = b"\x00" * 32


def candidate_models(confidence: float) -> tuple[RiskModel, ...]:
    """The models compared with the recommended one, at ``confidence``.

    ``ewma``: RiskMetrics (EWMA 0.94, normal). ``garch_t``: GARCH(1,1)-t, parametric t tail.
    ``fhs``: FHS on a single EWMA 0.94. ``range_gk``: FHS on an EWMA of Garman-Klass range
    variances. ``fhs_es``: the recommended filter covering ES at ``1 - 2.5 (1 - c)`` (97.5% for
    99%, the FRTB counterpart).
    """
    check_confidence(confidence)
    es_level = 1 - 2.5 * (1 - confidence)
    return (
        RiskModel(name="ewma", volatility="ewma", tail="normal", lam=0.94, confidence=confidence),
        RiskModel(name="garch_t", volatility="garch_t", tail="student_t", confidence=confidence),
        RiskModel(name="fhs", volatility="ewma", tail="fhs", lam=0.94, confidence=confidence),
        RiskModel(name="range_gk", volatility="range", tail="fhs", lam=0.94, confidence=confidence),
        dataclasses.replace(
            RECOMMENDED_MODEL, name="fhs_es", measure="es", confidence=round(es_level, 10)
        ),
    )


@dataclass(frozen=True)
class BacktestConfig:
    """What to backtest and under which guardrails.

    Parameters
    ----------
    confidence
        Target coverage: breaches should happen ``1 - confidence`` of the hours.
    horizon
        Liquidation horizon in hours.
    warmup
        Hours of data before the first evaluated hour.
    recommended
        The model proposed for signing (its confidence is set to ``confidence``).
    candidates
        Other models (default :func:`candidate_models`).
    """

    confidence: float = 0.99
    horizon: int = 1
    warmup: int = 720
    guardrails: Guardrails = DEFAULT_GUARDRAILS
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    policy: Policy = DEFAULT_POLICY
    recommended: RiskModel = RECOMMENDED_MODEL
    candidates: tuple[RiskModel, ...] | None = None
    flat_rates: tuple[tuple[str, float], ...] = (("flat_3pct", 0.03), ("flat_0_5pct", 0.005))

    def __post_init__(self) -> None:
        check_confidence(self.confidence)
        if not 1 <= self.horizon <= 24 * 7:
            raise ValueError(f"horizon must be 1 to 168 hours, got {self.horizon}")
        if self.warmup < 300:
            raise ValueError(f"warmup must be at least 300 hours, got {self.warmup}")
        validate_guardrails(self.guardrails)
        validate_tiers(self.tiers)
        for name, rate in self.flat_rates:
            if not 0 < rate < 1:
                raise ValueError(f"flat rate {name} must lie in (0, 1), got {rate}")

    def models(self) -> tuple[RiskModel, tuple[RiskModel, ...]]:
        """The recommended model and the candidates, at the configured confidence."""
        rec = dataclasses.replace(self.recommended, confidence=self.confidence)
        cands = (
            self.candidates if self.candidates is not None else candidate_models(self.confidence)
        )
        return rec, cands


# ---------------------------------------------------------------------------------------------
# Coverage tests (pure)


@dataclass(frozen=True)
class CoverageTest:
    """A likelihood-ratio statistic and its chi-square p-value."""

    statistic: float
    p_value: float


def _bernoulli_ll(ones: float, zeros: float, p: float) -> float:
    """``ones * ln p + zeros * ln(1 - p)`` with ``0 ln 0 = 0``."""
    return float(xlogy(ones, p) + xlogy(zeros, 1 - p))


def kupiec_pof(breaches: BoolArray, p: float) -> CoverageTest:
    """Kupiec (1995) proportion-of-failures test.

    .. math:: LR_{uc} = -2 \\ln \\frac{(1-p)^{n-x} p^x}{(1-\\hat p)^{n-x} \\hat p^x},
              \\quad \\hat p = x / n, \\quad LR_{uc} \\sim \\chi^2_1
    """
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    b = np.asarray(breaches, dtype=bool)
    n = b.size
    if n == 0:
        raise ValueError("no observations")
    x = int(b.sum())
    lr = -2 * (_bernoulli_ll(x, n - x, p) - _bernoulli_ll(x, n - x, x / n))
    lr = max(lr, 0.0)
    return CoverageTest(lr, float(stats.chi2.sf(lr, 1)))


def transition_counts(breaches: BoolArray) -> tuple[int, int, int, int]:
    """``(n00, n01, n10, n11)``: ``nij`` = hours in state ``j`` after an hour in state ``i``."""
    b = np.asarray(breaches, dtype=bool)
    prev, cur = b[:-1], b[1:]
    return (
        int(np.sum(~prev & ~cur)),
        int(np.sum(~prev & cur)),
        int(np.sum(prev & ~cur)),
        int(np.sum(prev & cur)),
    )


def christoffersen(breaches: BoolArray, p: float) -> tuple[CoverageTest, CoverageTest]:
    """Christoffersen (1998) independence and conditional-coverage tests.

    .. math:: LR_{ind} = -2 \\ln \\frac{(1-\\pi)^{n_{00}+n_{10}} \\pi^{n_{01}+n_{11}}}
              {(1-\\pi_{01})^{n_{00}} \\pi_{01}^{n_{01}} (1-\\pi_{11})^{n_{10}} \\pi_{11}^{n_{11}}}
              \\sim \\chi^2_1, \\qquad LR_{cc} = LR_{uc} + LR_{ind} \\sim \\chi^2_2

    with ``pi01 = n01 / (n00 + n01)``, ``pi11 = n11 / (n10 + n11)`` and
    ``pi = (n01 + n11) / (n00 + n01 + n10 + n11)``.
    """
    n00, n01, n10, n11 = transition_counts(breaches)
    total = n00 + n01 + n10 + n11
    if total == 0:
        raise ValueError("need at least two observations")
    pi = (n01 + n11) / total
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    restricted = _bernoulli_ll(n01 + n11, n00 + n10, pi)
    unrestricted = _bernoulli_ll(n01, n00, pi01) + _bernoulli_ll(n11, n10, pi11)
    lr_ind = max(-2 * (restricted - unrestricted), 0.0)
    lr_cc = kupiec_pof(breaches, p).statistic + lr_ind
    return (
        CoverageTest(lr_ind, float(stats.chi2.sf(lr_ind, 1))),
        CoverageTest(lr_cc, float(stats.chi2.sf(lr_cc, 2))),
    )


def max_rise(margin: FloatArray, window: int = DAY) -> float:
    """``max_t (m_t - min(m_{t-window}, ..., m_t))``: the largest rise within ``window`` hours."""
    m = np.asarray(margin, dtype=np.float64)
    if m.size == 0:
        return 0.0
    padded = np.concatenate((np.full(window, m[0]), m))
    lows = np.lib.stride_tricks.sliding_window_view(padded, window + 1).min(axis=1)
    return float(np.max(m - lows))


def shortfall(loss: FloatArray, margin: FloatArray) -> float:
    """Sum over breaches of the loss beyond margin."""
    return float(np.sum(np.clip(np.asarray(loss) - np.asarray(margin), 0.0, None)))


def horizon_losses(
    close: FloatArray, start: int, stop: int, horizon: int
) -> tuple[FloatArray, FloatArray]:
    """Long and short losses (fractions of notional) from candle ``t`` to ``t + horizon``."""
    c = np.asarray(close, dtype=np.float64)
    ratio = c[start + horizon : stop + horizon] / c[start:stop]
    return 1 - ratio, ratio - 1


# ---------------------------------------------------------------------------------------------
# Guardrail replay


@dataclass(frozen=True)
class Replay:
    """Rates in force per evaluated hour after the registry's guardrails, and what it took."""

    rate: FloatArray
    pushes: int
    clamped_hours: int


def replay_guardrails(
    rates: FloatArray,
    times: Sequence[int],
    g: Guardrails = DEFAULT_GUARDRAILS,
    tiers: Sequence[Tier] = DEFAULT_TIERS,
    policy: Policy = DEFAULT_POLICY,
    progress: bool = False,
    desc: str = "replay",
) -> Replay:
    """Replay hourly proposals through the keeper's policy and the registry's rules.

    ``rates[i]`` is proposed at ``times[i]`` (an update stamped and landing then); the result is
    the first tier's rate under :func:`~offchain.protocol.margin_math.multiplier_in_force`
    right after.
    """
    from tqdm import tqdm

    if len(rates) != len(times):
        raise ValueError(f"{len(rates)} rates for {len(times)} times")
    tier0 = tiers[0].maintenance_rate
    state = MarketState()
    out = np.empty(len(rates))
    pushes = clamped_hours = 0
    steps = tqdm(
        range(len(rates)), desc=desc, unit="h", disable=not progress, leave=False, mininterval=0.5
    )
    for i in steps:
        now = int(times[i])
        rate = float(rates[i])
        if not math.isfinite(rate):
            raise ValueError(f"{desc}: no rate at {now} (warm-up too short for the model)")
        proposed = multiplier_for_rate(rate, tier0)
        clamped = clamp_multiplier(state, g, proposed, now)
        clamped_hours += clamped != proposed
        push, _ = push_decision(state, g, clamped, now, policy.hysteresis, policy.step_seconds)
        if push:
            update = RiskUpdate(0, clamped, 0, now, now + policy.deadline_seconds, NO_HASH)
            state = apply_update(state, g, update, now)
            pushes += 1
        out[i] = rate_of_multiplier(multiplier_in_force(state, g, now), tier0)
    return Replay(out, pushes, clamped_hours)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ModelResult:
    """One model's (or baseline's) backtest figures."""

    name: str
    description: str
    breaches_long: int
    breaches_short: int
    hours: int
    kupiec_long: CoverageTest
    kupiec_short: CoverageTest
    independence_long: CoverageTest
    independence_short: CoverageTest
    cc_long: CoverageTest
    cc_short: CoverageTest
    clustered_long: int
    clustered_short: int
    avg_margin_rate: float
    peak_margin_rate: float
    shortfall_long: float
    shortfall_short: float
    max_daily_margin_increase: float
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
        }


def evaluate(
    name: str,
    description: str,
    margin: FloatArray,
    loss_long: FloatArray,
    loss_short: FloatArray,
    p: float,
    pushes: int | None = None,
) -> ModelResult:
    """Breaches, coverage tests, margin statistics and shortfall of one margin series."""
    b_long, b_short = loss_long > margin, loss_short > margin
    ind_l, cc_l = christoffersen(b_long, p)
    ind_s, cc_s = christoffersen(b_short, p)
    return ModelResult(
        name=name,
        description=description,
        breaches_long=int(b_long.sum()),
        breaches_short=int(b_short.sum()),
        hours=len(margin),
        kupiec_long=kupiec_pof(b_long, p),
        kupiec_short=kupiec_pof(b_short, p),
        independence_long=ind_l,
        independence_short=ind_s,
        cc_long=cc_l,
        cc_short=cc_s,
        clustered_long=transition_counts(b_long)[3],
        clustered_short=transition_counts(b_short)[3],
        avg_margin_rate=float(np.mean(margin)),
        peak_margin_rate=float(np.max(margin)),
        shortfall_long=shortfall(loss_long, margin),
        shortfall_short=shortfall(loss_short, margin),
        max_daily_margin_increase=max_rise(margin),
        pushes=pushes,
    )


@dataclass(frozen=True)
class BacktestResult:
    """Everything one run measured; :meth:`to_json` is SPEC.md's "Backtest output"."""

    asset: str
    hours: int
    confidence: float
    horizon: int
    models: dict[str, ModelResult]
    recommended: str
    times: npt.NDArray[np.int64] = field(repr=False)
    close: FloatArray = field(repr=False)
    loss_long: FloatArray = field(repr=False)
    loss_short: FloatArray = field(repr=False)
    margins: dict[str, FloatArray] = field(repr=False)

    def to_json(self) -> dict[str, object]:
        """``{"asset", "hours", "confidence", "horizon_hours", "models": {NAME: {...}}}``."""
        return {
            "asset": self.asset,
            "hours": self.hours,
            "confidence": self.confidence,
            "horizon_hours": self.horizon,
            "models": {name: m.spec_dict() for name, m in self.models.items()},
        }


def run_backtest(
    candles: Candles, config: BacktestConfig | None = None, progress: bool = False
) -> BacktestResult:
    """Walk forward over ``candles`` with every model and baseline (see the module docstring)."""
    config = config or BacktestConfig()
    n = len(candles)
    start, stop = config.warmup, n - config.horizon
    if stop - start < 100:
        raise ValueError(
            f"{candles.symbol or 'series'}: {n} candles leave {max(stop - start, 0)} hours after "
            f"a {config.warmup}-hour warm-up; need at least 100"
        )
    p = 1 - config.confidence
    times = candles.timestamps[start:stop] + HOUR  # each update lands at its candle's close
    loss_long, loss_short = horizon_losses(candles.close, start, stop, config.horizon)
    recommended, candidates = config.models()
    models: dict[str, ModelResult] = {}
    margins: dict[str, FloatArray] = {}
    stressed: dict[float, FloatArray] = {}  # the floor depends on the confidence only
    for key, model in [("recommended", recommended)] + [(m.name, m) for m in candidates]:
        if config.policy.floor_fraction > 0 and model.confidence not in stressed:
            stressed[model.confidence] = stressed_es_series(
                candles,
                model.confidence,
                config.horizon,
                config.policy.floor_window,
                config.policy.floor_refresh,
            )
        series = target_series(
            candles,
            model,
            config.policy,
            config.horizon,
            progress=progress,
            stressed=stressed.get(model.confidence),
        )
        replay = replay_guardrails(
            series.rate[start:stop],
            times.tolist(),
            config.guardrails,
            config.tiers,
            config.policy,
            progress=progress,
            desc=f"{candles.symbol} {key}",
        )
        description = _describe(model)
        margins[key] = replay.rate
        models[key] = evaluate(
            key, description, replay.rate, loss_long, loss_short, p, replay.pushes
        )
        log.info(
            "%s %s: %d pushes, %d clamped hours, %s",
            candles.symbol,
            key,
            replay.pushes,
            replay.clamped_hours,
            _one_line(models[key]),
        )
    baselines = [
        (
            "static_equal_margin",
            "static at the recommended model's average",
            models["recommended"].avg_margin_rate,
        ),
        *[(name, f"flat {rate:.1%}", rate) for name, rate in config.flat_rates],
    ]
    for name, description, rate in baselines:
        margin = np.full(stop - start, rate)
        margins[name] = margin
        models[name] = evaluate(name, description, margin, loss_long, loss_short, p)
        log.info("%s %s: %s", candles.symbol, name, _one_line(models[name]))
    ordered = {k: models[k] for k in ("recommended", "static_equal_margin")}
    ordered |= {k: v for k, v in models.items() if k not in ordered}
    return BacktestResult(
        asset=candles.symbol,
        hours=stop - start,
        confidence=config.confidence,
        horizon=config.horizon,
        models=ordered,
        recommended=recommended.name,
        times=times,
        close=candles.close[start:stop],
        loss_long=loss_long,
        loss_short=loss_short,
        margins=margins,
    )


def _describe(model: RiskModel) -> str:
    vol = {
        "ewma": f"EWMA {model.lam}",
        "dual_ewma": f"max EWMA {model.slow}/{model.fast}",
        "garch_t": f"GARCH(1,1)-t refit {model.garch_refit_every}h",
        "range": f"Garman-Klass EWMA {model.lam}",
    }[model.volatility]
    tail = {"normal": "normal", "student_t": "Student-t", "fhs": "FHS", "historical": "hist."}
    return f"{tail[model.tail]} {model.measure.upper()} {model.confidence:.1%}, {vol}"


def _one_line(m: ModelResult) -> str:
    return (
        f"breaches {m.breach_rate_long:.3%}/{m.breach_rate_short:.3%}, "
        f"Kupiec p {m.kupiec_long.p_value:.3f}/{m.kupiec_short.p_value:.3f}, "
        f"independence p {m.independence_long.p_value:.3f}/{m.independence_short.p_value:.3f}, "
        f"avg margin {m.avg_margin_rate:.3%}, shortfall {m.total_shortfall:.4f}"
    )


# ---------------------------------------------------------------------------------------------
# Presentation (text table and PNG)


def format_table(result: BacktestResult) -> str:
    """The run as a fixed-width table (long/short pairs as ``L/S``)."""
    head = (
        f"{'model':<20} {'breach % L/S':>13} {'Kupiec p L/S':>13} {'Chr.ind p L/S':>13} "
        f"{'Chr.cc p L/S':>13} {'avg %':>6} {'peak %':>6} {'shortfall':>9} {'max 1d +%':>9}"
    )
    lines = [
        f"{result.asset}: {result.hours} hours, confidence {result.confidence:.2%} "
        f"(target breach rate {1 - result.confidence:.2%}), horizon {result.horizon} h; "
        f"recommended = {result.recommended}",
        head,
        "-" * len(head),
    ]
    for name, m in result.models.items():
        lines.append(
            f"{name:<20} "
            f"{100 * m.breach_rate_long:>6.3f}/{100 * m.breach_rate_short:<6.3f} "
            f"{m.kupiec_long.p_value:>6.3f}/{m.kupiec_short.p_value:<6.3f} "
            f"{m.independence_long.p_value:>6.3f}/{m.independence_short.p_value:<6.3f} "
            f"{m.cc_long.p_value:>6.3f}/{m.cc_short.p_value:<6.3f} "
            f"{100 * m.avg_margin_rate:>6.3f} {100 * m.peak_margin_rate:>6.2f} "
            f"{m.total_shortfall:>9.4f} {100 * m.max_daily_margin_increase:>9.3f}"
        )
    rec, static = result.models["recommended"], result.models["static_equal_margin"]
    if static.total_shortfall > 0:
        cut = 1 - rec.total_shortfall / static.total_shortfall
        lines.append(
            f"shortfall at equal average margin ({100 * rec.avg_margin_rate:.3f}%): "
            f"{cut:.1%} below the static baseline"
        )
    lines.append("models: " + "; ".join(f"{k}: {m.description}" for k, m in result.models.items()))
    return "\n".join(lines)


def plot_backtest(result: BacktestResult, path: str | Path) -> Path:
    """Write a PNG: price with breach markers, and the margin rates in force."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    path = Path(path)
    when = result.times.astype("datetime64[s]").astype(object)
    rec = result.margins["recommended"]
    b_long = result.loss_long > rec
    b_short = result.loss_short > rec
    fig, (ax_p, ax_m) = plt.subplots(2, 1, sharex=True, figsize=(13, 8), height_ratios=[3, 2])
    ax_p.plot(when, result.close, lw=0.6, color="black", label=f"{result.asset} close")
    ax_p.scatter(
        np.asarray(when)[b_long],
        result.close[b_long],
        s=10,
        marker="v",
        color="tab:red",
        label=f"long breach ({b_long.sum()})",
        zorder=3,
    )
    ax_p.scatter(
        np.asarray(when)[b_short],
        result.close[b_short],
        s=10,
        marker="^",
        color="tab:green",
        label=f"short breach ({b_short.sum()})",
        zorder=3,
    )
    ax_p.set_yscale("log")
    ax_p.set_ylabel("price (log scale)")
    ax_p.legend(loc="upper left", fontsize=8)
    ax_p.set_title(
        f"{result.asset}: recommended margin ({result.recommended}), "
        f"{result.confidence:.0%} / {result.horizon} h"
    )
    ax_m.plot(when, 100 * rec, lw=0.6, color="tab:blue", label="recommended (in force)")
    for name, style in (("static_equal_margin", "--"), ("flat_3pct", ":"), ("flat_0_5pct", ":")):
        if name in result.margins:
            ax_m.plot(when, 100 * result.margins[name], style, lw=0.9, label=name)
    worst = np.maximum(result.loss_long, result.loss_short)
    ax_m.plot(when, 100 * worst, lw=0.3, color="grey", alpha=0.5, label="|loss| next horizon")
    ax_m.set_ylabel("maintenance rate, % of notional")
    ax_m.legend(loc="upper left", fontsize=8)
    ax_m.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "SPEC_KEYS",
    "BacktestConfig",
    "BacktestResult",
    "CoverageTest",
    "ModelResult",
    "Replay",
    "candidate_models",
    "christoffersen",
    "evaluate",
    "format_table",
    "horizon_losses",
    "kupiec_pof",
    "max_rise",
    "plot_backtest",
    "replay_guardrails",
    "run_backtest",
    "shortfall",
    "transition_counts",
]
