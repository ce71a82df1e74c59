"""The portfolio backtest as a person reads it: the run with its adversarial book, the table of
both periods, the chart, and the calibration rule's report.

``dmm backtest-portfolio`` calls :func:`run_with_adversarial`, :func:`format_portfolio_table`,
:func:`plot_portfolio` and, with ``--calibrate``, :func:`calibration_report`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from offchain.risk.portfolio_backtest import (
    Family,
    PortfolioBacktestResult,
    PreparedBacktest,
    prepare,
    run_portfolio_backtest,
)
from offchain.risk.portfolio_calibration import (
    CalibrationRule,
    calibrated_config,
    calibration_grid,
    choose,
    k_options,
    loose_config,
    propose_guardrails,
    shock_statistics,
)
from offchain.risk.portfolio_config import CALIBRATION_END, FROZEN_PORTFOLIO, PortfolioConfig
from offchain.risk.portfolio_search import AdversarialResult, search_adversarial
from offchain.risk.prices import Candles
from offchain.risk.scenarios import pool_at

log = logging.getLogger("dmm.portfolio_report")


def _day(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M")


def adversarial_at(prep: PreparedBacktest, row: int) -> AdversarialResult:
    """The search of :mod:`offchain.risk.portfolio_search` with what the keeper had after the
    close of ``row``: its pool, volatilities, signed shocks and the tiered rates in force."""
    cfg = prep.config
    design = cfg.design()
    return search_adversarial(
        pool_at(prep.history, row, design),
        prep.history.sigma[row],
        prep.replay.shocks[row][: cfg.n_scenarios],
        prep.rates[row],
        cfg.residual,
        cfg.floor,
        prep.markets,
        horizon=cfg.horizon,
        confidence=cfg.confidence,
        at=int(prep.history.timestamps[row]),
    )


def run_with_adversarial(
    candles: Sequence[Candles],
    config: PortfolioConfig = FROZEN_PORTFOLIO,
    start: int | None = None,
    end: int | None = None,
    progress: bool = False,
) -> PortfolioBacktestResult:
    """The backtest plus an ``adversarial`` family: the book found by the search at the end of
    the calibration period (the last hour before 2022 the keeper could sign, else the last
    before the window, else the window's first), and its mirror, walked forward like the
    others; the search is repeated at the window's last hour."""
    prep = prepare(candles, config, progress)
    rows = prep.rows(start, end)
    if len(rows) < 2:
        raise ValueError(f"{len(rows)} evaluated hours in the window; need at least 2")
    candidates = prep.rows(None, min(CALIBRATION_END, start or CALIBRATION_END))
    at = int(candidates[-1]) if len(candidates) else int(rows[0])
    found = adversarial_at(prep, at)
    latest = adversarial_at(prep, int(rows[-1]))
    w = found.weights
    labels = tuple(
        " ".join(f"{x:+.0%} {m}" for x, m in zip(s * w, prep.markets, strict=True)) for s in (1, -1)
    )
    family = Family("adversarial", np.vstack((w, -w)), labels)
    result = run_portfolio_backtest(
        candles, config, start, end, progress, extra_families=[family], prepared=prep
    )
    return dataclasses.replace(
        result,
        adversarial={"searched": found, "latest": latest},
    )


def format_portfolio_table(result: PortfolioBacktestResult) -> str:
    """Both periods (and the whole window), one line per family."""
    c = result.config
    head = (
        f"{'family':<14} {'books':>5} {'breach %':>8} {'max %':>6} {'Kupiec p':>8} "
        f"{'Chr. p':>7} {'min':>6} {'saving':>7} {'shortfall':>9} {'tiered sf':>9} "
        f"{'tiered br%':>10}"
    )
    lines = [
        f"portfolio margin {'/'.join(result.markets)}: K = {c.n_scenarios}, residual c = "
        f"{c.residual:g}, floor phi = {c.floor:g}; confidence {result.confidence:.0%}, horizon "
        f"{result.horizon} h. p-values: median over the family's books (min beside)"
    ]
    periods = [("window", result.overall), *result.periods.items()]
    for name, period in periods:
        lines += [
            "",
            f"{name}: {_day(period.start)} .. {_day(period.end)} UTC, {period.hours} hours",
            head,
            "-" * len(head),
        ]
        for fam in period.families.values():
            lines.append(
                f"{fam.name:<14} {fam.books:>5} {100 * fam.breach_rate:>8.3f} "
                f"{100 * fam.breach_rate_max:>6.3f} {fam.kupiec_p:>8.3f} "
                f"{fam.christoffersen_p:>7.3f} {fam.christoffersen_p_min:>6.3f} "
                f"{100 * fam.avg_margin_saving_vs_tiered:>6.1f}% {fam.total_shortfall:>9.4f} "
                f"{fam.tiered_total_shortfall:>9.4f} {100 * fam.tiered_breach_rate:>10.3f}"
            )
    for name, k in result.keeper.items():
        lines.append(
            f"keeper, {name}: {k['updates']} updates, {k['stale_hours']} stale hours; largest "
            f"|shock| {k['max_abs_shock_bps']} bps, largest step {k['max_step_bps']} bps"
        )
    for key, adv in (result.adversarial or {}).items():
        w = ", ".join(f"{m} {x:+.3f}" for m, x in zip(adv.markets, adv.weights, strict=True))
        lines.append(
            f"adversarial book ({key}, {_day(adv.at)} UTC): {w}; model 99% loss "
            f"{100 * adv.true_loss:.3f}% vs margin {100 * adv.margin:.3f}% of gross (tiered "
            f"{100 * adv.tiered:.3f}%, worst scenario {100 * adv.worst_scenario_loss:.3f}%): "
            f"ratio {adv.ratio:.3f}"
        )
    return "\n".join(lines)


def plot_portfolio(result: PortfolioBacktestResult, path: str | Path) -> Path:
    """Write a PNG: per family, the trailing 30-day average of margin, tiered sum and |loss|
    (fractions of gross notional), with the report period shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    path = Path(path)
    names = [n for n in result.series if n != "outright"]
    when = np.asarray(result.times).astype("datetime64[s]").astype(object)
    fig, axes = plt.subplots(len(names), 1, sharex=True, figsize=(13, 2.4 * len(names) + 1))
    axes = np.atleast_1d(axes)
    window = 24 * 30

    def trailing_mean(y: np.ndarray) -> np.ndarray:
        c = np.cumsum(np.insert(y, 0, 0.0))
        lo = np.maximum(np.arange(1, len(y) + 1) - window, 0)
        return (c[1:] - c[lo]) / (np.arange(1, len(y) + 1) - lo)

    for ax, name in zip(axes, names, strict=True):
        s = result.series[name]
        for key, style, label in (
            ("tiered", "-", "tiered sum"),
            ("margin", "-", "portfolio margin"),
            ("loss", ":", "|loss| next horizon"),
        ):
            ax.plot(when, 100 * trailing_mean(s[key]), style, lw=0.9, label=label)
        ax.set_ylabel(f"{name}\n% of gross")
        report = np.asarray(result.times) >= CALIBRATION_END
        if report.any():
            ax.axvspan(when[int(np.argmax(report))], when[-1], color="grey", alpha=0.12)
        ax.legend(loc="upper right", fontsize=7)
    axes[0].set_title(
        f"{'/'.join(result.markets)}: trailing 30-day averages per family "
        "(report period 2022-2023 shaded)"
    )
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def calibration_report(
    groups: Sequence[Sequence[Candles]],
    base: PortfolioConfig = FROZEN_PORTFOLIO,
    rule: CalibrationRule | None = None,
    progress: bool = False,
) -> tuple[str, PortfolioConfig]:
    """Run the rule of :mod:`offchain.risk.portfolio_calibration` on ``groups`` and say whether
    its choice equals ``base`` (the frozen values)."""
    rule = rule or CalibrationRule()
    loose = loose_config(base)
    ks = sorted(set.intersection(*(set(k_options(len(g))) for g in groups)))
    preps = [prepare(g, loose, progress, ks) for g in groups]
    points = calibration_grid(preps, rule)
    chosen = choose(points, rule)
    stats = shock_statistics(preps)
    bounds, step = propose_guardrails(stats, rule)
    config = calibrated_config(base, chosen, bounds, step)
    lines = ["calibration rule on data up to 2021-12-31", f"{'K':>3} {'phi':>5} {'c':>5} objective"]
    for k in sorted({p.n_scenarios for p in points}):
        at_k = max((p for p in points if p.n_scenarios == k), key=lambda p: p.objective)
        c = "-" if at_k.residual is None else f"{at_k.residual:.2f}"
        lines.append(f"{k:>3} {at_k.floor:>5.2f} {c:>5} {at_k.objective:.4f}")
    lines.append(
        f"chosen: K = {chosen.n_scenarios}, c = {chosen.residual}, phi = {chosen.floor} "
        f"(objective {chosen.objective:.4f})"
    )
    for key in chosen.savings:
        lines.append(
            f"  {key:<28} breach {100 * chosen.breach_rates[key]:.3f}%  Christoffersen p "
            f"{chosen.christoffersen[key]:.3f}  saving {100 * chosen.savings[key]:.1f}%"
        )
    lines.append(
        "shocks up to 2021 (bps): max |shock| "
        + ", ".join(f"{m} {v}" for m, v in stats.max_abs_shock.items())
        + "; max step "
        + ", ".join(f"{m} {v}" for m, v in stats.max_step.items())
        + "; 99.9% step "
        + ", ".join(f"{m} {v:.0f}" for m, v in stats.step_p999.items())
    )
    lines.append(f"guardrails: max_shock {bounds}, max_step {step}")
    same = config == base
    lines.append(
        "frozen values: "
        + ("equal to the rule's choice" if same else f"DIFFER: rule gives {config}")
    )
    return "\n".join(lines), config


__all__ = [
    "adversarial_at",
    "calibration_report",
    "format_portfolio_table",
    "plot_portfolio",
    "run_with_adversarial",
]
