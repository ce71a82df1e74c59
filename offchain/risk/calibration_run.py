"""``dmm calibrate``: apply the written rule (:mod:`offchain.risk.selection`) and record everything.

One run, on the price files of every market of the base configuration:

1. the rule on the data through 2021-12-31 (the shipped choice);
2. the nested walk-forward inside that period (choose through 2019, test 2020; through 2020,
   test 2021);
3. the implied-volatility candidate's blend weight, by the same objective on the only period
   with both DVOL and no report data (2021-04-24 to 2021-12-31; BTC hourly, ETH daily DVOL);
4. after the freeze: the sensitivity surface (each parameter one grid step either way) and the
   frontier of floor and speed limit, each on the calibration period *and* the report period.
   Nothing of step 4 feeds back into steps 1-3.

Outputs: the frozen configuration as YAML (``deploy/risk.yaml``), ``calibration.json`` with
every figure, ``calibration.md`` (the tables of the README) and ``frontier.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from offchain import WAD
from offchain.risk.implied_vol import align_to_candles, hourly_volatility, load_vol_index
from offchain.risk.prices import Candles
from offchain.risk.risk_config import MarketRisk, RiskConfig
from offchain.risk.selection import (
    GRID,
    Evaluator,
    Figures,
    Goals,
    Selection,
    candles_before,
    market_from_params,
    score,
    select,
    sensitivity,
    split_figures,
    walk_forward,
)

log = logging.getLogger("dmm.calibrate")

THROUGH = "2022-01-01"  # the rule sees candles that open before this
REPORT_UNTIL = "2024-01-01"
FOLDS = (("2020-01-01", "2021-01-01"), ("2021-01-01", "2022-01-01"))
DVOL_FROM = "2021-04-24"  # a month after the index starts (2021-03-24)
DVOL_WEIGHTS = (0.25, 0.5, 0.75, 1.0)


def utc(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())


@dataclass
class CalibrationRun:
    """Everything one ``dmm calibrate`` produced."""

    selection: Selection
    folds: list[dict[str, object]]
    dvol: dict[str, object]
    surface: list[dict[str, object]]
    frontier: list[dict[str, object]]
    report: dict[str, dict[str, object]]
    goals: Goals


def dvol_weight(
    candles: Mapping[str, Candles],
    markets: Mapping[str, MarketRisk],
    indices: Mapping[str, Path],
    goals: Goals,
) -> dict[str, object]:
    """The blend weight of the implied-volatility candidate (see the module docstring)."""
    implied = {}
    for name, path in indices.items():
        if name in candles:
            implied[name] = hourly_volatility(align_to_candles(load_vol_index(path), candles[name]))
    if not implied:
        return {"weight": None, "why": "no volatility index given"}
    through, start = utc(THROUGH), utc(DVOL_FROM)
    cut = {n: candles_before(candles[n], through) for n in implied}
    ev = Evaluator(
        cut,
        {n: markets[n] for n in implied},
        {n: (start, through) for n in implied},
        goals=goals,
        implied=implied,
    )
    rows = []
    for w in (0.0, *DVOL_WEIGHTS):
        figs = {}
        for n in implied:
            m = markets[n]
            m = dataclasses.replace(m, model=dataclasses.replace(m.model, vol_index_weight=w))
            figs[n] = ev.figures(m, start, through)
        ref = {n: ev.reference_shortfall(n, start, through) for n in implied}
        rows.append(
            {
                "weight": w,
                "score": list(score(figs, ref, goals)),
                "figures": {n: f.as_dict() for n, f in figs.items()},
            }
        )
    blends = [r for r in rows if r["weight"] > 0]
    best = min(blends, key=lambda r: tuple(r["score"]))  # type: ignore[arg-type]
    return {
        "weight": best["weight"],
        "window": [DVOL_FROM, THROUGH],
        "markets": sorted(implied),
        "rows": rows,
    }


def frontier(
    candles: Mapping[str, Candles], selection: Selection, goals: Goals
) -> list[dict[str, object]]:
    """Floor x speed limit per market, everything else as chosen, on both periods."""
    ev = Evaluator(candles, selection.markets, {n: (None, None) for n in candles}, goals=goals)
    through = utc(THROUGH)
    rows = []
    for name, chosen in selection.markets.items():
        for floor in GRID["floor"]:
            for budget in GRID["rise_budget"]:
                params = dict(selection.params, rise_budget=budget)
                m = market_from_params(chosen, params, floor)
                m = dataclasses.replace(
                    m,
                    guardrails=dataclasses.replace(
                        m.guardrails,
                        stale_multiplier=min(
                            max(chosen.guardrails.stale_multiplier, m.guardrails.min_multiplier),
                            m.guardrails.max_multiplier,
                        ),
                    ),
                )
                cal, rep = split_figures(ev, m, through, utc(REPORT_UNTIL))
                rows.append(
                    {
                        "market": name,
                        "floor": floor,
                        "rise_budget": budget,
                        "chosen": floor == selection.floors[name]
                        and budget == selection.params["rise_budget"],
                        "calibration": {
                            "figures": cal.as_dict(),
                            "checks": cal.checks(goals),
                            "relative_shortfall": cal.shortfall
                            / ev.reference_shortfall(name, None, through),
                        },
                        "report": {"figures": rep.as_dict(), "checks": rep.checks(goals)},
                    }
                )
    return rows


def run(
    candles: Mapping[str, Candles],
    base: RiskConfig,
    indices: Mapping[str, Path] | None = None,
    progress: bool = False,
    folds: bool = True,
) -> CalibrationRun:
    """Steps 1-4 of the module docstring."""
    goals = Goals()
    bases = {m.name: m for m in base.markets if m.name in candles}
    through = utc(THROUGH)
    log.info("the rule on data before %s", THROUGH)
    chosen = select(candles, bases, through, goals, progress=progress)
    fold_rows = []
    if folds:
        log.info("nested walk-forward: %s", FOLDS)
        fold_rows = walk_forward(
            candles, bases, [(utc(a), utc(b)) for a, b in FOLDS], goals, progress
        )
    dvol = dvol_weight(candles, chosen.markets, indices or {}, goals)
    log.info("frozen; now the report period (never fed back)")
    ev = Evaluator(candles, chosen.markets, {n: (None, None) for n in candles}, goals=goals)
    report = {}
    for name, m in chosen.markets.items():
        cal, rep = split_figures(ev, m, through, utc(REPORT_UNTIL))
        report[name] = {
            "calibration": {"figures": cal.as_dict(), "checks": cal.checks(goals)},
            "report": {"figures": rep.as_dict(), "checks": rep.checks(goals)},
        }
    surface = sensitivity(candles, chosen, through, goals, progress=progress)
    front = frontier(candles, chosen, goals)
    return CalibrationRun(chosen, fold_rows, dvol, surface, front, report, goals)


# ---------------------------------------------------------------------------------------------
# Outputs


def _num(x: int) -> str:
    """A WAD integer as the shortest exact decimal."""
    d = Decimal(x) / Decimal(WAD)
    text = format(d.normalize(), "f")
    return text


def _kept_sections(base: RiskConfig, written: set[str]) -> dict[str, Any]:
    """The base file's ``portfolio:`` and ``profiles:`` sections, without the scenario groups
    whose markets are not all written."""
    kept = {k: v for k, v in base.sections.items()}
    portfolio = kept.get("portfolio")
    if isinstance(portfolio, dict) and isinstance(portfolio.get("groups"), list):
        groups = [
            g
            for g in portfolio["groups"]
            if all(str(m).upper() in written for m in g.get("markets", []))
        ]
        kept["portfolio"] = {**portfolio, "groups": groups}
    return kept


def to_yaml(run_: CalibrationRun, base: RiskConfig) -> str:
    """The frozen configuration, with the rule and its values in comments."""
    sel = run_.selection
    p = sel.params
    lines = [
        "# The shipped risk configuration: one source for `dmm backtest` (default --config), the",
        "# keeper's model, the devnet (DEVNET_GUARDRAILS / tiers) and deploy/testnet.example.yaml",
        "# (whose guardrails must equal these: tests/risk/test_risk_config.py).",
        "#",
        "# Every model parameter and guardrail below was chosen by the written rule of",
        "# offchain/risk/selection.py on hourly candles through 2021-12-31 only (`make calibrate`",
        "# writes this file), then frozen; 2022-2023 is the report period. Do not edit by hand.",
        f"# Rule score on the calibration period: {sel.score[0]} failed constraints, "
        f"relative shortfall {sel.score[1]:.4f}.",
        f"# Shared choices: {json.dumps({k: _plain(v) for k, v in p.items()})}",
        f"# Floors (lowest maintenance rate): {json.dumps(sel.floors)}",
        "",
        f"confidence: {base.confidence}",
        f"dvol_candidate_weight: {run_.dvol.get('weight') or base.dvol_weight}",
        "markets:",
    ]
    for name, m in sel.markets.items():
        g = m.guardrails
        model = m.model
        lines += [
            f"  - name: {name}",
            f"    id: {m.market_id}",
            f"    symbols: [{', '.join(m.symbols)}]",
            "    tiers:",
            *[
                f"      - {{notional_floor_usd: {_num(t.notional_floor)}, "
                f'maintenance_rate: "{_num(t.maintenance_rate)}"}}'
                for t in m.tiers
            ],
            f"    initial_ratio: {_num(m.initial_ratio)}",
            "    guardrails:",
            f'      min_multiplier: "{_num(g.min_multiplier)}"',
            f'      max_multiplier: "{_num(g.max_multiplier)}"',
            f'      max_increase: "{_num(g.max_increase)}"',
            f'      max_decrease: "{_num(g.max_decrease)}"',
            f"      min_decrease_interval: {g.min_decrease_interval}",
            f"      heartbeat: {g.heartbeat}",
            f'      stale_multiplier: "{_num(g.stale_multiplier)}"',
            f"      increase_ramp: {g.increase_ramp}",
            f'      max_funding_rate_per_second: "{_num(g.max_funding_rate)}"',
            f"    funding_reserve_seconds: {m.funding_reserve_seconds}",
            f"    hysteresis: {m.hysteresis}",
            "    model:",
        ]
        for key, value in model.params().items():
            text = "null" if value is None else value
            lines.append(f"      {key}: {text}")
    kept = _kept_sections(base, {name.upper() for name in sel.markets})
    if kept:
        # Frozen by their own rules (portfolio calibration, profile classes): kept as they are.
        lines += ["", "# Kept from the base configuration (frozen by their own rules)."]
        lines.append(yaml.safe_dump(kept, sort_keys=False).rstrip())
    return "\n".join(lines) + "\n"


FIGURE_COLUMNS = (
    "breach % L/S",
    "Chr. ind p L/S",
    "DQ p L/S",
    "peak/trough",
    "1d rise pt",
    "shortfall",
    "constraints",
)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _pair(rates: list[float]) -> str:
    return f"{100 * rates[0]:.2f}/{100 * rates[1]:.2f}"


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _checks_cell(checks: Mapping[str, bool]) -> str:
    failed = [k for k, ok in checks.items() if not ok]
    return "all pass" if not failed else "fails " + ", ".join(failed)


def _fig_cells(f: Mapping[str, Any]) -> str:
    br, ind, dq = f["breach_rate"], f["independence_p"], f["dq_p"]
    return (
        f"{100 * br[0]:.2f}/{100 * br[1]:.2f} | {ind[0]:.3f}/{ind[1]:.3f} | "
        f"{dq[0]:.3f}/{dq[1]:.3f} | "
        f"{f['peak_to_trough']:.2f} | {100 * f['max_increase_1d']:.2f} | {f['shortfall']:.3f}"
    )


def to_markdown(run_: CalibrationRun) -> str:
    """The tables the README quotes."""
    out = ["### The rule's choice", "", "| parameter | value |", "| --- | --- |"]
    for k, v in run_.selection.params.items():
        out.append(f"| `{k}` | {list(v) if isinstance(v, tuple) else v} |")
    for k, v in run_.selection.floors.items():
        out.append(f"| `floor[{k}]` | {v:.2%} |")
    for name, m in run_.selection.markets.items():
        out.append(f"| `stale_multiplier[{name}]` | {m.guardrails.stale_multiplier / WAD:.4g}x |")
    out += ["", f"Trail: {json.dumps(run_.selection.trail)}", ""]
    head = _row(["market", "period", *FIGURE_COLUMNS])
    out += ["### Both periods (frozen configuration)", "", head, "| --- " * 9 + "|"]
    for name, rows in run_.report.items():
        for period in ("calibration", "report"):
            r = rows[period]
            out.append(
                f"| {name} | {period} | {_fig_cells(r['figures'])} | {_checks_cell(r['checks'])} |"
            )
    if run_.folds:
        out += [
            "",
            "### Nested walk-forward (the rule run on earlier data, tested on the next year)",
            "",
            _row(["chosen through", "tested on", "market", *FIGURE_COLUMNS]),
            "| --- " * 10 + "|",
        ]
        for fold in run_.folds:
            for name, t in fold["test"].items():  # type: ignore[union-attr]
                out.append(
                    f"| {fold['selected_through']} | until {fold['tested_until']} | {name} | "
                    f"{_fig_cells(t['figures'])} | {_checks_cell(t['checks'])} |"
                )
    out += [
        "",
        "### Sensitivity surface (one grid step either way; constraints failed)",
        "",
        "| parameter | value | market | calibration | report |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in run_.surface:
        out.append(
            f"| {row['param']} | {row['value']} | {row['market']} | "
            f"{_checks_cell(row['calibration']['checks'])} | "
            f"{_checks_cell(row['report']['checks'])} |"
        )
    out += [
        "",
        "### Frontier: floor x speed limit (others as chosen)",
        "",
        _row(
            [
                "market",
                "floor %",
                "rise budget pt",
                "calib. breach % L/S",
                "calib. rel. shortfall",
                "calib. constraints",
                "report breach % L/S",
                "report shortfall",
                "report constraints",
            ]
        ),
        "| --- " * 9 + "|",
    ]
    for row in run_.frontier:
        c, r = row["calibration"], row["report"]
        budget = "none" if row["rise_budget"] is None else f"{100 * row['rise_budget']:.0f}"
        star = " (chosen)" if row["chosen"] else ""
        out.append(
            f"| {row['market']}{star} | {100 * row['floor']:.2f} | {budget} | "
            f"{_pair(c['figures']['breach_rate'])} | "
            f"{c['relative_shortfall']:.3f} | {_checks_cell(c['checks'])} | "
            f"{_pair(r['figures']['breach_rate'])} | "
            f"{r['figures']['shortfall']:.3f} | {_checks_cell(r['checks'])} |"
        )
    if run_.dvol.get("rows"):
        out += [
            "",
            "### Implied-volatility blend weight "
            f"({run_.dvol['window'][0]} .. {run_.dvol['window'][1]})",
            "",
            "| weight | failed | relative shortfall |",
            "| --- | --- | --- |",
        ]
        for row in run_.dvol["rows"]:  # type: ignore[union-attr]
            out.append(f"| {row['weight']} | {row['score'][0]} | {row['score'][1]:.4f} |")
        out.append(f"\nchosen weight: {run_.dvol['weight']}")
    return "\n".join(out) + "\n"


def to_json(run_: CalibrationRun) -> dict[str, object]:
    sel = run_.selection
    return {
        "goals": dataclasses.asdict(run_.goals),
        "grid": {
            k: [list(v) if isinstance(v, tuple) else v for v in vals] for k, vals in GRID.items()
        },
        "selection": {
            "through": THROUGH,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in sel.params.items()},
            "floors": sel.floors,
            "score": list(sel.score),
            "figures": {n: f.as_dict() for n, f in sel.figures.items()},
            "trail": sel.trail,
            "stale_multiplier": {
                n: m.guardrails.stale_multiplier / WAD for n, m in sel.markets.items()
            },
        },
        "walk_forward": run_.folds,
        "dvol": run_.dvol,
        "report": run_.report,
        "sensitivity": run_.surface,
        "frontier": run_.frontier,
    }


def plot_frontier(run_: CalibrationRun, path: str | Path) -> Path:
    """Calibration-period relative shortfall against breach rate for every floor and speed
    limit, per market; the chosen point starred, points meeting every constraint filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markets = sorted({r["market"] for r in run_.frontier})
    fig, axes = plt.subplots(1, len(markets), figsize=(5 * len(markets), 4.5), squeeze=False)
    budgets = list(GRID["rise_budget"])
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(budgets)))
    for ax, name in zip(axes[0], markets, strict=True):
        for row in (r for r in run_.frontier if r["market"] == name):
            c = row["calibration"]
            br = 100 * float(np.mean(c["figures"]["breach_rate"]))
            ok = all(c["checks"].values())
            colour = colours[budgets.index(row["rise_budget"])]
            ax.scatter(
                br,
                c["relative_shortfall"],
                s=20 + 600 * row["floor"],
                facecolors=colour if ok else "none",
                edgecolors=colour,
                lw=1.2,
            )
            if row["chosen"]:
                ax.scatter(
                    br, c["relative_shortfall"], marker="*", s=220, color="tab:red", zorder=5
                )
        ax.axvspan(
            100 * run_.goals.breach_low, 100 * run_.goals.breach_high, color="grey", alpha=0.12
        )
        ax.set_title(f"{name}: floor (size) x rise budget (colour)")
        ax.set_xlabel("breach rate, % of hours (2018-2021)")
        ax.set_ylabel("shortfall / previous model's")
    handles = [
        plt.Line2D(
            [],
            [],
            marker="o",
            ls="",
            color=colours[i],
            label="no limit" if b is None else f"rise <= {100 * b:.0f} pt/day",
        )
        for i, b in enumerate(budgets)
    ]
    axes[0][0].legend(handles=handles, fontsize=8, loc="upper right")
    fig.suptitle("Frontier on the calibration period: filled = every constraint met; star = chosen")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "CalibrationRun",
    "Figures",
    "dvol_weight",
    "frontier",
    "plot_frontier",
    "run",
    "to_json",
    "to_markdown",
    "to_yaml",
]
