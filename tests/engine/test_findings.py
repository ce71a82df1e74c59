"""Regressions of the contract review's findings: each test reproduces the finding's proof of
concept and fails on the engine before its fix (F1-F6, then the findings without proof).

Expected values come from :mod:`offchain.protocol.engine_math` applied to the stored state
(``tests/engine/reference.py``) or are worked out by hand in the test."""

import ape
from eth_abi import decode

from offchain.protocol import engine_math as em
from offchain.protocol.margin_math import MarketState, funding_rate_in_force
from tests.conftest import DEFAULT_GUARDRAILS, DEFAULT_INITIAL_RATIO, MARKET_BTC, WAD
from tests.engine.conftest import LIQUIDATION_FEE, USDC, feed_answer
from tests.engine.reference import market_view, reference_health

H = DEFAULT_GUARDRAILS.heartbeat


# F1: liquidating a negative-equity account hid the loss


def test_f1__negative_equity_is_backstopped_and_the_loss_booked(
    engine, trader, maker, liquidator, fund, trade, feed, owner, token
):
    """Before: `liquidate` closed a negative account whole with no penalty; it ended flat with
    collateral -500 USD, the insurance fund still showed 300 and bad debt stayed 0."""
    engine.set_backstop_reward(0, sender=owner)
    token.mint(owner, 300 * USDC, sender=owner)
    token.approve(engine, 2**256 - 1, sender=owner)
    engine.fund_insurance(300 * USDC, sender=owner)
    fund(trader, 11_000 * USDC)
    fund(maker, 100_000 * USDC)
    fund(liquidator, 100_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(48_500), sender=maker)  # equity 11,000 - 11,500 = -500
    assert engine.account_health(trader, 0)[0] == -500 * WAD

    with ape.reverts("engine: negative equity, backstop the account"):
        engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    engine.backstop(trader, 0, sender=liquidator)

    assert engine.collateral_of(trader, 0) == 0  # no flat account below zero
    assert engine.bad_debt() == 200 * WAD  # 500 - the fund's 300
    assert engine.insurance_fund() == 0
    assert engine.deficit() == 200 * WAD


# F2: partial liquidation over-closed tiered positions


def test_f2__partial_close_follows_the_true_tiered_requirement(
    engine, registry, trader, maker, liquidator, fund, trade, feed, chain
):
    """300 BTC across three tiers: the old rule (maintenance linear in notional at the average
    tier rate) allowed 64.03 BTC; the smallest close that restores 110% is 39.41 BTC."""
    fund(trader, 2_400_000 * USDC)
    fund(maker, 10_000_000 * USDC)
    fund(liquidator, 10_000_000 * USDC)
    size = 300 * WAD
    trade(maker, trader, size)
    feed.set_answer(feed_answer(55_000), sender=maker)
    now = chain.blocks.head.timestamp
    h = reference_health(engine, registry, trader, 0, now)
    assert h.liquidatable and h.equity * 2 > h.maintenance  # not deep underwater
    market = market_view(engine, registry, MARKET_BTC)
    allowed = em.closable(h, 0, LIQUIDATION_FEE, market, {}, now)

    # The previous rule, from the previous engine's docstring.
    leg = h.legs[0]
    need = -(-h.maintenance * 11 // 10) - h.equity
    fraction = -(
        -need * WAD // (leg.maintenance * 11 // 10 - -(-leg.notional * LIQUIDATION_FEE // WAD))
    )
    old_rule = -(-size * fraction // WAD)
    assert allowed < old_rule * 62 // 100  # 39.41 BTC against 64.03
    closed = engine.liquidate.call(trader, 0, MARKET_BTC, size, 0, sender=liquidator)
    assert closed == allowed

    engine.liquidate(trader, 0, MARKET_BTC, size, 0, sender=liquidator)
    equity, maintenance, _ = engine.account_health(trader, 0)
    assert equity >= -(-maintenance * 11 // 10) - 1  # 110% restored (1 wei of close rounding)
    # One grid step less would not have restored it.
    step_less = closed - -(-size // em.CLOSE_GRID)
    after = em.maintenance_after(h, 0, size - step_less, market, None)
    left = h.equity - em.penalty(step_less, leg.price, em.fee_rate(leg, LIQUIDATION_FEE), h.equity)
    assert left < -(-after * 11 // 10)


# F3: liquidation at the engine's last-touch price while the feed had a fresher answer


def test_f3__stale_feed_marks_at_the_fresher_of_feed_and_stored_price(
    engine, trader, maker, fund, trade, feed, chain
):
    """Before: past max_price_age the engine used the price stored at its last touch (58,000)
    while the feed's own, newer answer said 64,000."""
    fund(trader, 20_000 * USDC)
    fund(maker, 100_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(58_000), sender=maker)
    engine.poke(MARKET_BTC, sender=maker)  # stores 58,000 with its feed time
    stored_at = chain.blocks.head.timestamp
    chain.mine(deltatime=7_200)
    now = chain.blocks.head.timestamp
    # A newer answer than the stored one, but already older than the 1-hour max age.
    feed.set_round(feed_answer(64_000), stored_at + 1_800, sender=maker)
    assert now - (stored_at + 1_800) > 3_600
    assert engine.mark_price(MARKET_BTC) == (64_000 * WAD, False)
    assert engine.account_health(trader, 0)[0] == 24_000 * WAD

    # An answer older than the stored price loses to it.
    feed.set_round(feed_answer(50_000), stored_at - 10, sender=maker)
    assert engine.mark_price(MARKET_BTC) == (58_000 * WAD, False)
    # A dead feed falls back to the stored price too; nothing is locked.
    feed.set_reverting(True, sender=maker)
    assert engine.mark_price(MARKET_BTC) == (58_000 * WAD, False)
    trade(maker, trader, -WAD, price=58_000 * WAD)  # closing works on the stored price
    assert engine.position(trader, 0, MARKET_BTC)[0] == 0


# F4: funding kept accruing with no keeper


def test_f4__stale_and_paused_funding_decays_to_zero(
    engine, registry, trader, maker, fund, trade, submit, make_update, chain, owner, feed
):
    """Before: the last signed rate accrued for as long as nobody touched the market (a 1 BTC
    long paid 25.9% of notional in 3 days). Now it stops one heartbeat after going stale,
    also while the registry is paused."""
    fund(trader, 20_000 * USDC)
    fund(maker, 100_000 * USDC)
    trade(maker, trader, WAD)
    rate = 10**12  # the bound: 1e-6 per second
    landed = submit([make_update(multiplier=2 * WAD, funding_rate=rate)]).timestamp
    registry.pause(sender=owner)
    chain.mine(deltatime=3 * 86_400)
    feed.set_answer(feed_answer(60_000), sender=maker)
    state = MarketState(*registry.market_state(MARKET_BTC))
    touched = engine.funding_snapshot(trader, 0, MARKET_BTC)  # the trade's index: 0
    owed = engine.funding_index(MARKET_BTC) - touched
    expected = em.funding_accrued(
        rate, landed, H, landed, chain.blocks.head.timestamp, 60_000 * WAD
    )
    assert owed == expected == rate * 60_000 * (H + H // 2)  # fresh H, then a linear decay
    assert owed * 20 < 60_000 * WAD  # 1.08% of notional, against 25.9% before
    assert funding_rate_in_force(state, DEFAULT_GUARDRAILS, chain.blocks.head.timestamp) == 0


# F5 (one update per market per block) is tested with the registry: tests/registry.


# F6: an unhealthy account could not cut risk gradually


def test_f6__unhealthy_account_may_reduce_without_lowering_its_ratio(
    engine, trader, maker, fund, trade, feed
):
    """Before: a reducing trade had to leave equity >= maintenance, so at equity/maintenance
    0.69 a 10% sell reverted. Now a reduction that does not lower the ratio goes through.
    (No update yet: the 4x stale multiplier, maintenance 2% and initial 4% of notional.)"""
    fund(trader, 3_000 * USDC)
    fund(maker, 1_000_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(57_800), sender=maker)
    equity, maintenance, _ = engine.account_health(trader, 0)
    assert (equity, maintenance) == (800 * WAD, 1_156 * WAD)  # ratio 0.69

    trade(maker, trader, -WAD // 10, price=57_800 * WAD)

    after, after_m, _ = engine.account_health(trader, 0)
    assert after_m == 1_040_400 * WAD // 1_000 and after >= 800 * WAD - 1
    assert after * maintenance >= equity * after_m  # the ratio did not fall
    assert engine.is_liquidatable(trader, 0)  # still unhealthy: a step, not a cure


def test_f6__reduction_at_a_worse_ratio_reverts(engine, trader, maker, fund, trade, feed):
    """Selling 10% at 5% under the mark (inside the band) takes equity from 800 to 511 against
    a maintenance of 1,040: the ratio falls from 0.69 to 0.49, so the trade reverts."""
    fund(trader, 3_000 * USDC)
    fund(maker, 1_000_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(57_800), sender=maker)
    with ape.reverts("engine: below maintenance margin"):
        trade(maker, trader, -WAD // 10, price=57_800 * WAD * 95 // 100)


# Found without proof


def test_insurance_fund__marks_the_positions_it_took_over(
    engine, trader, maker, liquidator, fund, trade, feed, owner, token
):
    """The fund's backstopped positions used to carry no mark: `insurance_fund()` showed its
    collateral whatever they lost. It is now the fund's equity, and a negative one is deficit."""
    token.mint(owner, 1_000 * USDC, sender=owner)
    token.approve(engine, 2**256 - 1, sender=owner)
    engine.fund_insurance(1_000 * USDC, sender=owner)
    fund(trader, 11_000 * USDC)
    fund(maker, 100_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(48_500), sender=maker)  # equity -500
    engine.backstop(trader, 0, sender=liquidator)
    assert engine.insurance_fund() == 500 * WAD  # 1,000 - 500 covered
    feed.set_answer(feed_answer(48_200), sender=maker)  # the fund's 1 BTC long loses 300 more
    assert engine.insurance_fund() == 200 * WAD
    feed.set_answer(feed_answer(47_900), sender=maker)  # and 600: the fund is 100 short
    assert engine.insurance_fund() == 0
    assert engine.deficit() == 100 * WAD
    assert engine.markets_of(engine, 0) == [MARKET_BTC]


def test_liquidate__fee_capped_at_the_rate_in_force_after_tiers_are_lowered(
    engine, registry, owner, trader, maker, liquidator, fund, trade, feed, chain
):
    """The fee bound was checked at listing only. Governance then lowers the first tier to 0.05%
    (x 4 stale = 0.2% in force), under the 0.25% fee: every liquidation would end in bad debt.
    The penalty is now capped at the position's maintenance rate in force."""
    fund(trader, 2_500 * USDC)
    fund(maker, 1_000_000 * USDC)
    fund(liquidator, 1_000_000 * USDC)
    trade(maker, trader, WAD)
    low = [(0, 5 * 10**14)]
    registry.configure_market(
        MARKET_BTC, low, DEFAULT_INITIAL_RATIO, DEFAULT_GUARDRAILS.as_tuple(), sender=owner
    )
    feed.set_answer(feed_answer(57_600), sender=maker)  # equity 100 < 0.2% x 57,600 = 115.2
    now = chain.blocks.head.timestamp
    h = reference_health(engine, registry, trader, 0, now)
    assert h.liquidatable
    rate = em.fee_rate(h.legs[0], LIQUIDATION_FEE)
    assert rate == 2 * 10**15 < LIQUIDATION_FEE
    receipt = engine.liquidate(trader, 0, MARKET_BTC, WAD, 0, sender=liquidator)
    [log] = receipt.decode_logs(engine.Liquidation)
    closed = -log.size
    assert log.penalty == min(em.penalty(closed, log.price, rate, h.equity), h.equity - 1)
    closed_notional = -(-closed * log.price // WAD)
    assert log.penalty < closed_notional * LIQUIDATION_FEE // WAD


def test_fund_insurance__pulls_the_tokens_before_it_credits(
    project, owner, registry, feed, stranger
):
    """A token calling back from `transferFrom` saw the fund already credited with tokens that
    had not arrived. The callback now reads the fund before the credit."""
    from offchain.devnet.system import deploy_engine
    from tests.engine.conftest import config

    evil = project.ReentrantToken.deploy(6, sender=owner)
    engine = deploy_engine(project, owner, evil, registry)
    engine.add_market(MARKET_BTC, config(feed), sender=owner)
    evil.mint(stranger, 100 * USDC, sender=stranger)
    evil.approve(engine, 2**256 - 1, sender=stranger)
    evil.arm(engine, engine.insurance_fund.encode_input(), sender=owner)
    engine.fund_insurance(7 * USDC, sender=stranger)
    assert evil.successes() == 1
    assert decode(["uint256"], evil.last_response())[0] == 0
    assert engine.insurance_fund() == 7 * WAD


def test_backstop__pays_a_bounded_reward_from_what_the_fund_has_left(
    engine, trader, maker, liquidator, fund, trade, feed, owner, token
):
    """Nobody was paid to call `backstop` (a negative account pays no penalty). The caller now
    gets `backstop_reward` from what the fund has left after covering, never more."""
    with ape.reverts("engine: backstop reward above 100 USD"):
        engine.set_backstop_reward(100 * WAD + 1, sender=owner)
    engine.set_backstop_reward(25 * WAD, sender=owner)
    token.mint(owner, 510 * USDC, sender=owner)
    token.approve(engine, 2**256 - 1, sender=owner)
    engine.fund_insurance(510 * USDC, sender=owner)
    fund(trader, 11_000 * USDC)
    fund(maker, 100_000 * USDC)
    trade(maker, trader, WAD)
    feed.set_answer(feed_answer(48_500), sender=maker)  # equity -500
    receipt = engine.backstop(trader, 0, sender=liquidator)
    [reward] = receipt.decode_logs(engine.BackstopReward)
    assert (reward.caller, reward.amount) == (liquidator.address, 10 * WAD)  # all that was left
    assert engine.collateral_of(liquidator, 0) == 10 * WAD
    assert engine.collateral_of(engine, 0) == 0
