"""Gas of the margin engine's hot paths and of the scenario registry, on ape's local network.

Every figure is a transaction's ``gas_used``: 21,000 intrinsic gas and calldata included. The
views (``is_liquidatable``) are sent as transactions too (``.transact``), so they are the gas a
call really uses, not ``eth_estimateGas``'s figure (py-evm's estimate of a view overstates by up
to ~14,000); the ``_excl_intrinsic`` rows subtract 21,000.

Every position sits in its own market with its own feed contract, so each position pays its cold
storage and its cold feed call as it would on mainnet. Markets 1-4 form scenario group 1 (K = 16
scenarios in force for the portfolio figure), markets 5-8 are in no group, 9-11 form the 3-market
group whose keeper update is measured. Every market has a fresh keeper update (2x), as in
operation; one row repeats the 4-position check once the markets have gone stale.
``python -m bench.gas_breakdown`` shows where the gas of the health checks and of a liquidation
goes, opcode by opcode and slot by slot.
"""

from __future__ import annotations

from ape import accounts, chain, networks, project
from ape.logging import logger
from eth_account import Account

from bench.results import print_table, record
from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_TIERS, deploy_engine
from offchain.protocol.portfolio_math import pack_shocks
from offchain.protocol.signing import RiskUpdate, ScenarioUpdate, sign_batch

TIERS = [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS]
USDC = 10**6
PRICE = 60_000
INTRINSIC = 21_000
GROUP_MARKETS = (1, 2, 3, 4)  # the 4-position portfolio
PLAIN_MARKETS = (5, 6, 7, 8)  # the 4-position tiered account
UPDATE_MARKETS = (9, 10, 11)  # the 3-market group of the keeper update
KEEPER = Account.from_key(b"\x01" * 32)
MODEL_HASH = bytes.fromhex("5a" * 32)
GOALS = {
    "gas_is_liquidatable_4_positions": 142_895,
    "gas_is_liquidatable_4_positions_portfolio": 142_895,
    "gas_liquidate_1_position": 150_000,
}


def shock_rows(n_markets: int, k: int, shift: int = 0) -> list[list[int]]:
    """``n_markets`` rows of ``k`` shocks inside +-2,000 bps, every slot non-zero."""
    return [
        [(-1) ** (j + i) * (300 + 97 * j + 131 * i + shift) for j in range(k)]
        for i in range(n_markets)
    ]


def _config(feed) -> tuple:
    return (feed.address, 3600, 5 * 10**16, 25 * 10**14, WAD // 2, 10**12 * WAD)


def _submit_scenarios(scenarios, relayer, group_id: int, rows: list[list[int]]):
    now = chain.pending_timestamp
    update = ScenarioUpdate(
        group_id, len(rows[0]), tuple(pack_shocks(r) for r in rows), now - 1, now + 600, MODEL_HASH
    )
    signature = sign_batch([update], KEEPER.key, chain.chain_id, scenarios.address)
    return scenarios.submit_scenarios([update.as_tuple()], [signature], sender=relayer)


def measure() -> dict[str, int]:
    """Deploy a fresh system and return gas figures keyed by scenario."""
    owner, exchange, maker, liquidator, relayer = accounts.test_accounts[:5]
    traders = accounts.test_accounts[5:10]
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    registry = project.RiskParameterRegistry.deploy(owner, sender=owner)
    registry.add_keeper(KEEPER.address, sender=owner)
    engine = deploy_engine(project, owner, token, registry)
    feeds = {}
    for market_id in GROUP_MARKETS + PLAIN_MARKETS + UPDATE_MARKETS:
        registry.configure_market(
            market_id, TIERS, 2 * WAD, DEVNET_GUARDRAILS.as_tuple(), sender=owner
        )
        feeds[market_id] = project.MockPriceFeed.deploy(8, PRICE * 10**8, sender=owner)
        engine.add_market(market_id, _config(feeds[market_id]), sender=owner)
    engine.set_exchange(exchange, True, sender=owner)
    scenarios = project.ScenarioRegistry.deploy(registry, engine, sender=owner)
    engine.set_push_registry(1, scenarios, sender=owner)
    for group_id, markets in ((1, GROUP_MARKETS), (2, UPDATE_MARKETS)):
        n = len(markets)
        config = (list(markets), [3_000] * n, [1_000] * n, 3_600, WAD // 10, WAD // 5, 3 * WAD // 2)
        scenarios.configure_group(group_id, config, sender=owner)
    for who in (maker, liquidator, *traders):
        token.mint(who, 10**9 * USDC, sender=who)
        token.approve(engine, 2**256 - 1, sender=who)
    # Every market with a fresh keeper update at 2x, as in operation.
    now = chain.pending_timestamp
    updates = [
        RiskUpdate(m, 2 * WAD, 0, now - 1, now + 600, MODEL_HASH)
        for m in GROUP_MARKETS + PLAIN_MARKETS + UPDATE_MARKETS
    ]
    signature = sign_batch(updates, KEEPER.key, chain.chain_id, registry.address)
    registry.submit_updates([u.as_tuple() for u in updates], [signature], sender=relayer)

    results: dict[str, int] = {}
    results["gas_deposit_first"] = engine.deposit(0, 10**8 * USDC, sender=maker).gas_used
    results["gas_deposit_again"] = engine.deposit(0, USDC, sender=maker).gas_used
    engine.deposit(0, 10**8 * USDC, sender=liquidator)
    size = WAD // 10

    def trade(taker, market_id, amount=size, sub=0, maker_sub=0):
        return engine.settle_trade(
            market_id, maker, maker_sub, taker, sub, amount, PRICE * WAD, sender=exchange
        ).gas_used

    # The scenario update: first write, then an overwrite (every shock moved, inside the step).
    results["gas_scenario_update_3_markets_16_first_write"] = _submit_scenarios(
        scenarios, relayer, 2, shock_rows(3, 16)
    ).gas_used
    chain.mine(deltatime=60)
    results["gas_scenario_update_3_markets_16"] = _submit_scenarios(
        scenarios, relayer, 2, shock_rows(3, 16, shift=50)
    ).gas_used
    _submit_scenarios(scenarios, relayer, 1, shock_rows(4, 16))

    # settle_trade where both sides open a position: the market has traded before and both
    # owners have volume in this window (the accumulators' slots are live); the two subaccounts
    # are new and hold only this position afterwards.
    opener = traders[4]
    engine.deposit(0, 100_000 * USDC, sender=opener)
    engine.deposit(1, 100_000 * USDC, sender=opener)
    engine.deposit(2, 10**6 * USDC, sender=maker)
    trade(opener, 2)
    results["gas_settle_trade_open"] = trade(opener, 2, sub=1, maker_sub=2)
    # The same into a market's first fill (its premium and open-interest slots start at zero).
    results["gas_settle_trade_open_first_fill"] = trade(opener, 9, sub=1, maker_sub=2)

    # Accounts with 1, 4 and 8 positions, tiered (markets outside any group); 4 in the group.
    plan = (
        ("1_position", traders[0], PLAIN_MARKETS[:1]),
        ("4_positions", traders[1], PLAIN_MARKETS),
        ("8_positions", traders[2], GROUP_MARKETS + PLAIN_MARKETS),
        ("4_positions_portfolio", traders[3], GROUP_MARKETS),
    )
    for name, trader, markets in plan:
        engine.deposit(0, 100_000 * USDC, sender=trader)
        for i, market_id in enumerate(markets):
            # Alternate sides so the portfolio is a real mix of longs and shorts.
            trade(trader, market_id, size if i % 2 == 0 else -size)
        gas = engine.is_liquidatable.transact(trader, 0, sender=owner).gas_used
        results[f"gas_is_liquidatable_{name}"] = gas
        results[f"gas_is_liquidatable_{name}_excl_intrinsic"] = gas - INTRINSIC
    assert engine.account_details(traders[3], 0).portfolio_group == 1
    assert engine.account_details(traders[1], 0).portfolio_group == 0
    results["gas_settle_trade_increase_maker_8_markets"] = trade(traders[0], 5)
    results["gas_withdraw_1_position"] = engine.withdraw(0, USDC, sender=traders[0]).gas_used

    # Liquidation of a one-position account (0.5 BTC on 750 USD; at the 2x multiplier
    # maintenance 300, initial 600) into a liquidator subaccount that holds collateral but no
    # position: a partial close (the rule's cap).
    victim = traders[4]
    token.mint(owner, 10_000 * USDC, sender=owner)
    token.approve(engine, 2**256 - 1, sender=owner)
    engine.fund_insurance(100 * USDC, sender=owner)

    def open_victim(sub, market_id, counterparty, counterparty_sub):
        engine.deposit(sub, 750 * USDC, sender=victim)
        engine.settle_trade(
            market_id,
            counterparty,
            counterparty_sub,
            victim,
            sub,
            WAD // 2,
            PRICE * WAD,
            sender=exchange,
        )

    open_victim(3, 5, maker, 0)
    feeds[5].set_answer(59_000 * 10**8, sender=owner)  # equity 250 < maintenance 295
    assert engine.is_liquidatable(victim, 3)
    receipt = engine.liquidate(victim, 3, 5, WAD, 0, sender=liquidator)
    results["gas_liquidate_1_position"] = receipt.gas_used
    # The same into the liquidator subaccount that now holds the market (no new position, no
    # new entry in the list of accounts with positions).
    engine.deposit(6, 750 * USDC, sender=victim)
    engine.settle_trade(5, maker, 0, victim, 6, WAD // 2, 59_000 * WAD, sender=exchange)
    feeds[5].set_answer(58_000 * 10**8, sender=owner)  # equity 250 < maintenance 290
    receipt = engine.liquidate(victim, 6, 5, WAD, 0, sender=liquidator)
    results["gas_liquidate_1_position_liquidator_holds_market"] = receipt.gas_used

    # Backstop of a one-position account below zero equity (the 100 USD fund covers part of
    # it: bad debt), then one ADL step against the opposite short, an account of one position.
    engine.deposit(5, 10_000 * USDC, sender=liquidator)
    open_victim(4, 6, liquidator, 5)
    feeds[6].set_answer(58_000 * 10**8, sender=owner)  # equity 750 - 1,000 < 0
    results["gas_backstop_1_position"] = engine.backstop(victim, 4, sender=liquidator).gas_used
    assert engine.bad_debt() > 0
    receipt = engine.deleverage(liquidator, 5, 6, WAD // 4, sender=relayer)
    results["gas_adl_1_position"] = receipt.gas_used

    # The 4-position check once the markets are stale (the fallback reads each market's stale
    # rules too); the feeds are refreshed so only the keeper updates are old.
    chain.pending_timestamp = chain.pending_timestamp + DEVNET_GUARDRAILS.heartbeat + 1
    for market_id in PLAIN_MARKETS:
        feeds[market_id].set_answer(PRICE * 10**8, sender=owner)
    gas = engine.is_liquidatable.transact(traders[1], 0, sender=owner).gas_used
    results["gas_is_liquidatable_4_positions_stale_markets"] = gas
    chain.mine()
    return results


def main() -> dict[str, int]:
    """Measure, print the table and merge the figures into ``bench/results.json``."""
    logger.set_level("WARNING")
    with networks.parse_network_choice("ethereum:local:test"):
        results = measure()
    rows = []
    for key, value in results.items():
        goal = GOALS.get(key)
        shown = "" if goal is None else f"<= {goal:,} ({'met' if value <= goal else 'NOT met'})"
        rows.append((key, f"{value:,}", shown))
    print_table("Engine gas (ape local network; whole transactions, views sent as one)", rows)
    record(results)
    return results


if __name__ == "__main__":
    main()
