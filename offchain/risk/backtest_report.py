"""Tables and charts of a backtest: what ``dmm backtest`` prints and draws."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from offchain.risk.backtest import BacktestResult


def _day(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M")


def format_table(result: BacktestResult) -> str:
    """The run as a fixed-width table (long/short pairs as ``L/S``; rates and rises in %)."""
    head = (
        f"{'model':<28} {'breach % L/S':>13} {'Chr.ind p L/S':>13} {'DQ p L/S':>13} "
        f"{'Kupiec p L/S':>13} {'avg %':>6} {'peak %':>6} {'pk/tr':>5} {'1d +pt':>6} "
        f"{'5d +pt':>6} {'30d +pt':>7} {'shortfall':>9} {'intra-h % L/S':>13}"
    )
    lines = [
        f"{result.asset} ({result.market}): {result.hours} hours scored, "
        f"{_day(int(result.times[0]) - 3600)} .. {_day(int(result.times[-1]) - 3600)} UTC; "
        f"target breach rate {1 - result.confidence:.2%}, horizon {result.horizon} h",
        head,
        "-" * len(head),
    ]
    for name, m in result.models.items():
        d = m.spec_dict()
        lines.append(
            f"{name:<28} "
            f"{100 * m.breach_rate_long:>6.3f}/{100 * m.breach_rate_short:<6.3f} "
            f"{m.independence_long.p_value:>6.3f}/{m.independence_short.p_value:<6.3f} "
            f"{m.dq_long.p_value:>6.3f}/{m.dq_short.p_value:<6.3f} "
            f"{m.kupiec_long.p_value:>6.3f}/{m.kupiec_short.p_value:<6.3f} "
            f"{100 * m.avg_margin_rate:>6.3f} {100 * m.peak_margin_rate:>6.2f} "
            f"{m.peak_to_trough:>5.1f} {100 * d['max_increase_1d']:>6.2f} "
            f"{100 * d['max_increase_5d']:>6.2f} {100 * d['max_increase_30d']:>7.2f} "
            f"{m.total_shortfall:>9.4f} "
            f"{100 * d['breach_rate_intrahour_long']:>6.3f}/"
            f"{100 * d['breach_rate_intrahour_short']:<6.3f}"
        )
    rec = result.models["recommended"]
    for base in (
        "static_ex_ante_equal_margin",
        "static_ex_ante",
        "static_equal_margin",
        "previous",
    ):
        other = result.models.get(base)
        if other is not None and other.total_shortfall > 0:
            cut = 1 - rec.total_shortfall / other.total_shortfall
            lines.append(
                f"shortfall vs {base} (avg {100 * other.avg_margin_rate:.3f}%): "
                f"{cut:+.1%} ({rec.total_shortfall:.4f} vs {other.total_shortfall:.4f})"
            )
    lines.append("models: " + "; ".join(f"{k}: {m.description}" for k, m in result.models.items()))
    return "\n".join(lines)


def _zone(light: dict[str, Any]) -> str:
    return light["zone"] + (" (over-covered)" if light["over_covered"] else "")


def format_validation(doc: dict[str, Any]) -> str:
    """The validation JSON (:func:`offchain.risk.backtest_validation.validate`) as text."""
    lines = [f"validation of {doc['market']} ({doc['asset']}), {doc['hours']} hours"]
    tests = doc["models"]["recommended"]
    tl = tests["traffic_light"]
    lines.append(
        "recommended: conditional coverage p L/S "
        f"{tests['conditional_coverage_p']['long']:.3f}/{tests['conditional_coverage_p']['short']:.3f}"
        f", duration p {tests['duration_p']['long']:.3f}/{tests['duration_p']['short']:.3f}"
        f", traffic light {_zone(tl['long'])}/{_zone(tl['short'])}"
    )
    for side in ("long", "short"):
        groups = doc["regimes"][side]
        cells = ", ".join(
            f"{100 * g['low']:.2f}-{100 * g['high']:.2f}%: {100 * g['breach_rate']:.2f}%"
            f" (p {g['kupiec_p']:.2f})"
            for g in groups
        )
        lines.append(f"breaches by margin quintile, {side}s: {cells}")
    es = doc["es_backtest"]
    lines.append(
        f"ES test (Acerbi-Szekely Z2, simulated p): long {es['long']['z2']:+.3f} "
        f"(p {es['long']['p_value']:.3f}), short {es['short']['z2']:+.3f} "
        f"(p {es['short']['p_value']:.3f})"
    )
    for name, cut in doc["shortfall_cuts"].items():
        lines.append(
            f"shortfall cut vs {name}: {cut['cut']:+.1%} "
            f"(95% block bootstrap {cut['low']:+.1%} .. {cut['high']:+.1%}; "
            f"baseline avg {100 * cut['baseline_avg_margin']:.3f}%)"
        )
    out = doc.get("outages") or {}
    if out:
        line = (
            f"keeper outages ({out['outage_hours']} h down, {out['stale_hours']} h stale): breach "
            f"rate {100 * out['breach_rate_with_outages']['long']:.3f}/"
            f"{100 * out['breach_rate_with_outages']['short']:.3f}%, peak/trough "
            f"{out['peak_to_trough_with_outages']:.1f}, 1d rise "
            f"{100 * out['max_increase_1d_with_outages']:.2f} pt"
        )
        if "breach_rate_stale_hours" in out:
            line += (
                f"; stale hours: breach {100 * out['breach_rate_stale_hours']['long']:.2f}/"
                f"{100 * out['breach_rate_stale_hours']['short']:.2f}% (live model in the same "
                f"hours {100 * out['breach_rate_same_hours_live']['long']:.2f}/"
                f"{100 * out['breach_rate_same_hours_live']['short']:.2f}%), margin "
                f"{100 * out['avg_margin_stale_hours']:.3f}% vs live "
                f"{100 * out['avg_margin_same_hours_live']:.3f}%, below live in "
                f"{out['share_stale_below_live']:.0%} of them"
            )
        lines.append(line)
    for row in doc["horizons"]:
        h = row["horizon_hours"]
        parts = []
        for name in ("shipped_1h_margin", f"model_at_{h}h"):
            e = row[name]
            parts.append(
                f"{name} {100 * e['long']['breach_rate']:.2f}/"
                f"{100 * e['short']['breach_rate']:.2f}% (Chr. p "
                f"{e['long']['christoffersen_p']:.2f}/{e['short']['christoffersen_p']:.2f},"
                f" avg {100 * e['avg_margin_rate']:.2f}%)"
            )
        lines.append(
            f"{h}-hour loss, {row['windows']} non-overlapping windows: " + "; ".join(parts)
        )
    return "\n".join(lines)


def plot_backtest(result: BacktestResult, path: str | Path) -> Path:
    """Write a PNG: price with breach markers, and the margin rates in force."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    path = Path(path)
    when = np.asarray(result.times.astype("datetime64[s]").astype(object))
    rec = result.margins["recommended"]
    b_long = result.loss_long > rec
    b_short = result.loss_short > rec
    fig, (ax_p, ax_m) = plt.subplots(2, 1, sharex=True, figsize=(13, 8), height_ratios=[3, 2])
    ax_p.plot(when, result.close, lw=0.6, color="black", label=f"{result.asset} close")
    ax_p.scatter(
        when[b_long],
        result.close[b_long],
        s=10,
        marker="v",
        color="tab:red",
        label=f"long breach ({b_long.sum()})",
        zorder=3,
    )
    ax_p.scatter(
        when[b_short],
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
        f"{result.asset}: shipped margin ({result.market}), target "
        f"{1 - result.confidence:.0%} breaches / {result.horizon} h"
    )
    ax_m.plot(when, 100 * rec, lw=0.7, color="tab:blue", label="recommended (in force)")
    for name, style in (
        ("previous", "-"),
        ("static_ex_ante_equal_margin", "--"),
        ("flat_3pct", ":"),
    ):
        if name in result.margins:
            ax_m.plot(when, 100 * result.margins[name], style, lw=0.6, alpha=0.8, label=name)
    worst = np.maximum(result.loss_long, result.loss_short)
    ax_m.plot(when, 100 * worst, lw=0.3, color="grey", alpha=0.5, label="|loss| next horizon")
    ax_m.set_ylabel("maintenance rate, % of notional")
    ax_m.set_ylim(0, max(10.0, 100 * float(rec.max()) * 1.2))
    ax_m.legend(loc="upper left", fontsize=8)
    ax_m.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["format_table", "format_validation", "plot_backtest"]
