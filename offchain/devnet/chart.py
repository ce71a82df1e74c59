"""The demo's chart: prices with liquidation and backstop markers, the hedged and outright books'
maintenance against their tiered sums, multipliers in force."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offchain import WAD
from offchain.devnet.report import DemoResult, multipliers
from offchain.devnet.scenario import MarketPath

# ---------------------------------------------------------------------------------------------
# Chart


def plot_demo(result: DemoResult, path: str | Path) -> Path:
    """Write a PNG: each market's price with liquidation and backstop markers, and the
    multipliers in force."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    x = _chart_x(result)
    paths = result.scenario.paths
    pair = "hedged" in result.roles and "outright" in result.roles
    rows = len(paths) + 1 + pair
    fig, axes = plt.subplots(rows, 1, sharex=True, figsize=(12, 3.2 * rows))
    for ax, market in zip(axes, paths, strict=False):
        _plot_market(ax, result, market, x)
    if pair:
        _plot_pair(axes[len(paths)], result, x)
    ax_m = axes[-1]
    for market, style in zip(paths, ("-", "--", ":", "-."), strict=False):
        values = multipliers(result, market.market_id)
        ax_m.step(x, values, style, where="post", lw=1.5, label=market.name)
    ax_m.set_ylabel("multiplier in force")
    ax_m.legend(loc="upper left", fontsize=8)
    ax_m.grid(alpha=0.3)
    if result.scenario.times is None:
        ax_m.set_xlabel("hours from the open")
    else:
        fig.autofmt_xdate()
    fig.suptitle(f"Dynamic Margin demo: {result.scenario.title}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chart_x(result: DemoResult) -> list[Any]:
    if result.scenario.times is None:
        return list(range(result.scenario.steps + 1))
    return [datetime.fromtimestamp(t, UTC) for t in result.scenario.times]


def _plot_market(ax: Any, result: DemoResult, market: MarketPath, x: list[Any]) -> None:
    prices = [r.prices[market.market_id] for r in result.records]
    ax.plot(x, prices, color="black", lw=1.2, label=f"{market.name} (devnet feed)")
    liq = [e for e in result.liquidations if e.market_id == market.market_id]
    ax.scatter(
        [x[e.step] for e in liq],
        [e.price / WAD for e in liq],
        marker="v",
        s=60,
        color="tab:orange",
        zorder=3,
        label=f"liquidation ({len(liq)})",
    )
    backstops = [
        (e, fill) for e in result.backstops for m, fill in e.moves if m == market.market_id
    ]
    ax.scatter(
        [x[e.step] for e, _ in backstops],
        [fill.price / WAD for _, fill in backstops],
        marker="X",
        s=80,
        color="tab:red",
        zorder=4,
        label=f"backstop ({len(backstops)})",
    )
    _annotate(ax, [(x[e.step], e.price / WAD, result.labels[e.account]) for e in liq], 4, "black")
    _annotate(
        ax,
        [(x[e.step], f.price / WAD, result.labels[e.account]) for e, f in backstops],
        -11,
        "tab:red",
    )
    ax.set_ylabel(f"{market.name} price (USD)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)


def _plot_pair(ax: Any, result: DemoResult, x: list[Any]) -> None:
    """Maintenance of the hedged pair and the outright long against their tiered sums."""
    for role, color in (("hedged", "tab:green"), ("outright", "tab:purple")):
        account = result.roles[role]
        snaps = result.snapshots[account]
        label = f"{result.labels[account]} {role}"
        ax.step(x, [s.maintenance / WAD for s in snaps], where="post", color=color, label=label)
        ax.step(
            x,
            [(s.tiered + s.reserve) / WAD for s in snaps],
            where="post",
            color=color,
            ls=":",
            label=f"{label}: tiered sum",
        )
    ax.set_ylabel("maintenance (USD)")
    ax.set_title(
        "portfolio margin (keeper's scenarios) vs tiered sum, same gross notional", fontsize=9
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _annotate(ax: Any, points: list[tuple[Any, float, str]], dy: int, color: str) -> None:
    """One label per marker position, naming every account marked there."""
    names: dict[tuple[Any, float], list[str]] = {}
    for x, y, name in points:
        names.setdefault((x, y), []).append(name)
    for (x, y), labels in names.items():
        ax.annotate(
            ", ".join(sorted(set(labels))),
            (x, y),
            fontsize=7,
            xytext=(5, dy),
            textcoords="offset points",
            color=color,
        )
