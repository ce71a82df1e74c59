"""Backtests of a margin series: does it cover what it claims, when it claims it?

Pure functions of a breach (hit) sequence, the margin in force and the realised losses. Losses and
margins are fractions of notional; a **breach** is an hour whose loss exceeds the margin in force;
``p`` is the breach probability the margin is built for (``1 - confidence``).

* :func:`kupiec_pof`: the unconditional rate (Kupiec 1995);
* :func:`christoffersen`: first-order independence and conditional coverage (Christoffersen 1998);
* :func:`dynamic_quantile`: the Engle-Manganelli (2004) DQ test, hits regressed on a constant,
  their own lags and the margin level: catches breaches that depend on the regime;
* :func:`duration_test`: Christoffersen-Pelletier (2004) Weibull test of the time between
  breaches (memoryless under the null);
* :func:`breaches_by_regime`: breach rates by quantile group of the margin in force;
* :func:`acerbi_szekely_z2`: the ES backtest ``Z2`` of Acerbi and Szekely (2014) with critical
  values simulated under the model's own tail;
* :func:`traffic_light`: the Basel zones of the breach count, with over-coverage reported
  (not failed);
* :func:`bootstrap_shortfall_cut`: a moving-block bootstrap interval on how much less loss beyond
  margin a model leaves than a baseline.

References
----------
Kupiec, P. (1995). Techniques for verifying the accuracy of risk measurement models. *Journal of
Derivatives* 3(2), 73-84.
Christoffersen, P. (1998). Evaluating interval forecasts. *International Economic Review* 39(4),
841-862.
Engle, R. F. and Manganelli, S. (2004). CAViaR: conditional autoregressive value at risk by
regression quantiles. *Journal of Business & Economic Statistics* 22(4), 367-381.
Christoffersen, P. and Pelletier, D. (2004). Backtesting value-at-risk: a duration-based
approach. *Journal of Financial Econometrics* 2(1), 84-108.
Acerbi, C. and Szekely, B. (2014). Back-testing expected shortfall. *Risk*, December 2014.
Basel Committee on Banking Supervision (1996). Supervisory framework for the use of "backtesting"
in conjunction with the internal models approach to market risk capital requirements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats
from scipy.special import xlogy

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Zone = Literal["green", "yellow", "red"]

DQ_LAGS = 4
BASEL_YELLOW = 0.95  # cumulative binomial probability at which the yellow zone starts
BASEL_RED = 0.9999  # ... and the red zone
OVER_COVERAGE = 0.05  # a count this improbably low is reported as over-coverage


@dataclass(frozen=True)
class CoverageTest:
    """A test statistic and its p-value (small: the hypothesis of correct coverage fails)."""

    statistic: float
    p_value: float


def _bernoulli_ll(ones: float, zeros: float, p: float) -> float:
    """``ones * ln p + zeros * ln(1 - p)`` with ``0 ln 0 = 0``."""
    return float(xlogy(ones, p) + xlogy(zeros, 1 - p))


def _check_p(p: float) -> None:
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")


def kupiec_pof(breaches: BoolArray, p: float) -> CoverageTest:
    """Kupiec (1995) proportion-of-failures test.

    .. math:: LR_{uc} = -2 \\ln \\frac{(1-p)^{n-x} p^x}{(1-\\hat p)^{n-x} \\hat p^x},
              \\quad \\hat p = x / n, \\quad LR_{uc} \\sim \\chi^2_1

    Examples
    --------
    >>> round(kupiec_pof(np.arange(250) < 8, 0.01).p_value, 5)
    0.00542
    """
    _check_p(p)
    b = np.asarray(breaches, dtype=bool)
    n = b.size
    if n == 0:
        raise ValueError("no observations")
    x = int(b.sum())
    lr = max(-2 * (_bernoulli_ll(x, n - x, p) - _bernoulli_ll(x, n - x, x / n)), 0.0)
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


def dynamic_quantile(
    breaches: BoolArray, margin: FloatArray, p: float, lags: int = DQ_LAGS
) -> CoverageTest:
    """Engle-Manganelli (2004) dynamic-quantile test, out of sample.

    With ``Hit_t = 1{breach_t} - p`` and regressors
    ``X_t = (1, Hit_{t-1}, ..., Hit_{t-K}, m_t)`` (``m_t`` the margin in force), for
    ``t = K+1..n``:

    .. math:: DQ = \\frac{\\mathrm{Hit}' X (X'X)^{-1} X' \\mathrm{Hit}}{p (1 - p)}
              \\sim \\chi^2_{K+2}

    A margin whose breaches are right on average but more frequent at low (or high) margin
    levels, or that follow each other, is rejected. A regressor that is constant over the
    sample (a flat margin) is dropped and the degrees of freedom reduced with it.
    """
    _check_p(p)
    if lags < 0:
        raise ValueError(f"lags must be non-negative, got {lags}")
    b = np.asarray(breaches, dtype=bool)
    m = np.asarray(margin, dtype=np.float64)
    n = b.size
    if m.shape != b.shape:
        raise ValueError(f"{m.size} margins for {n} breaches")
    if n <= lags + 2:
        raise ValueError(f"need more than {lags + 2} observations, got {n}")
    hit = b.astype(np.float64) - p
    y = hit[lags:]
    columns = [np.ones(n - lags)] + [hit[lags - k : n - k] for k in range(1, lags + 1)]
    level = m[lags:]
    if np.ptp(level) > 0:
        columns.append(level)
    x = np.column_stack(columns)
    # The least-squares fit of y on X; lstsq tolerates collinear lags (no breach at all).
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ beta
    stat = float(y @ fitted) / (p * (1 - p))
    rank = int(np.linalg.matrix_rank(x))
    return CoverageTest(stat, float(stats.chi2.sf(stat, rank)))


def durations(breaches: BoolArray) -> tuple[FloatArray, bool, bool]:
    """Hours between breaches, and whether the first and last duration are censored.

    The first duration runs from the start to the first breach (censored unless the sample
    starts with a breach); the last from the last breach to the end (censored unless the sample
    ends with a breach, in which case there is none).

    Examples
    --------
    >>> durations(np.array([0, 1, 0, 0, 1, 0], bool))
    (array([2., 3., 1.]), True, True)
    """
    b = np.asarray(breaches, dtype=bool)
    at = np.flatnonzero(b)
    if at.size == 0:
        return np.array([float(b.size)]), True, True
    edges = np.concatenate(([-1], at))
    d = np.diff(edges).astype(np.float64)
    first_censored = bool(at[0] != 0)
    if not first_censored:
        d = d[1:]  # a breach in the first hour starts the clock; no duration before it
    last_censored = bool(at[-1] != b.size - 1)
    if last_censored:
        d = np.append(d, float(b.size - 1 - at[-1]))
    return d, first_censored, last_censored


def _weibull_loglik(
    shape: float, d: FloatArray, first_censored: bool, last_censored: bool
) -> float:
    """Profile log-likelihood of a Weibull with ``shape`` b at the best rate a for that b.

    ``f(d) = a^b b d^{b-1} e^{-(a d)^b}``, survival ``S(d) = e^{-(a d)^b}``; a censored
    duration contributes ``ln S``. For a given ``b`` the maximising ``a`` is
    ``a^b = u / sum_i d_i^b`` with ``u`` the number of uncensored durations.
    """
    censored = np.zeros(d.size, dtype=bool)
    censored[0] = first_censored
    censored[-1] |= last_censored
    uncensored = d[~censored]
    u = uncensored.size
    if u == 0:
        return 0.0
    ab = u / float(np.sum(d**shape))  # a^b
    return float(
        u * math.log(ab) + u * math.log(shape) + (shape - 1) * np.sum(np.log(uncensored))
    ) - ab * float(np.sum(d**shape))


def duration_test(breaches: BoolArray) -> CoverageTest:
    """Christoffersen-Pelletier (2004) duration test of independence.

    Under correct conditional coverage the hours between breaches are memoryless
    (exponential, Weibull shape ``b = 1``); clustered breaches give ``b < 1``. The likelihood
    ratio of the Weibull at its maximum over ``b`` against ``b = 1`` (rate free in both, first
    and last durations censored as in the paper):

    .. math:: LR = 2 [\\ln L(\\hat a, \\hat b) - \\ln L(\\hat a_1, 1)] \\sim \\chi^2_1

    Fewer than two uncensored durations give no information: statistic 0, p-value 1.
    """
    d, first, last = durations(breaches)
    censored = np.zeros(d.size, dtype=bool)
    censored[0] = first
    censored[-1] |= last
    if int((~censored).sum()) < 2:
        return CoverageTest(0.0, 1.0)
    null = _weibull_loglik(1.0, d, first, last)
    res = optimize.minimize_scalar(
        lambda log_b: -_weibull_loglik(math.exp(log_b), d, first, last),
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-8},
    )
    lr = max(2 * (-float(res.fun) - null), 0.0)
    return CoverageTest(lr, float(stats.chi2.sf(lr, 1)))


@dataclass(frozen=True)
class RegimeBreaches:
    """Breaches while the margin in force lay in ``[low, high]`` (one quantile group)."""

    low: float
    high: float
    hours: int
    breaches: int
    kupiec: CoverageTest

    @property
    def rate(self) -> float:
        return self.breaches / self.hours if self.hours else math.nan


def breaches_by_regime(
    breaches: BoolArray, margin: FloatArray, p: float, groups: int = 5
) -> tuple[RegimeBreaches, ...]:
    """Breach rate and Kupiec test within each of ``groups`` quantile groups of the margin.

    A model with correct conditional coverage breaches at ``p`` in calm (low margin) and
    stressed (high margin) hours alike. Ties at a group edge go to the lower group.
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    b = np.asarray(breaches, dtype=bool)
    m = np.asarray(margin, dtype=np.float64)
    edges = np.quantile(m, np.linspace(0, 1, groups + 1))
    which = np.clip(np.searchsorted(edges[1:-1], m, side="left"), 0, groups - 1)
    out = []
    for g in range(groups):
        mask = which == g
        hits = b[mask]
        test = kupiec_pof(hits, p) if hits.size else CoverageTest(0.0, 1.0)
        out.append(
            RegimeBreaches(
                float(edges[g]), float(edges[g + 1]), int(mask.sum()), int(hits.sum()), test
            )
        )
    return tuple(out)


def acerbi_szekely_z2(loss: FloatArray, var: FloatArray, es: FloatArray, alpha: float) -> float:
    """Acerbi-Szekely (2014) ES test statistic ``Z2`` (losses positive).

    .. math:: Z_2 = 1 - \\frac{1}{T \\alpha} \\sum_{t=1}^{T} \\frac{L_t\\, 1\\{L_t > VaR_t\\}}{ES_t}

    ``E[Z2] = 0`` when ES is right; a negative value means the tail losses beyond VaR are
    larger (or more frequent) than the model's ES says.
    """
    _check_p(alpha)
    loss = np.asarray(loss, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    es = np.asarray(es, dtype=np.float64)
    if not loss.shape == var.shape == es.shape:
        raise ValueError("loss, var and es must have the same shape")
    if np.any(~(es > 0)):
        raise ValueError("ES must be positive")
    hit = loss > var
    return float(1 - np.sum(loss[hit] / es[hit]) / (loss.size * alpha))


def z2_null_distribution(
    hours: int, alpha: float, tail_ratios: FloatArray, sims: int = 2000, seed: int = 11
) -> FloatArray:
    """``Z2`` simulated under the model: a breach each hour with probability ``alpha`` and,
    given a breach, a loss of ``ES_t * R`` with ``R`` drawn from ``tail_ratios`` (the model's
    tail losses beyond VaR divided by their mean; for filtered historical simulation the
    standardised tail is the same every hour, so the ratios are those of the residual tail).
    """
    _check_p(alpha)
    r = np.asarray(tail_ratios, dtype=np.float64)
    if r.size == 0 or np.any(~np.isfinite(r)):
        raise ValueError("tail_ratios must be a non-empty finite array")
    rng = np.random.default_rng(seed)
    counts = rng.binomial(hours, alpha, size=sims)
    sums = np.array([rng.choice(r, size=k).sum() if k else 0.0 for k in counts])
    return 1 - sums / (hours * alpha)


def z2_test(
    loss: FloatArray,
    var: FloatArray,
    es: FloatArray,
    alpha: float,
    tail_ratios: FloatArray,
    sims: int = 2000,
    seed: int = 11,
) -> CoverageTest:
    """``Z2`` and its simulated one-sided p-value ``P(Z2* <= Z2)``
    (:func:`z2_null_distribution`)."""
    z2 = acerbi_szekely_z2(loss, var, es, alpha)
    null = z2_null_distribution(np.asarray(loss).size, alpha, tail_ratios, sims, seed)
    return CoverageTest(z2, float((np.sum(null <= z2) + 1) / (null.size + 1)))


@dataclass(frozen=True)
class TrafficLight:
    """The Basel zone of a breach count, and whether it is improbably low (over-coverage).

    ``cumulative`` is ``P(X <= x)`` for ``X ~ Binomial(n, p)``; the zone is green below 95%,
    yellow below 99.99%, red above. ``over_covered`` (``P(X <= x) < 5%``) is reported, not
    failed: too much margin costs traders, not the exchange.
    """

    zone: Zone
    cumulative: float
    over_covered: bool


def traffic_light(breaches: BoolArray, p: float) -> TrafficLight:
    """Basel traffic-light zone of the breach count (see :class:`TrafficLight`).

    Examples
    --------
    >>> traffic_light(np.arange(250) < 4, 0.01).zone, traffic_light(np.arange(250) < 5, 0.01).zone
    ('green', 'yellow')
    """
    _check_p(p)
    b = np.asarray(breaches, dtype=bool)
    cdf = float(stats.binom.cdf(int(b.sum()), b.size, p))
    zone: Zone = "green" if cdf < BASEL_YELLOW else "yellow" if cdf < BASEL_RED else "red"
    return TrafficLight(zone, cdf, cdf < OVER_COVERAGE)


@dataclass(frozen=True)
class ShortfallCut:
    """``1 - shortfall(model) / shortfall(baseline)`` and its bootstrap interval."""

    cut: float
    low: float
    high: float
    level: float


def total_shortfall(loss_long: FloatArray, loss_short: FloatArray, margin: FloatArray) -> float:
    """Sum over both sides' breaches of the loss beyond margin (fractions of notional)."""
    m = np.asarray(margin, dtype=np.float64)
    return float(
        np.sum(np.clip(np.asarray(loss_long) - m, 0.0, None))
        + np.sum(np.clip(np.asarray(loss_short) - m, 0.0, None))
    )


def bootstrap_shortfall_cut(
    loss_long: FloatArray,
    loss_short: FloatArray,
    model: FloatArray,
    baseline: FloatArray,
    block: int = 24 * 7,
    reps: int = 1000,
    level: float = 0.95,
    seed: int = 7,
) -> ShortfallCut:
    """Moving-block bootstrap interval on the shortfall cut of ``model`` against ``baseline``.

    Hours are resampled in blocks of ``block`` consecutive hours (keeping crashes, which last
    hours to days, together), the same blocks for both margins; the interval is the
    percentile interval of ``1 - SF_model* / SF_baseline*`` at ``level``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    ll, ls = np.asarray(loss_long), np.asarray(loss_short)
    per_hour_model = np.clip(ll - model, 0, None) + np.clip(ls - model, 0, None)
    per_hour_base = np.clip(ll - baseline, 0, None) + np.clip(ls - baseline, 0, None)
    n = per_hour_model.size
    base_total = float(per_hour_base.sum())
    if base_total <= 0:
        raise ValueError("the baseline has no shortfall to cut")
    cut = 1 - float(per_hour_model.sum()) / base_total
    block = max(1, min(block, n))
    starts_max = n - block + 1
    cum_m = np.concatenate(([0.0], np.cumsum(per_hour_model)))
    cum_b = np.concatenate(([0.0], np.cumsum(per_hour_base)))
    blocks = -(-n // block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, starts_max, size=(reps, blocks))
    sm = (cum_m[starts + block] - cum_m[starts]).sum(axis=1)
    sb = (cum_b[starts + block] - cum_b[starts]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cuts = 1 - sm / sb
    cuts = cuts[np.isfinite(cuts)]
    tail = (1 - level) / 2
    low, high = np.quantile(cuts, [tail, 1 - tail])
    return ShortfallCut(cut, float(low), float(high), level)


__all__ = [
    "CoverageTest",
    "RegimeBreaches",
    "ShortfallCut",
    "TrafficLight",
    "acerbi_szekely_z2",
    "bootstrap_shortfall_cut",
    "breaches_by_regime",
    "christoffersen",
    "duration_test",
    "durations",
    "dynamic_quantile",
    "kupiec_pof",
    "total_shortfall",
    "traffic_light",
    "transition_counts",
    "z2_null_distribution",
    "z2_test",
]
