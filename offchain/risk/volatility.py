"""Hourly volatility: EWMA (RiskMetrics), a fast/slow EWMA pair, GARCH(1,1)-t and OHLC ranges.

Conventions
-----------
Returns are hourly log returns ``r_t = ln(P_t / P_{t-1})`` with zero mean assumed (the hourly
drift is two orders of magnitude below the hourly volatility, and a fitted drift from a bull
market would understate the risk of shorts). Every filter returns **one-step-ahead variance
forecasts** ``sigma2`` of length ``n + 1`` for ``n`` returns: ``sigma2[t]`` is the variance of
``r[t]`` given ``r[:t]`` and ``sigma2[n]`` is the forecast for the next, unseen hour. Inputs may be
2-D (time along axis 0, one column per market); the recursions run along axis 0 for all columns at
once with :func:`scipy.signal.lfilter` (O(n), no Python loop).

Variances are hourly; :func:`annualise` converts a volatility with ``sqrt(24 * 365)`` (crypto trades
every hour of the year).

GARCH(1,1) with Student-t innovations is fitted with ``arch`` on returns **multiplied by 100**
(percent): the optimiser is badly conditioned on raw hourly returns (variances near 1e-5), so
``omega`` comes back in percent squared and is divided by ``100**2`` here; ``alpha``, ``beta`` and
``nu`` are scale free.

On hourly BTC and ETH the likelihood keeps rising up to ``alpha + beta = 1`` (the unconstrained
maximum has a persistence near 1.03), so the constrained maximum is an integrated GARCH on
``arch``'s stationarity constraint. There SLSQP often stops with status 8 ("positive directional
derivative for linesearch") a hair outside the constraint, although the point is the constrained
maximum; and from ``arch``'s default grid start it can report success after a few iterations at
its starting values. :func:`fit_garch_t` therefore judges convergence by the first-order (KKT)
conditions at the returned point, not by the optimiser's status, tries a second and third
starting point when they fail, and projects ``alpha + beta`` back onto ``<= 1``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from offchain.risk.prices import Candles

FloatArray = npt.NDArray[np.float64]

log = logging.getLogger("dmm.volatility")

HOURS_PER_YEAR = 24 * 365
ANNUALISATION = math.sqrt(HOURS_PER_YEAR)
GARCH_SCALE = 100.0
DEFAULT_SEED_HOURS = 24
GARCH_KKT_TOL = 1.0  # log-likelihood change for a 100% relative move along the gradient
GARCH_BOUNDARY = 1e-4  # alpha + beta within this of 1 lies on the stationarity constraint
GARCH_NU_MAX = 500.0  # arch's upper bound on the Student-t degrees of freedom
# (alpha, beta, nu) of the generic starting points, tried in this order after a warm start
# and before arch's own grid (omega is set for the sample variance).
GARCH_STARTS = ((0.05, 0.90, 5.0), (0.10, 0.85, 4.0), (0.07, 0.92, 4.0))


# ---------------------------------------------------------------------------------------------
# Pure recursions


def annualise(sigma: float | FloatArray, periods_per_year: int = HOURS_PER_YEAR) -> FloatArray:
    """Annualised volatility ``sigma * sqrt(periods_per_year)`` (hourly: ``sqrt(24 * 365)``)."""
    return np.asarray(sigma, dtype=np.float64) * math.sqrt(periods_per_year)


def seed_variance(squared: FloatArray, seed_hours: int = DEFAULT_SEED_HOURS) -> FloatArray:
    """Starting variance: the mean of the first ``seed_hours`` squared innovations (per column).

    The first ``seed_hours`` forecasts therefore see those innovations; a walk-forward evaluation
    must start after them (the backtest's warm-up is longer).
    """
    x = np.asarray(squared, dtype=np.float64)
    if x.shape[0] == 0:
        raise ValueError("cannot seed a variance from an empty series")
    return np.mean(x[: max(1, seed_hours)], axis=0)


def ewma_recursion(squared: FloatArray, lam: float, initial: float | FloatArray) -> FloatArray:
    """Exponentially weighted moving average of squared innovations.

    .. math:: \\sigma^2_0 = s, \\qquad \\sigma^2_{t+1} = \\lambda \\sigma^2_t + (1 - \\lambda) x_t

    Parameters
    ----------
    squared
        ``x_t``: squared returns (or per-candle range variances), shape ``(n,)`` or ``(n, k)``.
    lam
        Decay ``lambda`` in ``(0, 1)``.
    initial
        ``s``, the variance before the first observation (scalar or one per column).

    Returns
    -------
    ndarray
        ``sigma2`` of shape ``(n + 1, ...)``; ``sigma2[t]`` uses ``x[:t]`` only.
    """
    if not 0 < lam < 1:
        raise ValueError(f"lam must lie in (0, 1), got {lam}")
    x = np.asarray(squared, dtype=np.float64)
    s = np.broadcast_to(np.asarray(initial, dtype=np.float64), x.shape[1:])
    out = np.empty((x.shape[0] + 1, *x.shape[1:]))
    out[0] = s
    if x.shape[0]:
        out[1:], _ = lfilter([1 - lam], [1.0, -lam], x, axis=0, zi=(lam * s)[np.newaxis, ...])
    return out


def ewma_variance(
    returns: FloatArray, lam: float = 0.94, seed_hours: int = DEFAULT_SEED_HOURS
) -> FloatArray:
    """RiskMetrics EWMA variance forecasts of ``returns`` (see :func:`ewma_recursion`)."""
    r2 = np.square(np.asarray(returns, dtype=np.float64))
    return ewma_recursion(r2, lam, seed_variance(r2, seed_hours))


def dual_ewma_variance(
    returns: FloatArray, slow: float, fast: float, seed_hours: int = DEFAULT_SEED_HOURS
) -> FloatArray:
    """The larger of a slow and a fast EWMA variance.

    .. math:: \\sigma^2_t = \\max(\\sigma^2_{t}(\\lambda_{slow}), \\sigma^2_{t}(\\lambda_{fast}))

    The fast filter lifts the forecast within one hour of a shock (one 5-sigma hour multiplies
    the fast variance by about ``1 + 25 (1 - lambda_fast)``), the slow one keeps it from falling
    back as soon as the market pauses, so tail hours do not arrive in clusters.
    """
    r2 = np.square(np.asarray(returns, dtype=np.float64))
    s = seed_variance(r2, seed_hours)
    return np.maximum(ewma_recursion(r2, slow, s), ewma_recursion(r2, fast, s))


def garch_recursion(
    returns: FloatArray, omega: float, alpha: float, beta: float, initial: float | FloatArray
) -> FloatArray:
    """GARCH(1,1) variance forecasts with fixed parameters.

    .. math:: \\sigma^2_0 = s, \\qquad
              \\sigma^2_{t+1} = \\omega + \\alpha r_t^2 + \\beta \\sigma^2_t

    Returns ``sigma2`` of shape ``(n + 1, ...)`` as :func:`ewma_recursion`.
    """
    if omega <= 0 or alpha < 0 or beta < 0:
        raise ValueError(
            f"GARCH needs omega > 0, alpha >= 0, beta >= 0; got {omega}, {alpha}, {beta}"
        )
    r2 = np.square(np.asarray(returns, dtype=np.float64))
    s = np.broadcast_to(np.asarray(initial, dtype=np.float64), r2.shape[1:])
    out = np.empty((r2.shape[0] + 1, *r2.shape[1:]))
    out[0] = s
    if r2.shape[0]:
        out[1:], _ = lfilter(
            [1.0], [1.0, -beta], omega + alpha * r2, axis=0, zi=(beta * s)[np.newaxis, ...]
        )
    return out


def parkinson_variance(high: FloatArray, low: FloatArray) -> FloatArray:
    """Parkinson (1980) per-candle variance from the high-low range.

    .. math:: \\hat\\sigma^2 = \\frac{(\\ln H - \\ln L)^2}{4 \\ln 2}
    """
    hl = np.log(np.asarray(high, dtype=np.float64) / np.asarray(low, dtype=np.float64))
    return hl**2 / (4 * math.log(2))


def garman_klass_variance(
    open_: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray
) -> FloatArray:
    """Garman-Klass (1980) per-candle variance from open, high, low and close.

    .. math:: \\hat\\sigma^2 = \\tfrac12 (\\ln H/L)^2 - (2 \\ln 2 - 1) (\\ln C/O)^2

    Non-negative whenever the body lies inside the range (the loader ensures it). For a market
    that trades around the clock the open is the previous close, so no overnight term is needed.
    """
    hl = np.log(np.asarray(high, dtype=np.float64) / np.asarray(low, dtype=np.float64))
    co = np.log(np.asarray(close, dtype=np.float64) / np.asarray(open_, dtype=np.float64))
    return np.maximum(0.5 * hl**2 - (2 * math.log(2) - 1) * co**2, 0.0)


# ---------------------------------------------------------------------------------------------
# Estimators (validate in the constructor, compute with the pure functions above)


class EWMAVolatility:
    """RiskMetrics EWMA: ``sigma2[t+1] = lam * sigma2[t] + (1 - lam) * r[t]**2``.

    Parameters
    ----------
    lam
        Decay in ``(0, 1)``; RiskMetrics uses 0.94 for daily data. On hourly data 0.94 has a
        half-life of about 11 hours.
    seed_hours
        Squared returns averaged for the starting variance.
    """

    def __init__(self, lam: float = 0.94, seed_hours: int = DEFAULT_SEED_HOURS) -> None:
        if not 0 < lam < 1:
            raise ValueError(f"lam must lie in (0, 1), got {lam}")
        if seed_hours < 1:
            raise ValueError(f"seed_hours must be at least 1, got {seed_hours}")
        self.lam = lam
        self.seed_hours = seed_hours

    def variance(self, returns: FloatArray) -> FloatArray:
        """One-step-ahead variance forecasts, ``len(returns) + 1`` of them."""
        return ewma_variance(returns, self.lam, self.seed_hours)

    def __repr__(self) -> str:
        return f"EWMAVolatility(lam={self.lam})"


class DualEWMAVolatility:
    """The larger of a slow and a fast EWMA (see :func:`dual_ewma_variance`).

    Parameters
    ----------
    slow, fast
        Decays with ``0 < fast < slow < 1``.
    """

    def __init__(
        self, slow: float = 0.97, fast: float = 0.7, seed_hours: int = DEFAULT_SEED_HOURS
    ) -> None:
        if not 0 < fast < slow < 1:
            raise ValueError(f"need 0 < fast < slow < 1, got fast={fast}, slow={slow}")
        if seed_hours < 1:
            raise ValueError(f"seed_hours must be at least 1, got {seed_hours}")
        self.slow = slow
        self.fast = fast
        self.seed_hours = seed_hours

    def variance(self, returns: FloatArray) -> FloatArray:
        """One-step-ahead variance forecasts, ``len(returns) + 1`` of them."""
        return dual_ewma_variance(returns, self.slow, self.fast, self.seed_hours)

    def __repr__(self) -> str:
        return f"DualEWMAVolatility(slow={self.slow}, fast={self.fast})"


RANGE_ESTIMATORS: dict[str, Callable[[Candles], FloatArray]] = {
    "parkinson": lambda c: parkinson_variance(c.high, c.low),
    "garman_klass": lambda c: garman_klass_variance(c.open, c.high, c.low, c.close),
}


class RangeVolatility:
    """EWMA of per-candle range variances (Parkinson or Garman-Klass).

    ``sigma2[t+1] = lam * sigma2[t] + (1 - lam) * v_t`` with ``v_t`` the range variance of the
    candle that produced ``r[t]``: about five times as efficient as squared close-to-close
    returns in a quiet market, but blind to a move that happens between two candles.
    """

    def __init__(
        self,
        lam: float = 0.94,
        estimator: str = "garman_klass",
        seed_hours: int = DEFAULT_SEED_HOURS,
    ) -> None:
        if not 0 < lam < 1:
            raise ValueError(f"lam must lie in (0, 1), got {lam}")
        if estimator not in RANGE_ESTIMATORS:
            raise ValueError(
                f"estimator must be one of {sorted(RANGE_ESTIMATORS)}, got {estimator!r}"
            )
        if seed_hours < 1:
            raise ValueError(f"seed_hours must be at least 1, got {seed_hours}")
        self.lam = lam
        self.estimator = estimator
        self.seed_hours = seed_hours

    def variance(self, candles: Candles) -> FloatArray:
        """Forecasts for the ``len(candles) - 1`` returns of ``candles`` (plus the next hour)."""
        if not candles.has_ohlc:
            raise ValueError(f"{candles.symbol or 'series'}: a range estimator needs OHLC candles")
        v = RANGE_ESTIMATORS[self.estimator](candles)[1:]
        return ewma_recursion(v, self.lam, seed_variance(v, self.seed_hours))

    def __repr__(self) -> str:
        return f"RangeVolatility(lam={self.lam}, estimator={self.estimator!r})"


@dataclass(frozen=True)
class GarchTParams:
    """GARCH(1,1)-t parameters in return units (``omega`` already divided by ``scale**2``).

    ``converged`` is whether the first-order optimality conditions hold at the point (see
    :func:`garch_kkt_violation`); ``loglikelihood`` is that of the fitted (scaled) returns.
    """

    omega: float
    alpha: float
    beta: float
    nu: float
    converged: bool = True
    loglikelihood: float = math.nan

    @property
    def persistence(self) -> float:
        """``alpha + beta``: below 1 for a stationary variance."""
        return self.alpha + self.beta

    @property
    def integrated(self) -> bool:
        """Whether the fit lies on the stationarity constraint (``alpha + beta`` = 1, IGARCH)."""
        return self.persistence >= 1 - GARCH_BOUNDARY

    @property
    def unconditional_variance(self) -> float:
        """``omega / (1 - alpha - beta)``; infinite when the process is not stationary."""
        return self.omega / (1 - self.persistence) if self.persistence < 1 else math.inf


def garch_kkt_violation(params: FloatArray, gradient: FloatArray) -> float:
    """How far a GARCH(1,1)-t point is from the first-order conditions of a constrained maximum.

    ``params`` are ``(omega, alpha, beta, nu)`` and ``gradient`` the gradient of the
    log-likelihood there. With ``s_i = p_i dL/dp_i`` (the change of the log-likelihood for a
    relative move of ``p_i``), the conditions are: ``s_omega = 0``; ``s_nu = 0`` unless ``nu`` is
    at its upper bound with ``dL/dnu >= 0``; for ``alpha`` and ``beta`` either both ``s = 0``
    (interior, ``alpha + beta < 1``) or, on the constraint ``alpha + beta = 1``, no gain along
    it, ``min(alpha, beta) |dL/dalpha - dL/dbeta| = 0``, and none from moving inside it,
    ``alpha dL/dalpha + beta dL/dbeta >= 0``. A parameter at its lower bound 0 only needs a
    non-positive derivative. Returns the largest violation, in log-likelihood units.
    """
    _, alpha, beta, nu = (float(x) for x in params)
    g = np.asarray(gradient, dtype=np.float64)
    s = g * np.asarray(params, dtype=np.float64)
    worst = [abs(s[0])]
    worst.append(max(-s[3], 0.0) if nu >= GARCH_NU_MAX * (1 - 1e-6) else abs(s[3]))
    if alpha + beta >= 1 - GARCH_BOUNDARY:
        worst.append(min(alpha, beta) * abs(g[1] - g[2]))
        worst.append(max(-(s[1] + s[2]), 0.0))
    else:
        for i, value in ((1, alpha), (2, beta)):
            worst.append(abs(s[i]) if value > 1e-8 else max(g[i] * 1e-2, 0.0))
    return float(max(worst))


def _project_stationary(alpha: float, beta: float) -> tuple[float, float]:
    """``(alpha, beta)`` scaled down onto ``alpha + beta <= 1`` (SLSQP may overshoot by 1e-5)."""
    total = alpha + beta
    if total <= 1:
        return alpha, beta
    alpha, beta = alpha / total, beta / total
    # The quotients can still sum to 1 + 1 ulp: step beta down until the sum is at most 1.
    while alpha + beta > 1:
        beta = float(np.nextafter(beta, 0.0))
    return alpha, beta


def _garch_starts(
    r_scaled: FloatArray, start: GarchTParams | None, scale: float
) -> list[FloatArray | None]:
    """Starting points in the order tried: a warm start, :data:`GARCH_STARTS`, ``arch``'s grid
    (``None``). SLSQP sometimes stops at its starting point reporting success; another start
    then gets through."""
    starts: list[FloatArray | None] = []
    if start is not None:
        alpha, beta = _project_stationary(start.alpha, start.beta)
        # arch replaces a start outside its constraint by its grid: start just inside it.
        shrink = min(1.0, (1 - GARCH_BOUNDARY) / (alpha + beta)) if alpha + beta > 0 else 1.0
        nu = min(max(start.nu, 2.1), GARCH_NU_MAX - 1)
        starts.append(np.array([start.omega * scale**2, alpha * shrink, beta * shrink, nu]))
    variance = float(np.mean(np.square(r_scaled)))
    for alpha, beta, nu in GARCH_STARTS:
        starts.append(np.array([variance * (1 - alpha - beta), alpha, beta, nu]))
    starts.append(None)
    return starts


def fit_garch_t(
    returns: FloatArray, scale: float = GARCH_SCALE, start: GarchTParams | None = None
) -> GarchTParams:
    """Fit a zero-mean GARCH(1,1) with standardised Student-t innovations with ``arch``.

    .. math:: r_t = \\sigma_t \\varepsilon_t, \\quad \\varepsilon_t \\sim t_\\nu
              \\sqrt{(\\nu - 2)/\\nu}, \\quad
              \\sigma^2_t = \\omega + \\alpha r_{t-1}^2 + \\beta \\sigma^2_{t-1}

    The fit runs on ``returns * scale`` (percent for ``scale=100``) for numerical stability,
    under ``arch``'s constraint ``alpha + beta <= 1``. Starting points are tried in turn (``start``
    from a previous fit if given, the generic :data:`GARCH_STARTS`, then ``arch``'s grid) until
    one ends where :func:`garch_kkt_violation` is below ``GARCH_KKT_TOL``; if none
    does, the fit with the highest likelihood is returned with ``converged=False``. ``alpha`` and
    ``beta`` are projected onto ``alpha + beta <= 1``.
    """
    from arch import arch_model

    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or len(r) < 100:
        raise ValueError(f"GARCH needs a 1-D series of at least 100 returns, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("GARCH returns contain NaN or infinite values")
    scaled = r * scale
    model = arch_model(scaled, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    best = None
    best_violation = math.inf
    for starting in _garch_starts(scaled, start, scale):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is checked below
            result = model.fit(disp="off", show_warning=False, starting_values=starting)
        params = np.asarray(result.params, dtype=np.float64)
        # arch minimises the negative log-likelihood: its jac is minus the gradient.
        violation = garch_kkt_violation(params, -np.asarray(result.optimization_result.jac))
        if best is None or result.loglikelihood > best.loglikelihood:
            best, best_violation = result, violation
        if violation <= GARCH_KKT_TOL:
            best, best_violation = result, violation
            break
    assert best is not None
    omega, alpha, beta, nu = (float(best.params[k]) for k in ("omega", "alpha[1]", "beta[1]", "nu"))
    alpha, beta = _project_stationary(alpha, beta)
    converged = best_violation <= GARCH_KKT_TOL
    if not converged:
        log.warning(
            "GARCH-t fit on %d returns did not converge: first-order conditions off by %.3g "
            "(log-likelihood units; optimiser status %s); persistence %.6f",
            len(r),
            best_violation,
            best.convergence_flag,
            alpha + beta,
        )
    return GarchTParams(omega / scale**2, alpha, beta, nu, converged, float(best.loglikelihood))


@dataclass(frozen=True)
class RollingGarch:
    """Walk-forward GARCH-t forecasts: ``sigma2`` and ``nu`` per hour (NaN before the first fit)."""

    sigma2: FloatArray
    nu: FloatArray
    fits: tuple[tuple[int, GarchTParams], ...]


class GarchT:
    """GARCH(1,1)-t re-fitted every ``refit_every`` hours, recursion with fixed parameters between.

    Parameters
    ----------
    refit_every
        Hours between two fits (720: monthly). Re-fitting every hour is needless: the parameters
        of a fit on thousands of hours barely move in one hour, while the variance recursion,
        which is what reacts to the market, runs every hour.
    min_obs
        Returns needed before the first fit.
    window
        Returns used per fit (the most recent); ``None`` for an expanding window.
    """

    def __init__(
        self,
        refit_every: int = 720,
        min_obs: int = 720,
        window: int | None = None,
        scale: float = GARCH_SCALE,
        seed_hours: int = DEFAULT_SEED_HOURS,
    ) -> None:
        if refit_every < 1:
            raise ValueError(f"refit_every must be at least 1 hour, got {refit_every}")
        if min_obs < 100:
            raise ValueError(f"min_obs must be at least 100 returns, got {min_obs}")
        if window is not None and window < min_obs:
            raise ValueError(f"window ({window}) must be at least min_obs ({min_obs})")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.refit_every = refit_every
        self.min_obs = min_obs
        self.window = window
        self.scale = scale
        self.seed_hours = seed_hours

    def fit(self, returns: FloatArray) -> GarchTParams:
        """Fit on the last ``window`` returns (all when ``window`` is ``None``)."""
        r = np.asarray(returns, dtype=np.float64)
        return fit_garch_t(r if self.window is None else r[-self.window :], self.scale)

    def rolling(self, returns: FloatArray, progress: bool = False) -> RollingGarch:
        """Walk-forward forecasts: parameters fitted at hour ``k`` on ``returns[:k]`` only.

        For ``k <= t < k + refit_every`` the forecast ``sigma2[t]`` runs the recursion with the
        fit from hour ``k`` over the fit's window, so it uses ``returns[:t]`` only.
        """
        from tqdm import tqdm

        r = np.asarray(returns, dtype=np.float64)
        n = len(r)
        sigma2 = np.full(n + 1, np.nan)
        nu = np.full(n + 1, np.nan)
        fits: list[tuple[int, GarchTParams]] = []
        params: GarchTParams | None = None
        starts = range(self.min_obs, n + 1, self.refit_every)
        for k in tqdm(starts, desc="GARCH-t fits", unit="fit", disable=not progress, leave=False):
            lo = 0 if self.window is None else max(0, k - self.window)
            fitted = fit_garch_t(r[lo:k], self.scale, start=params)
            if fitted.converged or params is None:
                params = fitted
            fits.append((k, params))
            end = min(k + self.refit_every, n + 1)
            seed = seed_variance(np.square(r[lo:k]), self.seed_hours)
            path = garch_recursion(r[lo : end - 1], params.omega, params.alpha, params.beta, seed)
            sigma2[k:end] = path[k - lo : end - lo]
            nu[k:end] = params.nu
        return RollingGarch(sigma2, nu, tuple(fits))

    def __repr__(self) -> str:
        return f"GarchT(refit_every={self.refit_every}, window={self.window})"


__all__ = [
    "ANNUALISATION",
    "GARCH_SCALE",
    "GARCH_STARTS",
    "HOURS_PER_YEAR",
    "DualEWMAVolatility",
    "EWMAVolatility",
    "GarchT",
    "GarchTParams",
    "RangeVolatility",
    "RollingGarch",
    "annualise",
    "dual_ewma_variance",
    "ewma_recursion",
    "ewma_variance",
    "fit_garch_t",
    "garch_kkt_violation",
    "garch_recursion",
    "garman_klass_variance",
    "parkinson_variance",
    "seed_variance",
]
