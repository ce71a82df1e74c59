"""Funding and profiles on anvil: fills 0.1% above the oracle for 8 hours make the premium model
sign a positive rate that longs pay, within the registry's bound; fills at the oracle give the
interest term; the event reader turns trades and a liquidation into account classes."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from offchain import WAD
from offchain.bots.engine_records import AccountEventLog, EngineRecords, reference_reading
from offchain.devnet.system import DEVNET_FUNDING_RESERVE_S, DEVNET_GUARDRAILS, USDC, System
from offchain.protocol.chain import FeedReading, latest_block
from offchain.protocol.signing import RiskUpdate, sign_batch
from offchain.risk.funding import PremiumFundingModel, ReferenceFundingModel
from offchain.risk.profiles import derive
from offchain.risk.risk_config import load_risk_config
from tests.integration.conftest import HOUR, MARKET_BTC, MARKET_ETH

DEVNET_CLASSES = load_risk_config().profiles.table("devnet")
BTC = 60_000
ETH = 3_000
INTEREST_PER_S = 10**14 // 28_800  # 0.01% per 8 hours


def hour_of_fills(system: System, maker, trader, market_id: int, oracle: int, premium_bp: int):
    """One hour on the devnet: refresh the oracle, then the trader buys 0.5 and sells 0.25 of
    the base at ``oracle * (1 + premium_bp / 10_000)`` through the exchange."""
    system.feeds[market_id].set_answer(oracle * 10**8, sender=system.owner)
    price = oracle * WAD * (10_000 + premium_bp) // 10_000
    for size in (WAD // 2, -WAD // 4):
        system.engine.settle_trade(
            market_id, maker, 0, trader, 0, size, price, sender=system.exchange
        )


def sign_and_submit(system: System, w3, keeper_key: LocalAccount, update: RiskUpdate) -> None:
    signature = sign_batch([update], keeper_key.key, w3.eth.chain_id, system.registry.address)
    system.registry.submit_updates([update.as_tuple()], [signature], sender=system.owner)


def run_hours(w3, system, records, model, maker, trader, market_id, oracle, premium_bp, advance):
    model.observe(records.premium_reading(market_id, latest_block(w3)))
    for _ in range(8):
        advance(HOUR)
        hour_of_fills(system, maker, trader, market_id, oracle, premium_bp)
        model.observe(records.premium_reading(market_id, latest_block(w3)))
    return latest_block(w3)


def test_premium__fills_above_the_oracle_for_8_hours_make_longs_pay(
    w3, system, maker, traders, keeper_key, advance
):
    trader = traders[0]
    system.fund(maker, 2_000_000 * USDC)
    system.fund(trader, 100_000 * USDC)
    records = EngineRecords(w3, system.engine.address)
    model = PremiumFundingModel()

    block = run_hours(w3, system, records, model, maker, trader, MARKET_BTC, BTC, 10, advance)
    quote = model.quote(block.timestamp, DEVNET_GUARDRAILS.max_funding_rate)

    assert quote.source == "premium"
    assert quote.premium == 10**15  # 0.1%, the fills' notional-weighted premium
    assert quote.window_notional == 8 * (BTC * WAD * 1001 // 1000) * 3 // 4  # 0.75 BTC an hour
    assert quote.rate == 5 * 10**14 // 28_800  # (0.1% - 0.05%) per 8 hours, per second
    assert 0 < quote.rate <= DEVNET_GUARDRAILS.max_funding_rate

    floor = DEVNET_GUARDRAILS.min_multiplier
    update = RiskUpdate(MARKET_BTC, floor, quote.rate, block.timestamp, block.timestamp + 600,
                        b"\x01" * 32)  # fmt: skip
    sign_and_submit(system, w3, keeper_key, update)
    assert system.registry.funding_rate(MARKET_BTC) == quote.rate

    # The trader is long 2 BTC against the maker: after an hour the long owes, the short is owed.
    advance(HOUR)
    system.set_price(MARKET_BTC, float(BTC))
    long_side = system.engine.account_details(trader, 0)
    short_side = system.engine.account_details(maker, 0)
    assert system.engine.position(trader, 0, MARKET_BTC)[0] == 2 * WAD
    assert long_side.funding_owed > 0 > short_side.funding_owed
    # The paying side carries the shipped reserve (2 hours of the rate in force) in maintenance.
    reserve_s = system.engine.funding_reserve_seconds(MARKET_BTC)
    assert reserve_s == DEVNET_FUNDING_RESERVE_S == 7200
    notional = 2 * BTC * WAD
    assert long_side.funding_reserve == -(-notional * quote.rate * reserve_s // WAD)
    assert short_side.funding_reserve == 0


def test_premium__fills_at_the_oracle_give_the_interest_term(
    w3, system, maker, traders, keeper_key, advance
):
    trader = traders[1]
    system.fund(maker, 2_000_000 * USDC)
    system.fund(trader, 100_000 * USDC)
    records = EngineRecords(w3, system.engine.address)
    model = PremiumFundingModel()

    block = run_hours(w3, system, records, model, maker, trader, MARKET_ETH, ETH, 0, advance)
    quote = model.quote(block.timestamp, DEVNET_GUARDRAILS.max_funding_rate)

    assert quote.source == "premium" and quote.premium == 0
    assert quote.rate == INTEREST_PER_S
    floor = DEVNET_GUARDRAILS.min_multiplier
    update = RiskUpdate(MARKET_ETH, floor, quote.rate, block.timestamp, block.timestamp + 600,
                        b"\x02" * 32)  # fmt: skip
    sign_and_submit(system, w3, keeper_key, update)
    assert system.registry.funding_rate(MARKET_ETH) == INTEREST_PER_S


def test_reference__a_mock_feed_publishes_the_venue_rate(w3, system, project, owner):
    feed = project.MockPriceFeed.deploy(8, 30_000, sender=owner)  # 0.03% per 8 hours
    block = latest_block(w3)
    _, answer, _, updated_at, _ = feed.latestRoundData()
    reading = reference_reading(FeedReading(feed.address, 1, answer, 8, updated_at))
    quote = ReferenceFundingModel().quote(reading, block.timestamp, 10**12)
    assert quote.rate == 3 * 10**14 // 28_800


def test_profiles__trades_and_a_liquidation_read_into_classes(
    w3, system, maker, traders, accounts, advance
):
    trader, liquidator = traders[2], accounts[7]
    start = latest_block(w3).number + 1
    system.fund(maker, 2_000_000 * USDC)
    system.fund(trader, 15_000 * USDC)  # initial margin at the stale multiplier: 14,400
    system.fund(liquidator, 1_000_000 * USDC, subaccount=1)
    system.trade(MARKET_BTC, maker, trader, 4 * WAD, float(BTC))  # 240k USD long on 15k
    advance(60)
    system.set_price(MARKET_BTC, BTC * 0.95)
    assert system.engine.is_liquidatable(trader, 0)
    system.engine.liquidate(trader, 0, MARKET_BTC, 4 * WAD, 1, sender=liquidator)

    records = EngineRecords(w3, system.engine.address)
    log = AccountEventLog(next_block=start, chunk=3)
    head = latest_block(w3)
    assert log.extend(records, head.number, head.timestamp) == 2  # one trade, one liquidation
    histories = log.histories(engine=system.engine.address)

    t_key = next(k for k in histories if k[0].lower() == trader.address.lower() and k[1] == 0)
    m_key = next(k for k in histories if k[0].lower() == maker.address.lower())
    assert [f.buy for f in histories[t_key].fills] == [True]
    assert [f.buy for f in histories[m_key].fills] == [False]
    assert len(histories[t_key].liquidations) == 1

    trader_record = records.record(trader.address, 0, histories[t_key])
    assert trader_record.trailing_volume == 240_000 * WAD
    decision = derive(trader_record, head.timestamp, DEVNET_CLASSES)
    assert (decision.name, decision.class_id) == ("liquidated", 4)

    maker_record = records.record(maker.address, 0, histories[m_key])
    assert maker_record.positions and maker_record.positions[0].market_id == MARKET_BTC
    assert derive(maker_record, head.timestamp, DEVNET_CLASSES).name == "default"

    # The devnet table fits the profile registry's bounds; the penalty the rule gives the
    # trader is one the registry accepts, a discount is refused on-chain eligibility.
    system.profiles.set_class_bounds(8 * WAD // 10, 2 * WAD, sender=system.owner)
    for c in DEVNET_CLASSES.classes:
        system.profiles.define_class(c.class_id, c.as_tuple(), sender=system.owner)
    assert system.profiles.is_eligible(trader, 0, decision.class_id)
    assert not system.profiles.is_eligible(trader, 0, DEVNET_CLASSES.by_name("maker").class_id)
