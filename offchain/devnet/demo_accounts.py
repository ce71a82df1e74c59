"""The demo's view of its accounts after each step: what the engine charges them and what the
same positions need by the Python reference, in their class, in the default class, and at the
multipliers in force before the crash.

Each snapshot is the engine's ``account_details`` (equity, maintenance, the tiered maintenance
before portfolio credit, the funding reserve and funding owed, the portfolio group in force, the
risk class) beside figures computed here on the account's positions at the engine's mark prices,
``N = ceil(|s| p / WAD)``, each market's multiplier in force with the class applied as the engine
does (:func:`offchain.protocol.engine_math.with_class`: a discount never below the market's
minimum multiplier), tiered by the registry's formula
(:func:`offchain.protocol.margin_math.maintenance_margin`) and, for an account the engine
margins in a scenario group, the portfolio formula on the group's shocks as the engine holds
them (:func:`offchain.protocol.portfolio_math.portfolio_margin`), plus the funding reserve:

- ``reference``: in the account's class; the engine's maintenance to the wei (the demo's test
  holds the chain to it, step after step);
- ``default``: the same in the default class (1x), to show what a class changes;
- the pre-crash maintenance: tiered at the multipliers in force when the book opened, class
  applied, plus the funding reserve (a portfolio account needs no more than that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from offchain import WAD
from offchain.devnet.report import AccountSnapshot, Caught
from offchain.devnet.scenario import market_tiers
from offchain.protocol.chain import EngineClient, Health, RegistryClient, Subaccount
from offchain.protocol.engine_math import with_class
from offchain.protocol.margin_math import maintenance_margin
from offchain.protocol.portfolio_math import (
    GroupParams,
    PortfolioPosition,
    portfolio_margin,
    unpack_shocks,
)


def notional(size: int, price: int) -> int:
    """``ceil(|size| * price / WAD)``, the engine's notional."""
    return -(-abs(size) * price // WAD)


@dataclass
class AccountWatch:
    """Per-step snapshots of the book's accounts (module docstring)."""

    system: Any
    engine: EngineClient
    registry: RegistryClient
    names: Mapping[int, str]
    snapshots: dict[Subaccount, list[AccountSnapshot]] = field(default_factory=dict)
    caught: dict[Subaccount, Caught] = field(default_factory=dict)

    def positions(self, account: Subaccount) -> list[tuple[int, int]]:
        out = []
        for m in self.engine.markets_of(account.owner, account.subaccount):
            size, _ = self.engine.position(account.owner, account.subaccount, m)
            if size:
                out.append((int(m), int(size)))
        return out

    def _tiered(
        self, positions: Iterable[tuple[int, int]], multiplier: Mapping[int, int]
    ) -> list[tuple[int, int, int, int]]:
        """``(market, size, price, tiered maintenance)`` of each position."""
        out = []
        for m, size in positions:
            price, _ = self.engine.mark_price(m)
            out.append(
                (
                    m,
                    size,
                    price,
                    maintenance_margin(market_tiers(m), multiplier[m], notional(size, price)),
                )
            )
        return out

    def requirement(
        self, positions: list[tuple[int, int]], class_mult: int, group: int, reserve: int
    ) -> int:
        """The maintenance the engine should charge these positions in a class (module
        docstring): tiered, or the portfolio formula in ``group``, plus ``reserve``."""
        scaled = {
            m: with_class(
                self.registry.multiplier(m), class_mult, self.registry.guardrails(m).min_multiplier
            )
            for m, _ in positions
        }
        legs = self._tiered(positions, scaled)
        tiered = sum(t for *_, t in legs)
        if not group:
            return tiered + reserve
        count, _, residual, floor, ratio = self.system.engine.scenario_group(group)
        book = [
            PortfolioPosition(
                size=size,
                price=price,
                maintenance=t,
                initial=0,
                shocks=unpack_shocks(int(self.system.engine.market_scenarios(m)[1]), int(count)),
            )
            for m, size, price, t in legs
        ]
        params = GroupParams(int(residual), int(floor), int(ratio))
        return portfolio_margin(book, int(count), params).maintenance + reserve

    def snapshot(self, step: int, accounts: Iterable[Subaccount]) -> None:
        """Every account's details after ``step``."""
        for account in accounts:
            d = self.system.engine.account_details(account.owner, account.subaccount)
            held = self.positions(account)
            reserve, group = int(d.funding_reserve), int(d.portfolio_group)
            class_mult = int(d.class_multiplier) or WAD
            self.snapshots.setdefault(account, []).append(
                AccountSnapshot(
                    step=step,
                    equity=int(d.equity),
                    maintenance=int(d.maintenance),
                    tiered=int(d.tiered_maintenance),
                    reserve=reserve,
                    funding_owed=int(d.funding_owed),
                    group=group,
                    class_id=int(d.class_id),
                    class_multiplier=class_mult,
                    default=self.requirement(held, WAD, group, reserve),
                    positions=tuple(held),
                    reference=self.requirement(held, class_mult, group, reserve),
                )
            )

    def pre_crash_maintenance(self, account: Subaccount, multipliers: Mapping[int, int]) -> int:
        """The account's tiered maintenance now at the multipliers ``multipliers`` (those in
        force before the crash), its class applied, plus its funding reserve."""
        d = self.system.engine.account_details(account.owner, account.subaccount)
        held = self.positions(account)
        class_mult = int(d.class_multiplier) or WAD
        scaled = {
            m: with_class(multipliers[m], class_mult, self.registry.guardrails(m).min_multiplier)
            for m, _ in held
        }
        return sum(t for *_, t in self._tiered(held, scaled)) + int(d.funding_reserve)

    def caught_at(self, step: int, health: Health, before: int) -> Caught:
        return Caught(step, health.equity, health.maintenance, before)


__all__ = ["AccountWatch", "notional"]
