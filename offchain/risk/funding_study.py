"""The funding study: the reference mode against the settled history, the registry's bound, and
the funding reserve in maintenance, on 2019-2021 (calibration) and 2022-2023 (report).

For each market (a settlement CSV and the hourly candles of the same asset):

1. the bound: :func:`offchain.risk.funding_history.choose_max_funding_rate` on the pooled
   calibration settlements, checked against the frozen :data:`CHOSEN_MAX_FUNDING_RATE`;
2. the reference mode replayed at the chosen bound and at the previous one (1e-6/s):
   clipping, staleness and tracking per period;
3. the recommended model's walk-forward margins
   (:func:`offchain.risk.funding_reserve.model_margins`) joined to the replayed funding at each
   horizon: breaches funding explains, the reserve chosen by the rule on calibration hours
   (first horizon), checked against the frozen :data:`CHOSEN_FUNDING_RESERVE_S`, and its
   coverage in both periods.

Everything lands in :class:`FundingStudy`: :meth:`~FundingStudy.table` for people,
:meth:`~FundingStudy.to_json` for machines, :func:`plot_study` for a PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from offchain import WAD
from offchain.risk.funding import INTERVAL_8H_S
from offchain.risk.funding_history import (
    CALIBRATION_END,
    ClipStats,
    FundingHistory,
    TrackingStats,
    choose_max_funding_rate,
    clip_stats,
    replay_reference,
    tracking_stats,
)
from offchain.risk.funding_reserve import (
    BreachCounts,
    MarketHours,
    breach_counts,
    choose_reserve_seconds,
    coverage,
    coverage_curve,
    flip_share,
    join,
    model_margins,
    reserve_to_margin,
    worst_instant_coverage,
)
from offchain.risk.prices import Candles

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

log = logging.getLogger("dmm.funding")

# Frozen by the rules on data up to 2021-12-31 (``make funding-study`` recomputes and checks).
CHOSEN_MAX_FUNDING_RATE = 190_000_000_000  # WAD per second: 1.9e-7/s, 0.5472% per 8 hours
CHOSEN_FUNDING_RESERVE_S = 7_200  # two hours of the rate in force
# The bound shipped before this study (1e-6/s, 2.88% per 8 hours), replayed for comparison; the
# shipped configuration (deploy/risk.yaml) now carries the chosen one.
PREVIOUS_MAX_FUNDING_RATE = 10**12
REPORT_END = 1_704_067_200  # 2024-01-01 00:00 UTC
PERIODS: tuple[tuple[str, int | None, int | None], ...] = (
    ("2019-2021", None, CALIBRATION_END),
    ("2022-2023", CALIBRATION_END, REPORT_END),
)


def fmt_8h(per_s: float) -> str:
    """A per-second rate as ``0.5472%/8h``."""
    return f"{per_s * INTERVAL_8H_S:.4%}/8h"


@dataclass(frozen=True)
class ReferenceRow:
    """The reference mode for one market, bound and period."""

    market: str
    bound_name: str
    bound: int
    period: str
    clip: ClipStats
    tracking: TrackingStats


@dataclass(frozen=True)
class BreachRow:
    """Breaches of one market, side and period at one horizon."""

    market: str
    horizon: int
    side: str
    period: str
    counts: BreachCounts


@dataclass(frozen=True)
class ReserveRow:
    """The reserve at one horizon: the rule's choice and its coverage per period."""

    horizon: int
    seconds: int
    reached: bool
    coverage: dict[str, float]
    worst_instant: dict[str, float]
    flips: dict[str, float]
    reserve_to_margin: dict[str, float]
    curve_seconds: list[int] = field(repr=False)
    curve: dict[str, list[float]] = field(repr=False)


@dataclass(frozen=True)
class FundingStudy:
    """Every figure of the study (module docstring)."""

    bound_rule: int
    bound_percentile_8h: float
    reference: list[ReferenceRow]
    breaches: list[BreachRow]
    reserves: list[ReserveRow]
    histories: list[FundingHistory] = field(repr=False)

    @property
    def reserve(self) -> ReserveRow:
        """The reserve at the model's horizon (the first studied)."""
        return self.reserves[0]

    def to_json(self) -> dict[str, object]:
        """Plain values: the chosen parameters, then every table row."""

        def clip(c: ClipStats) -> dict[str, float]:
            return {**asdict(c), "clipped_fraction": c.clipped_fraction}

        return {
            "max_funding_rate": self.bound_rule,
            "max_funding_rate_frozen": CHOSEN_MAX_FUNDING_RATE,
            "max_funding_rate_8h": self.bound_rule * INTERVAL_8H_S / WAD,
            "funding_reserve_seconds": self.reserve.seconds,
            "funding_reserve_seconds_frozen": CHOSEN_FUNDING_RESERVE_S,
            "reference": [
                {
                    "market": r.market,
                    "bound": r.bound_name,
                    "max_funding_rate": r.bound,
                    "period": r.period,
                    "clip": clip(r.clip),
                    "tracking": asdict(r.tracking),
                }
                for r in self.reference
            ],
            "breaches": [
                {
                    "market": b.market,
                    "horizon_hours": b.horizon,
                    "side": b.side,
                    "period": b.period,
                    **asdict(b.counts),
                    "explained_share": b.counts.explained_share,
                }
                for b in self.breaches
            ],
            "reserve": [
                {
                    "horizon_hours": r.horizon,
                    "seconds": r.seconds,
                    "reached_target": r.reached,
                    "coverage": r.coverage,
                    "worst_instant_coverage": r.worst_instant,
                    "sign_flip_share": r.flips,
                    "reserve_to_maintenance": r.reserve_to_margin,
                }
                for r in self.reserves
            ],
        }

    def table(self) -> str:
        """The study as text tables."""
        out = [
            "Reference mode: the keeper signs the venue's last settled rate every hour"
            " (feed stale after 9 h, then linear to zero over 8 h), inside the bound.",
            f"Bound rule (2019-2021, BTC+ETH+SOL pooled): 99.9th percentile of |rate| ="
            f" {self.bound_percentile_8h:.4%}/8h -> max_funding_rate = {self.bound_rule} WAD/s"
            f" ({fmt_8h(self.bound_rule / WAD)}); frozen {CHOSEN_MAX_FUNDING_RATE}.",
            f"{'bound':<22}{'market':<9}{'period':<11}{'settle':>7}{'clipped':>9}{'share':>8}"
            f"{'max excess':>12}{'cut':>8}{'|err|/8h':>10}{'corr':>6}{'stale h':>8}",
        ]
        for r in self.reference:
            c, t = r.clip, r.tracking
            out.append(
                f"{r.bound_name:<22}{r.market:<9}{r.period:<11}{c.settlements:>7}{c.clipped:>9}"
                f"{c.clipped_fraction:>8.2%}{c.max_excess_8h:>11.3%} {c.share_cut:>7.2%}"
                f"{t.mean_abs_error_8h:>10.4%}{t.correlation:>6.2f}{t.stale_ticks:>8}"
            )
        horizons = sorted({b.horizon for b in self.breaches})
        for h in horizons:
            res = next(r for r in self.reserves if r.horizon == h)
            out += [
                "",
                f"Funding in maintenance: recommended model, {h} h horizon; reserve"
                f" {res.seconds} s of the rate in force.",
                f"{'market':<9}{'side':<6}{'period':<11}{'hours':>7}{'price':>7}{'+funding':>9}"
                f"{'explained':>10}{'saved':>7}{'+reserve':>9}",
            ]
            for b in (b for b in self.breaches if b.horizon == h):
                c = b.counts
                out.append(
                    f"{b.market:<9}{b.side:<6}{b.period:<11}{c.hours:>7}{c.price:>7}"
                    f"{c.with_funding:>9}{c.explained:>10}{c.saved:>7}{c.with_reserve:>9}"
                )
            for period, _, _ in PERIODS:
                rows = [b.counts for b in self.breaches if b.horizon == h and b.period == period]
                explained = sum(c.explained for c in rows)
                total = sum(c.with_funding for c in rows)
                out.append(
                    f"  {period}: funding explains {explained} of {total} breaches"
                    f" ({explained / total if total else 0:.2%}); reserve {res.seconds} s covers"
                    f" {res.coverage[period]:.2%} of paying instants (every instant of the hour:"
                    f" {res.worst_instant[period]:.2%}); sign flips {res.flips[period]:.2%};"
                    f" reserve / maintenance {res.reserve_to_margin[period]:.3%}"
                )
            verdict = "met" if res.reached else "NOT met (no reserve up to a day reaches it)"
            out.append(f"  rule: 99% coverage on 2019-2021 {verdict}; chosen {res.seconds} s")
        return "\n".join(out)


def run_funding_study(
    markets: Sequence[tuple[FundingHistory, Candles]],
    horizons: Sequence[int] = (1,),
    previous_bound: int = PREVIOUS_MAX_FUNDING_RATE,
    progress: bool = False,
) -> FundingStudy:
    """Run every step of the module docstring on ``(settlements, candles)`` pairs."""
    if not markets:
        raise ValueError("no market to study")
    if not horizons:
        raise ValueError("no horizon to study")
    histories = [h for h, _ in markets]
    bound = choose_max_funding_rate(histories)
    pooled = np.concatenate([np.abs(h.between(stop=CALIBRATION_END).rate_per_s) for h in histories])
    q_8h = float(np.percentile(pooled, 99.9, method="inverted_cdf")) * INTERVAL_8H_S
    if bound != CHOSEN_MAX_FUNDING_RATE:
        log.warning("bound rule gives %d, frozen value is %d", bound, CHOSEN_MAX_FUNDING_RATE)
    reference: list[ReferenceRow] = []
    replays = {}
    for name, b in (("chosen", bound), ("previous", previous_bound)):
        label = f"{name} {fmt_8h(b / WAD)}"
        for h in histories:
            replay = replay_reference(h, b)
            if name == "chosen":
                replays[h.symbol] = replay
            for period, start, stop in PERIODS:
                reference.append(
                    ReferenceRow(
                        h.symbol,
                        label,
                        b,
                        period,
                        clip_stats(h.between(start, stop), b / WAD),
                        tracking_stats(replay, start, stop),
                    )
                )
    breaches: list[BreachRow] = []
    reserves: list[ReserveRow] = []
    for horizon in horizons:
        joined: list[MarketHours] = []
        for h, candles in markets:
            log.info("%s: walk-forward margins, %d h horizon", candles.symbol, horizon)
            result = model_margins(candles, horizon, progress=progress)
            joined.append(join(result, replays[h.symbol]))
        by_period = {p: [m.window(s, e) for m in joined] for p, s, e in PERIODS}
        seconds, reached = choose_reserve_seconds(by_period[PERIODS[0][0]])
        if horizon == horizons[0] and seconds != CHOSEN_FUNDING_RESERVE_S:
            log.warning("reserve rule gives %d s, frozen value is %d s", seconds,
                        CHOSEN_FUNDING_RESERVE_S)  # fmt: skip
        for period, windows in by_period.items():
            for m in windows:
                for side, loss, paid, _, base in m.sides():
                    counts = breach_counts(loss, m.margin, paid, base * seconds)
                    breaches.append(BreachRow(m.symbol, horizon, side, period, counts))
        grid, _ = coverage_curve(by_period[PERIODS[0][0]], step=3600)
        reserves.append(
            ReserveRow(
                horizon=horizon,
                seconds=seconds,
                reached=reached,
                coverage={p: coverage(w, seconds) for p, w in by_period.items()},
                worst_instant={p: worst_instant_coverage(w, seconds) for p, w in by_period.items()},
                flips={p: flip_share(w) for p, w in by_period.items()},
                reserve_to_margin={p: reserve_to_margin(w, seconds) for p, w in by_period.items()},
                curve_seconds=grid.tolist(),
                curve={p: coverage_curve(w, step=3600)[1].tolist() for p, w in by_period.items()},
            )
        )
    return FundingStudy(bound, q_8h, reference, breaches, reserves, histories)


def plot_study(study: FundingStudy, path: str | Path) -> Path:
    """Write a PNG: the settled rates against the bounds, the reserve's coverage curve, and
    the breaches with and without funding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax_r, ax_c, ax_b) = plt.subplots(3, 1, figsize=(13, 12), height_ratios=[3, 2, 2])
    for h in study.histories:
        when = h.times.astype("datetime64[s]").astype(object)
        ax_r.plot(when, 100 * h.rate_8h, lw=0.5, label=h.symbol)
    for value, style, label in (
        (study.bound_rule, "--", "chosen bound"),
        (PREVIOUS_MAX_FUNDING_RATE, ":", "previous bound"),
    ):
        rate_8h = 100 * value / WAD * INTERVAL_8H_S
        ax_r.axhline(rate_8h, ls=style, color="black", lw=0.8, label=f"{label} (+-{rate_8h:.2f}%)")
        ax_r.axhline(-rate_8h, ls=style, color="black", lw=0.8)
    ax_r.set_yscale("symlog", linthresh=0.05)
    ax_r.axvline(np.datetime64(CALIBRATION_END, "s").astype(object), color="grey", lw=0.8)
    ax_r.set_ylabel("settled funding, % per 8 h (symlog)")
    ax_r.xaxis.set_major_locator(mdates.YearLocator())
    ax_r.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax_r.legend(loc="lower left", fontsize=8, ncol=3)
    ax_r.set_title("Binance funding settlements and the registry's max_funding_rate")
    for res in study.reserves:
        hours = np.asarray(res.curve_seconds) / 3600
        for (period, values), style in zip(res.curve.items(), ("-", "--"), strict=False):
            ax_c.plot(hours, 100 * np.asarray(values), style, label=f"{res.horizon} h, {period}")
    ax_c.axhline(99, color="grey", lw=0.8)
    ax_c.axvline(study.reserve.seconds / 3600, color="black", lw=0.8, ls=":")
    ax_c.set_xlabel("funding reserve, hours of the rate in force")
    ax_c.set_ylabel("paying instants covered, %")
    ax_c.set_ylim(80, 100.5)
    ax_c.legend(loc="lower right", fontsize=8)
    h0 = study.reserve.horizon
    labels, price, funded, reserved = [], [], [], []
    for period, _, _ in PERIODS:
        for market in dict.fromkeys(b.market for b in study.breaches):
            rows = [
                b.counts
                for b in study.breaches
                if b.horizon == h0 and b.period == period and b.market == market
            ]
            labels.append(f"{market}\n{period}")
            price.append(sum(c.price for c in rows))
            funded.append(sum(c.with_funding for c in rows))
            reserved.append(sum(c.with_reserve for c in rows))
    x = np.arange(len(labels))
    ax_b.bar(x - 0.27, price, 0.27, label="price loss > margin")
    ax_b.bar(x, funded, 0.27, label="price loss + funding > margin")
    ax_b.bar(x + 0.27, reserved, 0.27, label="... > margin + reserve")
    ax_b.set_xticks(x, labels, fontsize=8)
    ax_b.set_ylabel(f"breaches, {h0} h horizon")
    ax_b.set_ylim(0, 1.35 * max(max(price), max(funded), 1))
    ax_b.legend(loc="upper left", fontsize=8, ncol=3)
    ax_b.set_title("Breaches of the recommended model with and without funding (both sides)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "CHOSEN_FUNDING_RESERVE_S",
    "CHOSEN_MAX_FUNDING_RATE",
    "PERIODS",
    "PREVIOUS_MAX_FUNDING_RATE",
    "BreachRow",
    "FundingStudy",
    "ReferenceRow",
    "ReserveRow",
    "plot_study",
    "run_funding_study",
]
