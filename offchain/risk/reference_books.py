"""Reference books for the keeper's dry run: what the chain would charge a few typical accounts
under the latest scenarios, to the wei.

Three books of the same gross notional (default 1,000,000 USD) in a scenario group: an
``outright`` long of the first market (one position: the tiered sum, by the eligibility rule),
the ``hedged_pair`` (first market long, second short, equal notional) and a ``random`` mix over
every market of the group (fixed seed). Each position's tiered requirements come from the
registry's formula (:func:`offchain.protocol.margin_math.maintenance_margin`,
:func:`~offchain.protocol.margin_math.initial_margin`) with the multiplier in force; the account's
from :func:`offchain.protocol.portfolio_math.portfolio_margin` when eligible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from offchain import WAD
from offchain.protocol.margin_math import Tier, initial_margin, maintenance_margin
from offchain.protocol.portfolio_math import (
    GroupParams,
    PortfolioPosition,
    account_requirements,
    is_portfolio_eligible,
    worst_scenario_loss,
)

DEFAULT_GROSS = 1_000_000 * WAD


@dataclass(frozen=True)
class ReferenceBook:
    """Signed sizes (base units, WAD) per market of the group."""

    name: str
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class MarketTerms:
    """What the registry holds for one market: tiers, multiplier in force, target, ratio."""

    tiers: tuple[Tier, ...]
    multiplier: int
    target: int
    initial_ratio: int


@dataclass(frozen=True)
class ReferenceMargin:
    """One book's requirements (USD, WAD)."""

    name: str
    gross_notional: int
    eligible: bool
    tiered_maintenance: int
    tiered_initial: int
    worst_loss: int
    maintenance: int
    initial: int

    @property
    def saving(self) -> float:
        """``1 - maintenance / tiered``: the portfolio credit."""
        return 1 - self.maintenance / self.tiered_maintenance if self.tiered_maintenance else 0.0


def reference_books(
    prices: Sequence[int], gross: int = DEFAULT_GROSS, seed: int = 7
) -> list[ReferenceBook]:
    """The three books at ``prices`` (WAD): sizes ``floor(w_i gross WAD / p_i)`` toward zero."""
    m = len(prices)
    if m < 2:
        raise ValueError(f"a scenario group has at least two markets, got {m}")
    if any(p <= 0 for p in prices) or gross <= 0:
        raise ValueError("prices and gross notional must be positive")
    rng = np.random.default_rng(seed)
    mix = rng.dirichlet(np.ones(m)) * rng.choice((-1.0, 1.0), size=m)
    weights = {
        "outright": [1.0] + [0.0] * (m - 1),
        "hedged_pair": [0.5, -0.5] + [0.0] * (m - 2),
        "random": (mix / np.abs(mix).sum()).tolist(),
    }
    books = []
    for name, w in weights.items():
        # notional per market in millionths of the gross; the last position takes the rest
        parts = [round(abs(wi) * 10**6) for wi in w]
        last = max(i for i, x in enumerate(parts) if x)
        parts[last] = 10**6 - sum(parts) + parts[last]
        sizes = []
        for wi, part, p in zip(w, parts, prices, strict=True):
            size = part * gross // 10**6 * WAD // p
            sizes.append(size if wi >= 0 else -size)
        books.append(ReferenceBook(name, tuple(sizes)))
    return books


def reference_margins(
    books: Sequence[ReferenceBook],
    prices: Sequence[int],
    shocks: Sequence[Sequence[int]],
    terms: Sequence[MarketTerms],
    params: GroupParams,
    *,
    fresh: bool = True,
    cross: bool = True,
) -> list[ReferenceMargin]:
    """Each book's maintenance and initial requirement under ``shocks`` (``shocks[i][k]``:
    market ``i``, scenario ``k``, bps, as the chain stores them)."""
    if not len(prices) == len(shocks) == len(terms):
        raise ValueError("prices, shocks and terms need one entry per market")
    n_scenarios = max((len(row) for row in shocks), default=0)
    out = []
    for book in books:
        positions, markets = [], []
        for i, size in enumerate(book.sizes):
            if size == 0:
                continue
            t = terms[i]
            notional = abs(size) * prices[i] // WAD
            positions.append(
                PortfolioPosition(
                    size=size,
                    price=prices[i],
                    maintenance=maintenance_margin(t.tiers, t.multiplier, notional),
                    initial=initial_margin(
                        t.tiers, t.multiplier, t.target, t.initial_ratio, notional
                    ),
                    shocks=list(shocks[i]),
                )
            )
            markets.append(i)
        eligible = is_portfolio_eligible(cross, markets, range(len(prices)), fresh)
        maint, init = account_requirements(
            positions, eligible=eligible, n_scenarios=n_scenarios, params=params
        )
        out.append(
            ReferenceMargin(
                name=book.name,
                gross_notional=sum(abs(p.size) * p.price // WAD for p in positions),
                eligible=eligible,
                tiered_maintenance=sum(p.maintenance for p in positions),
                tiered_initial=sum(p.initial for p in positions),
                worst_loss=worst_scenario_loss(positions, n_scenarios),
                maintenance=maint,
                initial=init,
            )
        )
    return out


def format_reference(margins: Sequence[ReferenceMargin]) -> str:
    """A small table for the keeper's dry-run log."""
    lines = [
        f"{'book':<12} {'gross USD':>12} {'tiered':>11} {'worst loss':>11} "
        f"{'maintenance':>11} {'initial':>11} {'saving':>7}"
    ]
    for r in margins:
        lines.append(
            f"{r.name:<12} {r.gross_notional / WAD:>12,.0f} {r.tiered_maintenance / WAD:>11,.2f} "
            f"{r.worst_loss / WAD:>11,.2f} {r.maintenance / WAD:>11,.2f} "
            f"{r.initial / WAD:>11,.2f} {r.saving:>7.1%}"
            + ("" if r.eligible else "  (tiered: not eligible)")
        )
    return "\n".join(lines)


__all__ = [
    "DEFAULT_GROSS",
    "MarketTerms",
    "ReferenceBook",
    "ReferenceMargin",
    "format_reference",
    "reference_books",
    "reference_margins",
]
