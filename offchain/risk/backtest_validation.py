"""Validation of a backtest beyond its headline figures (``dmm backtest``'s ``*_validation.json``).

:func:`validate` adds, for the recommended model of a
:class:`~offchain.risk.backtest.BacktestResult`:

* breaches by margin regime (quintiles of the margin in force), per side, with Kupiec per group;
* conditional coverage, duration test and Basel traffic light of every model;
* the Acerbi-Szekely ``Z2`` ES test with critical values simulated from the model's residual tail;
* bootstrap intervals on the shortfall cut against each static baseline and the previous model;
* **keeper outages** replayed (:class:`~offchain.risk.backtest.OutagePlan`): what the registry's
  stale fallback does to coverage and margin while no update lands;
* **liquidation horizon**: on non-overlapping ``h``-hour windows, the shipped one-hour margin and
  the model re-run at ``h`` hours, each against the ``h``-hour loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from offchain.risk.backtest import BacktestConfig, BacktestResult, ModelResult, horizon_losses
from offchain.risk.coverage_tests import (
    bootstrap_shortfall_cut,
    christoffersen,
    kupiec_pof,
    z2_test,
)
from offchain.risk.margin_model import model_variance, proposal_series, residuals
from offchain.risk.prices import Candles
from offchain.risk.procyclicality import increases, peak_to_trough
from offchain.risk.replay import replay_guardrails, update_times
from offchain.risk.risk_measures import pooled, tail_count

FloatArray = npt.NDArray[np.float64]

CUT_BASELINES = ("static_ex_ante_equal_margin", "static_ex_ante", "static_equal_margin", "previous")


def _side(test_long: object, test_short: object) -> dict[str, object]:
    return {"long": test_long, "short": test_short}


def model_tests(m: ModelResult) -> dict[str, object]:
    """The tests of one model that the SPEC JSON leaves out."""
    return {
        "conditional_coverage_p": _side(m.cc_long.p_value, m.cc_short.p_value),
        "duration_p": _side(m.duration_long.p_value, m.duration_short.p_value),
        "traffic_light": _side(
            dataclasses.asdict(m.traffic_long), dataclasses.asdict(m.traffic_short)
        ),
        "clustered_breaches": _side(m.clustered_long, m.clustered_short),
        "trough_margin_rate": m.trough_margin_rate,
        "pushes": m.pushes,
    }


def regimes(m: ModelResult) -> dict[str, list[dict[str, float]]]:
    """Breach rate per quintile of the margin in force, per side."""
    out = {}
    for side, groups in (("long", m.regimes_long), ("short", m.regimes_short)):
        out[side] = [
            {
                "low": g.low,
                "high": g.high,
                "hours": g.hours,
                "breach_rate": g.rate,
                "kupiec_p": g.kupiec.p_value,
            }
            for g in groups
        ]
    return out


def es_backtest(
    candles: Candles, config: BacktestConfig, result: BacktestResult
) -> dict[str, object]:
    """``Z2`` per side: VaR = the margin in force, ES = the margin times the model's ES/VaR ratio
    of that hour; critical values from the residual tail at the end of the window."""
    market = config.market
    model = market.model
    w = result.window
    series = proposal_series(candles, model, market.floor_rate, market.cap_rate)
    ratio = (series.es / series.var)[w.start : w.stop]
    ratio = np.where(np.isfinite(ratio) & (ratio >= 1), ratio, 1.0)
    margin = result.margins["recommended"]
    r = candles.log_returns()
    z = residuals(r, np.sqrt(model_variance(r, model)))[: w.stop]
    z = z[np.isfinite(z)]
    if model.tail_window is not None:
        z = z[-model.tail_window :]
    losses = np.sort(pooled(z, None))
    k = tail_count(losses.size, model.quantile)
    tail = losses[-k:]
    ratios = tail / tail.mean()
    alpha = 1 - config.confidence
    out = {}
    for side, loss in (("long", result.losses.long), ("short", result.losses.short)):
        t = z2_test(loss, margin, margin * ratio, alpha, ratios)
        out[side] = {"z2": t.statistic, "p_value": t.p_value}
    return out


def shortfall_cuts(result: BacktestResult, reps: int = 1000) -> dict[str, dict[str, float]]:
    """Bootstrap intervals on ``1 - SF(recommended) / SF(baseline)`` (95%, weekly blocks)."""
    out = {}
    rec = result.margins["recommended"]
    for name in CUT_BASELINES:
        if name not in result.margins:
            continue
        try:
            cut = bootstrap_shortfall_cut(
                result.losses.long, result.losses.short, rec, result.margins[name], reps=reps
            )
        except ValueError:
            continue
        out[name] = {
            "cut": cut.cut,
            "low": cut.low,
            "high": cut.high,
            "level": cut.level,
            "baseline_avg_margin": float(np.mean(result.margins[name])),
        }
    return out


def outages(candles: Candles, config: BacktestConfig, result: BacktestResult) -> dict[str, object]:
    """The recommended proposals replayed with the keeper down per :class:`OutagePlan`."""
    if config.outages is None:
        return {}
    market = config.market
    w = result.window
    lands, ends = update_times(candles, w, market.model.horizon)
    skip = config.outages.mask(w.stop - w.replay_from)
    rep = replay_guardrails(
        result.proposal, lands, market.guardrails, market.tiers, market.hysteresis, ends, skip=skip
    )
    sl = slice(w.start - w.replay_from, w.stop - w.replay_from)
    margin, stale = rep.rate[sl], rep.stale[sl]
    live = result.margins["recommended"]
    ll, ls = result.losses.long, result.losses.short
    out: dict[str, object] = {
        "plan": dataclasses.asdict(config.outages),
        "outage_hours": int(skip[sl].sum()),
        "stale_hours": int(stale.sum()),
        "breach_rate_with_outages": _side(float(np.mean(ll > margin)), float(np.mean(ls > margin))),
        "peak_to_trough_with_outages": peak_to_trough(margin),
        **{f"{k}_with_outages": v for k, v in increases(margin).items()},
    }
    if stale.any():
        out |= {
            "breach_rate_stale_hours": _side(
                float(np.mean(ll[stale] > margin[stale])), float(np.mean(ls[stale] > margin[stale]))
            ),
            "breach_rate_same_hours_live": _side(
                float(np.mean(ll[stale] > live[stale])), float(np.mean(ls[stale] > live[stale]))
            ),
            "avg_margin_stale_hours": float(np.mean(margin[stale])),
            "avg_margin_same_hours_live": float(np.mean(live[stale])),
            "share_stale_below_live": float(np.mean(margin[stale] < live[stale] - 1e-12)),
            "stale_rate": market.guardrails.stale_multiplier * market.tier0_rate / 10**18,
        }
    return out


def horizons(
    candles: Candles, config: BacktestConfig, result: BacktestResult
) -> list[dict[str, object]]:
    """Non-overlapping ``h``-hour windows: the shipped margin (in force right after each update)
    and the model at horizon ``h``, against the ``h``-hour loss."""
    market = config.market
    w = result.window
    p = 1 - config.confidence
    out = []
    for h in config.horizons:
        if w.stop - h + 1 - w.start < 10 * h:
            continue
        starts = np.arange(w.start, w.stop - h + 1, h)
        loss_l, loss_s = horizon_losses(candles.close, w.start, w.stop - h + 1, h)
        pick = starts - w.start
        rows: dict[str, object] = {"horizon_hours": h, "windows": int(starts.size)}
        shipped = result.intrahour_margins["recommended"][: w.stop - h + 1 - w.start]
        model_h = dataclasses.replace(market.model, horizon=h)
        series = proposal_series(candles, model_h, market.floor_rate, market.cap_rate)
        lands, _ = update_times(candles, w, 1)
        rep = replay_guardrails(
            series.proposal[w.replay_from : w.stop],
            lands,
            market.guardrails,
            market.tiers,
            market.hysteresis,
        )
        rehorizoned = rep.rate[w.start - w.replay_from : w.stop - h + 1 - w.replay_from]
        for name, margin in (("shipped_1h_margin", shipped), (f"model_at_{h}h", rehorizoned)):
            m = margin[pick]
            entry = {"avg_margin_rate": float(np.mean(m))}
            for side, loss in (("long", loss_l[pick]), ("short", loss_s[pick])):
                b = loss > m
                entry[side] = {
                    "breach_rate": float(b.mean()),
                    "kupiec_p": kupiec_pof(b, p).p_value,
                    "christoffersen_p": christoffersen(b, p)[0].p_value,
                }
            rows[name] = entry
        out.append(rows)
    return out


def validate(
    candles: Candles, config: BacktestConfig, result: BacktestResult, reps: int = 1000
) -> dict[str, object]:
    """Every figure of the module docstring, as plain JSON values."""
    rec = result.models["recommended"]
    return {
        "asset": result.asset,
        "market": result.market,
        "hours": result.hours,
        "first_hour": int(result.times[0]) - 3600,
        "last_hour": int(result.times[-1]) - 3600,
        "recommended": describe_model(config),
        "models": {name: model_tests(m) for name, m in result.models.items()},
        "regimes": regimes(rec),
        "es_backtest": es_backtest(candles, config, result),
        "shortfall_cuts": shortfall_cuts(result, reps),
        "outages": outages(candles, config, result),
        "horizons": horizons(candles, config, result),
    }


def describe_model(config: BacktestConfig) -> dict[str, object]:
    market = config.market
    g = market.guardrails
    return {
        "market": market.name,
        "model": market.model.params(),
        "floor_rate": market.floor_rate,
        "cap_rate": market.cap_rate,
        "guardrails": dataclasses.asdict(g),
        "hysteresis": market.hysteresis,
    }


__all__ = [
    "CUT_BASELINES",
    "es_backtest",
    "horizons",
    "model_tests",
    "outages",
    "regimes",
    "shortfall_cuts",
    "validate",
]
