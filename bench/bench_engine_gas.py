"""Gas of the margin engine's hot paths, on ape's local network (py-evm).

Transactions (``settle_trade``, ``liquidate``, ``backstop``, ``deposit``, ``withdraw``) are the
whole transaction's ``gas_used``: 21,000 intrinsic gas and calldata included. Views
(``is_liquidatable``) are measured with ``eth_estimateGas`` of a call, which also includes the
21,000 intrinsic gas; the ``_excl_intrinsic`` rows subtract it. Every position sits in its own
market with its own feed contract, so each position pays its cold storage and cold calls (feed,
registry) as it would on mainnet. The engine caps a subaccount at 8 markets, so the 16-position
row is measured as the cap (8).
"""

from __future__ import annotations

from ape import accounts, chain, networks, project
from ape.logging import logger

from bench.results import print_table, record
from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_TIERS

TIERS = [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS]
GUARDRAILS = DEVNET_GUARDRAILS
USDC = 10**6
PRICE = 60_000
MAX_POSITIONS = 8
INTRINSIC = 21_000


def _config(feed) -> tuple:
    return (feed.address, 3600, 5 * 10**16, 25 * 10**14, WAD // 2, 10**12 * WAD)


def measure() -> dict[str, int]:
    """Deploy a fresh system and return gas figures keyed by scenario."""
    owner, exchange, maker, liquidator = accounts.test_accounts[:4]
    traders = accounts.test_accounts[4:8]
    registry = project.RiskParameterRegistry.deploy(owner, sender=owner)
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    engine = project.MarginEngine.deploy(token, registry, sender=owner)
    feeds = {}
    for market_id in range(1, MAX_POSITIONS + 1):
        registry.configure_market(market_id, TIERS, 2 * WAD, GUARDRAILS.as_tuple(), sender=owner)
        feeds[market_id] = project.MockPriceFeed.deploy(8, PRICE * 10**8, sender=owner)
        engine.add_market(market_id, _config(feeds[market_id]), sender=owner)
    engine.set_exchange(exchange, True, sender=owner)
    for who in (maker, liquidator, *traders):
        token.mint(who, 10**9 * USDC, sender=who)
        token.approve(engine, 2**256 - 1, sender=who)

    results: dict[str, int] = {}
    results["gas_deposit_first"] = engine.deposit(0, 10**8 * USDC, sender=maker).gas_used
    results["gas_deposit_again"] = engine.deposit(0, USDC, sender=maker).gas_used
    engine.deposit(0, 10**8 * USDC, sender=liquidator)
    size = WAD // 10

    def trade(taker, market_id, amount=size, sub=0):
        return engine.settle_trade(
            market_id, maker, 0, taker, sub, amount, PRICE * WAD, sender=exchange
        ).gas_used

    # Accounts with 1, 4 and 8 positions (one per market).
    for trader, n in zip(traders[:3], (1, 4, MAX_POSITIONS), strict=True):
        engine.deposit(0, 100_000 * USDC, sender=trader)
        for market_id in range(1, n + 1):
            gas = trade(trader, market_id)
            if n == 1:
                results["gas_settle_trade_open"] = gas
        estimate = engine.is_liquidatable.estimate_gas_cost(trader, 0)
        results[f"gas_is_liquidatable_{n}_position{'s' if n > 1 else ''}"] = estimate
        results[f"gas_is_liquidatable_{n}_position{'s' if n > 1 else ''}_excl_intrinsic"] = (
            estimate - INTRINSIC
        )
    # The maker is the counterparty of every trade above: it now holds all 8 markets.
    results["gas_settle_trade_increase_maker_8_markets"] = trade(traders[0], 1)
    results["gas_settle_trade_increase_taker_4_maker_8_markets"] = trade(traders[1], 1)
    results["gas_withdraw_1_position"] = engine.withdraw(0, USDC, sender=traders[0]).gas_used

    # Liquidation of a one-position account (0.5 BTC, 1,500 USD) into a liquidator subaccount
    # that holds collateral but no position: a partial close (the rule's cap).
    victim = traders[3]

    def open_victim(sub):
        feeds[1].set_answer(PRICE * 10**8, sender=owner)
        engine.deposit(sub, 1_500 * USDC, sender=victim)
        engine.settle_trade(1, maker, 0, victim, sub, WAD // 2, PRICE * WAD, sender=exchange)

    # The insurance fund already holds collateral (its first penalty is not a fresh slot).
    token.mint(owner, 10_000 * USDC, sender=owner)
    token.approve(engine, 2**256 - 1, sender=owner)
    engine.fund_insurance(10_000 * USDC, sender=owner)
    open_victim(0)
    feeds[1].set_answer(57_900 * 10**8, sender=owner)  # equity 450 < maintenance 579
    assert engine.is_liquidatable(victim, 0)
    receipt = engine.liquidate(victim, 0, 1, WAD, 0, sender=liquidator)
    results["gas_liquidate_1_position"] = receipt.gas_used
    # The same, into the liquidator subaccount that now already holds the market.
    open_victim(3)
    feeds[1].set_answer(57_900 * 10**8, sender=owner)
    receipt = engine.liquidate(victim, 3, 1, WAD, 0, sender=liquidator)
    results["gas_liquidate_1_position_liquidator_holds_market"] = receipt.gas_used
    # Deeply underwater: the whole position goes.
    open_victim(1)
    feeds[1].set_answer(57_500 * 10**8, sender=owner)  # equity 250 < 50% of 575
    receipt = engine.liquidate(victim, 1, 1, WAD, 0, sender=liquidator)
    results["gas_liquidate_1_position_full_close"] = receipt.gas_used

    # Backstop of a one-position account below zero equity.
    open_victim(2)
    feeds[1].set_answer(55_000 * 10**8, sender=owner)  # equity -1,000
    results["gas_backstop_1_position"] = engine.backstop(victim, 2, sender=liquidator).gas_used
    chain.mine()
    return results


def main() -> dict[str, int]:
    """Measure, print the table and merge the figures into ``bench/results.json``."""
    logger.set_level("WARNING")
    with networks.parse_network_choice("ethereum:local:test"):
        results = measure()
    goals = {
        "gas_is_liquidatable_4_positions": "<= 60,000",
        "gas_liquidate_1_position": "<= 150,000",
    }
    rows = [(key, f"{value:,}", goals.get(key, "")) for key, value in results.items()]
    print_table(
        "Engine gas (ape local network; txs: whole gas_used; views: estimateGas incl. 21,000)",
        rows,
    )
    record(results)
    return results


if __name__ == "__main__":
    main()
