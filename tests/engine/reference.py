"""Read an engine's state through its views into :mod:`offchain.protocol.engine_math`'s inputs,
so that a test can hold the contract to the reference computed independently from the same
stored state (registry copies, positions, snapshots, prices, scenarios, classes)."""

from __future__ import annotations

from offchain.protocol import engine_math as em
from offchain.protocol.margin_math import Guardrails, MarketState, Tier


def unpack_shocks(word: int) -> list[int]:
    """16 int16 basis-point shocks, scenario k in bits 16k..16k+15 (two's complement)."""
    raw = [(word >> (16 * k)) & 0xFFFF for k in range(16)]
    return [z - 2**16 if z >= 2**15 else z for z in raw]


def market_view(engine, registry, market_id: int) -> em.MarketView:
    """A market as the engine margins it now (its mark price and funding index)."""
    group, packed = engine.market_scenarios(market_id)
    price, _ = engine.mark_price(market_id)
    return em.MarketView(
        tiers=tuple(Tier(*t) for t in registry.tiers(market_id)),
        guardrails=Guardrails(*registry.guardrails(market_id)),
        initial_ratio=registry.initial_ratio(market_id),
        state=MarketState(*registry.market_state(market_id)),
        price=price,
        index=engine.funding_index(market_id),
        reserve_seconds=engine.funding_reserve_seconds(market_id),
        group=group,
        shocks=tuple(unpack_shocks(packed)),
    )


def group_view(engine, group_id: int) -> em.GroupView:
    return em.GroupView(*engine.scenario_group(group_id))


def account_view(engine, owner, subaccount: int) -> em.AccountView:
    positions = {}
    for market_id in engine.markets_of(owner, subaccount):
        size, notional = engine.position(owner, subaccount, market_id)
        snapshot = engine.funding_snapshot(owner, subaccount, market_id)
        positions[int(market_id)] = em.Position(size, notional, snapshot)
    details = engine.account_details(owner, subaccount)
    return em.AccountView(
        engine.collateral_of(owner, subaccount), positions, details.class_multiplier
    )


def reference_health(engine, registry, owner, subaccount: int, now: int) -> em.Health:
    """The reference's health of an account from the chain's stored state at ``now`` (the head
    block's time, at which the views run)."""
    account = account_view(engine, owner, subaccount)
    markets = {m: market_view(engine, registry, m) for m in account.positions}
    groups = {v.group: group_view(engine, v.group) for v in markets.values() if v.group}
    return em.health(account, markets, groups, now)
