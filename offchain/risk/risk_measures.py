"""Value at Risk and Expected Shortfall for long and short positions over a liquidation horizon.

Losses are positive numbers. On a return ``r`` a long loses ``-r`` and a short ``+r``. Measures
are computed on hourly **log** returns and converted to a fraction of notional at the end
(:func:`to_notional_loss`): a long loses ``1 - exp(-L)`` and a short ``exp(L) - 1`` for a log loss
``L``. The conversion is exact for VaR (a quantile commutes with a monotone map) and, for ES, off
by ``O(sigma^2)`` of the tail, under 0.01% of notional for hourly moves.

Methods, at confidence ``c`` (``alpha = 1 - c`` in the tail):

* **historical**: the empirical loss distribution of the past ``h``-hour returns;
* **normal**: ``VaR = sigma z_c``, ``ES = sigma phi(z_c) / alpha``;
* **Student-t** with unit variance: ``s = sqrt((nu - 2) / nu)``, ``q = t_nu^{-1}(c)``,
  ``VaR = sigma s q``, ``ES = sigma s f_nu(q) / alpha * (nu + q^2) / (nu - 1)``;
* **filtered historical simulation** (FHS, Barone-Adesi et al. 1999): standardised residuals
  ``z_t = r_t / sigma_t`` of a volatility filter, rescaled by the current forecast
  ``sigma_{T+1}``; the scenarios are ``sigma_{T+1} z_t``. With ``symmetric=True`` the
  residuals are pooled with their mirror images ``-z_t``: one margin rate serves both sides,
  so the scenario set is made for the average of the two tails (and has twice the tail points).

Empirical tails use ``k = ceil(n * alpha)`` points: VaR is the ``k``-th largest loss and ES the
mean of the ``k`` largest. Over ``h > 1`` hours :func:`historical_var_es` uses overlapping
``h``-hour returns; the walk-forward :func:`risk_series` scales every one-hour measure by
``sqrt(h)`` (square-root-of-time; exact for independent returns, optimistic when a crash runs
over several hours, which is one reason the default horizon is one hour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from offchain.risk.prices import Candles
from offchain.risk.volatility import (
    DualEWMAVolatility,
    EWMAVolatility,
    GarchT,
    RangeVolatility,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Side = Literal["long", "short"]
SIDES: tuple[Side, Side] = ("long", "short")
VolatilityName = Literal["ewma", "dual_ewma", "garch_t", "range"]
TailName = Literal["normal", "student_t", "fhs", "historical"]
MeasureName = Literal["var", "es"]


@dataclass(frozen=True)
class VarEs:
    """VaR and ES of a loss (positive = a loss), scalars or arrays of the same shape."""

    var: FloatArray
    es: FloatArray


# ---------------------------------------------------------------------------------------------
# Pure measures


def check_confidence(confidence: float) -> float:
    """Return ``confidence`` or raise ``ValueError`` unless it lies strictly in (0.5, 1)."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must lie in (0.5, 1), got {confidence}")
    return confidence


def check_side(side: str) -> Side:
    """Return ``side`` or raise ``ValueError`` unless it is ``"long"`` or ``"short"``."""
    if side not in SIDES:
        raise ValueError(f"side must be 'long' or 'short', got {side!r}")
    return side  # type: ignore[return-value]


def side_losses(returns: FloatArray, side: Side) -> FloatArray:
    """Loss of a position on ``returns``: ``-r`` for a long, ``+r`` for a short."""
    r = np.asarray(returns, dtype=np.float64)
    return -r if check_side(side) == "long" else r


def tail_count(n: int, confidence: float) -> int:
    """``k = ceil(n * (1 - c))``, at least 1: the number of points in an empirical tail."""
    return max(1, math.ceil(round(n * (1 - confidence), 9)))


def empirical_var_es(losses: FloatArray, confidence: float, axis: int = 0) -> VarEs:
    """Empirical VaR (``k``-th largest loss) and ES (mean of the ``k`` largest) along ``axis``.

    .. math:: k = \\lceil n (1 - c) \\rceil, \\quad \\mathrm{VaR} = L_{(n - k + 1)}, \\quad
              \\mathrm{ES} = \\frac1k \\sum_{i > n - k} L_{(i)}
    """
    check_confidence(confidence)
    x = np.moveaxis(np.asarray(losses, dtype=np.float64), axis, 0)
    n = x.shape[0]
    if n == 0:
        raise ValueError("no losses to take a tail from")
    if np.isnan(x).any():
        raise ValueError("losses contain NaN")
    k = tail_count(n, confidence)
    top = np.partition(x, n - k, axis=0)[n - k :]
    return VarEs(np.min(top, axis=0), np.mean(top, axis=0))


def historical_var_es(
    returns: FloatArray, confidence: float, side: Side, horizon: int = 1
) -> VarEs:
    """Historical VaR/ES of ``horizon``-hour log returns (overlapping windows), in log units."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 hour, got {horizon}")
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < horizon:
        raise ValueError(f"need at least {horizon} returns for a {horizon}-hour horizon")
    summed = np.convolve(r, np.ones(horizon), mode="valid") if horizon > 1 else r
    return empirical_var_es(side_losses(summed, side), confidence)


def normal_var_es(sigma: float | FloatArray, confidence: float) -> VarEs:
    """Zero-mean normal VaR and ES.

    .. math:: \\mathrm{VaR} = \\sigma z_c, \\quad \\mathrm{ES} = \\sigma \\frac{\\phi(z_c)}{1 - c}
    """
    check_confidence(confidence)
    s = np.asarray(sigma, dtype=np.float64)
    z = stats.norm.ppf(confidence)
    return VarEs(s * z, s * stats.norm.pdf(z) / (1 - confidence))


def student_t_var_es(sigma: float | FloatArray, nu: float | FloatArray, confidence: float) -> VarEs:
    """VaR and ES of a Student-t loss scaled to standard deviation ``sigma`` (``nu > 2``).

    .. math:: s = \\sqrt{(\\nu - 2)/\\nu}, \\quad q = t_\\nu^{-1}(c), \\quad
              \\mathrm{VaR} = \\sigma s q, \\quad
              \\mathrm{ES} = \\sigma s \\frac{f_\\nu(q)}{1 - c} \\frac{\\nu + q^2}{\\nu - 1}
    """
    check_confidence(confidence)
    n = np.asarray(nu, dtype=np.float64)
    if np.any(~(n > 2)):
        raise ValueError(f"nu must exceed 2 for a finite variance, got {nu}")
    s = np.asarray(sigma, dtype=np.float64) * np.sqrt((n - 2) / n)
    q = stats.t.ppf(confidence, n)
    es = s * stats.t.pdf(q, n) / (1 - confidence) * (n + q**2) / (n - 1)
    return VarEs(s * q, es)


def pooled(residuals: FloatArray, side: Side | None) -> FloatArray:
    """Losses per unit of volatility: one side's, or both sides pooled (``side=None``)."""
    z = np.asarray(residuals, dtype=np.float64)
    if side is None:
        return np.concatenate((z, -z), axis=0)
    return side_losses(z, side)


def fhs_var_es(
    residuals: FloatArray,
    sigma: float,
    confidence: float,
    side: Side,
    symmetric: bool = False,
) -> VarEs:
    """Filtered historical simulation: the tail of ``sigma * z`` over past residuals ``z``.

    .. math:: L_i = \\sigma_{T+1}\\, \\ell(z_i), \\quad \\ell(z) = -z \\text{ (long)},\\ z
              \\text{ (short)}

    With ``symmetric`` the residuals are pooled with ``-z`` and ``side`` does not matter.
    """
    z = np.asarray(residuals, dtype=np.float64)
    z = z[np.isfinite(z)]
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be finite and non-negative, got {sigma}")
    tail = empirical_var_es(pooled(z, None if symmetric else check_side(side)), confidence)
    return VarEs(sigma * tail.var, sigma * tail.es)


def scale_to_horizon(x: float | FloatArray, horizon: int) -> FloatArray:
    """Square-root-of-time scaling of a one-hour measure to ``horizon`` hours."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 hour, got {horizon}")
    return np.asarray(x, dtype=np.float64) * math.sqrt(horizon)


def to_notional_loss(log_loss: float | FloatArray, side: Side) -> FloatArray:
    """A log-return loss as a fraction of notional: ``1 - e^{-L}`` (long), ``e^{L} - 1`` (short)."""
    x = np.asarray(log_loss, dtype=np.float64)
    return -np.expm1(-x) if check_side(side) == "long" else np.expm1(x)


def rolling_tail(
    x: FloatArray,
    ends: IntArray,
    confidence: float,
    window: int | None = None,
    side: Side | None = None,
    min_obs: int = 100,
) -> VarEs:
    """Empirical VaR/ES of the losses in ``x[max(0, e - window):e]`` for each ``e`` in ``ends``.

    ``side=None`` pools both sides (see :func:`pooled`); NaNs are ignored; an end with fewer
    than ``min_obs`` finite points gets NaN. Windows are evaluated one at a time, so callers
    evaluate at a refresh cadence (the backtest: daily) rather than every hour.
    """
    check_confidence(confidence)
    arr = np.asarray(x, dtype=np.float64)
    out_var = np.full(len(ends), np.nan)
    out_es = np.full(len(ends), np.nan)
    for j, e in enumerate(np.asarray(ends, dtype=np.int64)):
        lo = 0 if window is None else max(0, int(e) - window)
        w = arr[lo : int(e)]
        w = w[np.isfinite(w)]
        if len(w) < min_obs:
            continue
        tail = empirical_var_es(pooled(w, side), confidence)
        out_var[j], out_es[j] = tail.var, tail.es
    return VarEs(out_var, out_es)


# ---------------------------------------------------------------------------------------------
# A risk model: volatility filter + tail, evaluated walk-forward


@dataclass(frozen=True)
class RiskModel:
    """A volatility filter and a tail method, and which measure covers the margin.

    Parameters
    ----------
    name
        Label in reports and in the model hash.
    volatility
        ``"ewma"`` (``lam``), ``"dual_ewma"`` (``slow``, ``fast``), ``"garch_t"`` (re-fitted
        every ``garch_refit_every`` hours) or ``"range"`` (EWMA of Garman-Klass variances).
    tail
        ``"normal"``, ``"student_t"`` (``nu`` from the GARCH fit, or the fixed ``nu``),
        ``"fhs"`` or ``"historical"`` (unfiltered, ``fhs_window`` hours).
    measure
        ``"var"`` or ``"es"``: what the maintenance rate must cover.
    confidence
        Level of both VaR and ES.
    """

    name: str = "fhs_dual_ewma"
    volatility: VolatilityName = "dual_ewma"
    tail: TailName = "fhs"
    measure: MeasureName = "var"
    confidence: float = 0.99
    lam: float = 0.94
    slow: float = 0.97
    fast: float = 0.7
    nu: float | None = None
    garch_refit_every: int = 720
    garch_min_obs: int = 720
    fhs_window: int | None = None
    fhs_refresh: int = 24
    fhs_min_obs: int = 250
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.volatility not in ("ewma", "dual_ewma", "garch_t", "range"):
            raise ValueError(f"unknown volatility filter {self.volatility!r}")
        if self.tail not in ("normal", "student_t", "fhs", "historical"):
            raise ValueError(f"unknown tail method {self.tail!r}")
        if self.measure not in ("var", "es"):
            raise ValueError(f"measure must be 'var' or 'es', got {self.measure!r}")
        check_confidence(self.confidence)
        if self.tail == "student_t" and self.volatility != "garch_t" and self.nu is None:
            raise ValueError("a Student-t tail needs nu unless the filter is garch_t")
        if self.nu is not None and not self.nu > 2:
            raise ValueError(f"nu must exceed 2, got {self.nu}")
        if self.fhs_window is not None and self.fhs_window < self.fhs_min_obs:
            raise ValueError(f"fhs_window ({self.fhs_window}) below fhs_min_obs")
        if self.fhs_refresh < 1 or self.fhs_min_obs < 1:
            raise ValueError("fhs_refresh and fhs_min_obs must be at least 1")
        # The filters validate their own parameters.
        self.filter()

    def filter(self) -> EWMAVolatility | DualEWMAVolatility | GarchT | RangeVolatility:
        """The volatility estimator this model uses."""
        if self.volatility == "ewma":
            return EWMAVolatility(self.lam)
        if self.volatility == "dual_ewma":
            return DualEWMAVolatility(self.slow, self.fast)
        if self.volatility == "garch_t":
            return GarchT(self.garch_refit_every, self.garch_min_obs)
        return RangeVolatility(self.lam)

    def params(self) -> dict[str, object]:
        """The parameters that matter for this model (for the model hash and reports)."""
        out: dict[str, object] = {
            "name": self.name,
            "volatility": self.volatility,
            "tail": self.tail,
            "measure": self.measure,
            "confidence": self.confidence,
        }
        if self.volatility in ("ewma", "range"):
            out["lam"] = self.lam
        if self.volatility == "dual_ewma":
            out |= {"slow": self.slow, "fast": self.fast}
        if self.volatility == "garch_t":
            out |= {
                "garch_refit_every": self.garch_refit_every,
                "garch_min_obs": self.garch_min_obs,
            }
        if self.tail == "student_t" and self.nu is not None:
            out["nu"] = self.nu
        if self.tail in ("fhs", "historical"):
            out |= {
                "window": self.fhs_window,
                "refresh": self.fhs_refresh,
                "min_obs": self.fhs_min_obs,
                "symmetric": self.symmetric,
            }
        return out


@dataclass(frozen=True)
class RiskSeries:
    """Walk-forward risk, one value per candle: index ``t`` uses the closes up to candle ``t``.

    ``sigma`` is the next hour's volatility forecast (log units); VaR and ES are fractions of
    notional over the horizon; NaN while the model is still warming up.
    """

    sigma: FloatArray
    var_long: FloatArray
    var_short: FloatArray
    es_long: FloatArray
    es_short: FloatArray
    measure: MeasureName
    nu: FloatArray | None = None

    @property
    def rate(self) -> FloatArray:
        """The rate the margin must cover: the larger side of the chosen measure."""
        if self.measure == "var":
            return np.fmax(self.var_long, self.var_short)
        return np.fmax(self.es_long, self.es_short)


def variance_forecasts(
    candles: Candles, model: RiskModel, progress: bool = False
) -> tuple[FloatArray, FloatArray | None]:
    """``sigma2`` (``len(candles)`` values, index ``t`` for the return after candle ``t``) and
    the GARCH ``nu`` per hour when the filter is GARCH-t."""
    r = candles.log_returns()
    est = model.filter()
    if isinstance(est, GarchT):
        rolled = est.rolling(r, progress=progress)
        return rolled.sigma2, rolled.nu
    if isinstance(est, RangeVolatility):
        return est.variance(candles), None
    return est.variance(r), None


def risk_series(
    candles: Candles, model: RiskModel, horizon: int = 1, progress: bool = False
) -> RiskSeries:
    """Walk-forward VaR and ES for longs and shorts after each candle (see :class:`RiskSeries`).

    Parametric tails are evaluated every hour. Empirical tails (FHS, historical) are refreshed
    every ``model.fhs_refresh`` hours from the data up to the refresh, then multiplied by each
    hour's volatility: the residual distribution moves slowly, the volatility does not.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 hour, got {horizon}")
    if len(candles) < 3:
        raise ValueError(f"{candles.symbol or 'series'}: need at least 3 candles for risk")
    r = candles.log_returns()
    sigma2, nu = variance_forecasts(candles, model, progress)
    sigma = np.sqrt(sigma2)
    c = model.confidence
    n1 = len(sigma)
    if model.tail == "normal":
        one = normal_var_es(sigma, c)
        unit = {s: one for s in SIDES}
    elif model.tail == "student_t":
        nus = nu if (nu is not None and model.nu is None) else np.full(n1, model.nu or np.nan)
        ok = nus > 2
        var = np.full(n1, np.nan)
        es = np.full(n1, np.nan)
        if ok.any():
            t = student_t_var_es(sigma[ok], nus[ok], c)
            var[ok], es[ok] = t.var, t.es
        unit = {s: VarEs(var, es) for s in SIDES}
    else:
        unit = _empirical_tails(r, sigma2, model)
    out: dict[str, FloatArray] = {}
    for side in SIDES:
        out[f"var_{side}"] = to_notional_loss(scale_to_horizon(unit[side].var, horizon), side)
        out[f"es_{side}"] = to_notional_loss(scale_to_horizon(unit[side].es, horizon), side)
    return RiskSeries(sigma=sigma, measure=model.measure, nu=nu, **out)


def _empirical_tails(r: FloatArray, sigma2: FloatArray, model: RiskModel) -> dict[Side, VarEs]:
    """FHS (scaled by each hour's sigma) or historical tails, refreshed every ``fhs_refresh``."""
    n1 = len(sigma2)
    ends = np.arange(0, n1, model.fhs_refresh, dtype=np.int64)
    reps = np.minimum(np.diff(np.append(ends, n1)), model.fhs_refresh)
    if model.tail == "fhs":
        with np.errstate(divide="ignore", invalid="ignore"):
            x = r / np.sqrt(sigma2[:-1])
        scale = np.sqrt(sigma2)
    else:
        x, scale = r, np.ones(n1)
    sides: tuple[Side | None, ...] = (None,) if model.symmetric else SIDES
    result: dict[Side, VarEs] = {}
    for side in sides:
        tail = rolling_tail(x, ends, model.confidence, model.fhs_window, side, model.fhs_min_obs)
        v = np.repeat(tail.var, reps) * scale
        e = np.repeat(tail.es, reps) * scale
        for s in SIDES if side is None else (side,):
            result[s] = VarEs(v, e)
    return result


# ---------------------------------------------------------------------------------------------
# Many markets at once (the keeper's hot path; the benchmark measures it)


@dataclass(frozen=True)
class MarketsRisk:
    """The latest risk of ``M`` markets (arrays of shape ``(M,)``, fractions of notional)."""

    sigma: FloatArray
    var_long: FloatArray
    var_short: FloatArray
    es_long: FloatArray
    es_short: FloatArray
    measure: MeasureName

    @property
    def rate(self) -> FloatArray:
        """The rate the margin must cover per market (the larger side of the measure)."""
        if self.measure == "var":
            return np.maximum(self.var_long, self.var_short)
        return np.maximum(self.es_long, self.es_short)


def latest_risk_many(closes: FloatArray, model: RiskModel, horizon: int = 1) -> MarketsRisk:
    """Risk now for many markets from a ``(T, M)`` array of hourly closes (one column each).

    Vectorised across markets: the EWMA recursions run along time for all columns at once and
    the empirical tails use one partial sort of a ``(T, M)`` array. The FHS tail uses every
    residual up to now (or the last ``fhs_window``). EWMA filters only (``ewma``,
    ``dual_ewma``); GARCH is fitted per market and range filters need OHLC.
    """
    c = np.asarray(closes, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 3:
        raise ValueError(f"closes must be a (T >= 3, M) array, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("closes must be finite and positive")
    if model.volatility not in ("ewma", "dual_ewma"):
        raise ValueError(f"latest_risk_many supports EWMA filters, not {model.volatility!r}")
    r = np.diff(np.log(c), axis=0)
    sigma2 = model.filter().variance(r)  # type: ignore[union-attr]
    sigma = np.sqrt(sigma2[-1])
    conf = model.confidence
    if model.tail in ("normal", "student_t"):
        if model.tail == "normal":
            one = normal_var_es(sigma, conf)
        else:
            one = student_t_var_es(sigma, model.nu, conf)  # type: ignore[arg-type]
        unit = {s: one for s in SIDES}
    else:
        if model.tail == "fhs":
            with np.errstate(divide="ignore", invalid="ignore"):
                x, scale = r / np.sqrt(sigma2[:-1]), sigma
        else:
            x, scale = r, np.ones_like(sigma)
        if model.fhs_window is not None:
            x = x[-model.fhs_window :]
        unit = {}
        for s in SIDES if not model.symmetric else (None,):
            t = _finite_tail(pooled(x, None) if s is None else side_losses(x, s), conf)
            for side in SIDES if s is None else (s,):
                unit[side] = VarEs(t.var * scale, t.es * scale)
    out = {}
    for s in SIDES:
        out[f"var_{s}"] = to_notional_loss(scale_to_horizon(unit[s].var, horizon), s)
        out[f"es_{s}"] = to_notional_loss(scale_to_horizon(unit[s].es, horizon), s)
    return MarketsRisk(sigma=sigma, measure=model.measure, **out)


def _finite_tail(losses: FloatArray, confidence: float) -> VarEs:
    """Empirical VaR/ES per column of a ``(T, M)`` array, over each column's finite values.

    A residual of a flat stretch (zero volatility: ``0 / 0``, or a first move after it:
    ``r / 0``) is not a draw of the residual distribution and is left out; a column with no
    finite value gets NaN (the caller reports too little history).
    """
    ok = np.isfinite(losses)
    if ok.all():
        return empirical_var_es(losses, confidence, axis=0)
    var = np.full(losses.shape[1], np.nan)
    es = np.full(losses.shape[1], np.nan)
    for j in range(losses.shape[1]):
        col = losses[ok[:, j], j]
        if col.size:
            t = empirical_var_es(col, confidence)
            var[j], es[j] = float(t.var), float(t.es)
    return VarEs(var, es)


__all__ = [
    "SIDES",
    "MarketsRisk",
    "RiskModel",
    "RiskSeries",
    "Side",
    "VarEs",
    "check_confidence",
    "empirical_var_es",
    "fhs_var_es",
    "historical_var_es",
    "latest_risk_many",
    "normal_var_es",
    "pooled",
    "risk_series",
    "rolling_tail",
    "scale_to_horizon",
    "side_losses",
    "student_t_var_es",
    "tail_count",
    "to_notional_loss",
    "variance_forecasts",
]
