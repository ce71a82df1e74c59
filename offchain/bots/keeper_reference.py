"""The keeper's dry-run report: what the chain would charge a few reference books under the
scenarios it would sign (:mod:`offchain.risk.reference_books`), to the wei.

For each scenario group with an update, the group's markets at their feeds' latest answers; each
market's tiers, multiplier in force, target and initial ratio read from the risk registry; the
group's residual, floor and initial ratio from the scenario registry; the shocks the keeper
would sign. The books (outright, hedged pair, random mix; 1,000,000 USD gross) are margined with
the on-chain formula (:func:`offchain.protocol.portfolio_math.portfolio_margin`) against their
tiered sums.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from offchain.bots.keeper_scenarios import ScenarioDecision
from offchain.protocol.abis import _fn, _param, _u
from offchain.protocol.chain import FeedClient, RegistryClient, call_view
from offchain.protocol.keeper_clients import ScenarioRegistryClient
from offchain.protocol.margin_math import Tier
from offchain.risk.reference_books import (
    DEFAULT_GROSS,
    MarketTerms,
    format_reference,
    reference_books,
    reference_margins,
)

_TERMS_ABI = [
    _fn("tiers", [_u("market_id")], [_param("", "tuple[]", [_u("notional_floor"), _u("rate")])]),
    _fn("multiplier", [_u("market_id")], [_u()]),
    _fn("target_multiplier", [_u("market_id")], [_u()]),
    _fn("initial_ratio", [_u("market_id")], [_u()]),
]


def market_terms(registry: RegistryClient, market_id: int) -> MarketTerms:
    """A market's tiers, multiplier in force, target and initial ratio, from the registry."""
    contract = registry.w3.eth.contract(address=registry.address, abi=_TERMS_ABI)

    def call(name: str) -> object:
        return call_view(contract, "registry", registry.address, name, market_id)

    tiers = tuple(Tier(int(f), int(r)) for f, r in call("tiers"))  # type: ignore[attr-defined]
    return MarketTerms(
        tiers,
        int(call("multiplier")),  # type: ignore[call-overload]
        int(call("target_multiplier")),  # type: ignore[call-overload]
        int(call("initial_ratio")),  # type: ignore[call-overload]
    )


def reference_report(
    registry: RegistryClient,
    scenarios: ScenarioRegistryClient,
    feeds: FeedClient,
    feed_of: Mapping[int, str],
    gross: int = DEFAULT_GROSS,
) -> Callable[[ScenarioDecision, int], list[str]]:
    """The keeper's ``reference`` hook: lines for a scenario decision (an update)."""

    def report(decision: ScenarioDecision, now: int) -> list[str]:
        if decision.update is None or not decision.shocks:
            return []
        markets = decision.markets
        prices = []
        for m in markets:
            r = feeds.latest(feed_of[m])
            prices.append(r.answer * 10 ** (18 - r.decimals))
        terms = [market_terms(registry, m) for m in markets]
        params = scenarios.group(decision.group_id).params
        books = reference_books(prices, gross)
        margins = reference_margins(books, prices, decision.shocks, terms, params)
        return [
            f"  reference books under group {decision.group_id}'s scenarios"
            f" (gross {gross / 10**18:,.0f} USD, multipliers in force):",
            *("  " + line for line in format_reference(margins).splitlines()),
        ]

    return report


__all__ = ["market_terms", "reference_report"]
