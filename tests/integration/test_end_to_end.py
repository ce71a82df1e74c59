"""End to end on anvil: deploy, fund, open leveraged positions, replay a crash with the keeper and
the liquidation bot running each block; then check every unhealthy account was dealt with and the
books balance against the token."""

from __future__ import annotations

from eth_account import Account

from offchain import WAD
from offchain.bots.liquidator import scan
from offchain.devnet.replay import replay
from offchain.devnet.system import DEVNET_GUARDRAILS, USDC
from offchain.protocol.chain import latest_block
from offchain.protocol.tx_sender import TxSender
from tests.integration.conftest import FAST_SENDER, MARKET_BTC, MARKET_ETH, warm_up

BTC = 60_000.0
TRADER_COLLATERAL = 10_000 * USDC
INSURANCE = 1_000 * USDC
# Leverage of each trader subaccount: from comfortable to on the edge.
LEVERAGES = [3.0, 6.0, 9.7, 12.0, 17.8]
CRASH = [BTC * 0.95**k for k in (1, 2, 3)] + [BTC * 0.95**3 * 1.02]


def book(engine, accounts: list[tuple[str, int]]) -> int:
    """Sum over subaccounts of collateral minus open notional (USD WAD): the engine's cash."""
    total = 0
    for owner, sub in accounts:
        total += engine.collateral_of(owner, sub)
        for market_id in (MARKET_BTC, MARKET_ETH):
            total -= engine.position(owner, sub, market_id)[1]
    return total


def test_crash__keeper_raises_margin_and_bot_liquidates_every_unhealthy_account(
    w3,
    system,
    make_keeper,
    make_liquidator,
    engine_client,
    registry_client,
    maker,
    traders,
    accounts,
    advance,
    chain,
):
    engine, token = system.engine, system.token
    trader = traders[0]
    bot = make_liquidator(subaccount=1)
    bot_account = accounts[bot.sender.address]
    keeper = make_keeper()
    warm_up(keeper, latest_block(w3).timestamp, {MARKET_BTC: BTC, MARKET_ETH: 3_000.0})
    keeper.tick(latest_block(w3))
    assert registry_client.multiplier(MARKET_BTC) == DEVNET_GUARDRAILS.min_multiplier  # quiet

    # Fund: a maker, five trader subaccounts, the bot's subaccount, the insurance fund.
    system.fund(maker, 2_000_000 * USDC)
    system.fund(bot_account, 1_000_000 * USDC, subaccount=1)
    first_block = chain.blocks.head.number
    system.fund_insurance(system.owner, INSURANCE)
    for sub, leverage in enumerate(LEVERAGES):
        system.fund(trader, TRADER_COLLATERAL, subaccount=sub)
        size = int(TRADER_COLLATERAL / USDC * leverage / BTC * WAD)
        system.trade(MARKET_BTC, maker, trader, size, BTC, taker_sub=sub)
    subs = [(trader.address, sub) for sub in range(len(LEVERAGES))]
    everyone = [*subs, (maker.address, 0), (bot_account.address, 1), (engine.address, 0)]
    deposits = token.balanceOf(engine) * 10**12
    assert scan(engine_client).liquidatable == []

    # Replay the crash; the keeper and the bot each take one turn per step, as each block.
    feeder = TxSender(w3, Account.from_key(system.owner.private_key), FAST_SENDER)
    lags: dict[int, int] = {}
    ever_liquidatable: set[tuple[str, int]] = set()
    before = registry_client.market_state(MARKET_BTC).target

    def each_block(step: int, mined: dict) -> None:
        shock_block = next(iter(mined.values())).block_number
        result = keeper.tick(latest_block(w3))
        if result.sent is not None:
            lags[step] = result.sent.block_number - shock_block
        found = scan(engine_client).liquidatable
        ever_liquidatable.update((h.account.owner, h.account.subaccount) for h in found)
        bot.tick(latest_block(w3))
        assert scan(engine_client).liquidatable == [], f"step {step}: left unhealthy"
        advance(60)

    advance(60)
    replay(feeder, keeper.feeds, {system.feeds[MARKET_BTC].address: CRASH}, 0, each_block)

    # The multiplier rose with the shock, within 2 blocks of each price step that moved it.
    after = registry_client.market_state(MARKET_BTC).target
    assert after > before
    # the falls moved it from the second step on (the first stays under the 2x floor)
    assert min(lags) <= 2
    assert max(lags.values()) <= 2
    # Every subaccount that became liquidatable was liquidated or backstopped; none is left.
    assert len(ever_liquidatable) >= 2
    assert scan(engine_client).liquidatable == []
    for owner, sub in ever_liquidatable:
        equity, maintenance, _ = engine.account_health(owner, sub)
        assert equity >= maintenance
    assert bot.metrics.liquidations.labels("liquidate")._value.get() >= 1
    assert bot.metrics.liquidations.labels("backstop")._value.get() >= 1
    # The books: token balance = cash of every subaccount (insurance fund included) minus bad
    # debt, up to the rounding the engine keeps (always in its favour, a few wei per trade).
    balance = token.balanceOf(engine) * 10**12
    assert balance == deposits
    cash = book(engine, everyone)
    bad_debt = engine.bad_debt()
    dust = balance - (cash - bad_debt)
    assert 0 <= dust <= 100
    # What backstops could not cover was recorded as bad debt and then resolved: repaid from
    # the insurance fund's equity or recovered by deleveraging the other side, so nothing is
    # owed that the engine does not hold.
    head = chain.blocks.head.number + 1
    backstops = list(engine.Backstop.range(first_block, head))
    deleverages = list(engine.Deleveraged.range(first_block, head))
    repaid = list(engine.BadDebtRepaid.range(first_block, head))
    assert engine.deficit() == 0 and bad_debt == 0
    assert sum(e.bad_debt for e in backstops) > 0  # the crash did leave bad debt to resolve
    recovered = sum(e.transfer for e in deleverages) + sum(e.amount for e in repaid)
    assert recovered >= sum(e.bad_debt for e in backstops)
    assert all(e.equity > e.transfer for e in deleverages)  # nobody pushed below zero
