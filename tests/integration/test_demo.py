"""The demo on anvil with a short crash (1 calm hour, a 30% / 38% fall over 4 hours, 1 hour of
rebound): the keeper raises margin and signs funding, scenarios and classes; the bot liquidates,
backstops and deleverages; every figure the summary prints is checked here against what the
chain says (the engine's views and events), and the books balance to the wei."""

from __future__ import annotations

import pytest

from offchain import WAD
from offchain.devnet.demo import run_demo
from offchain.devnet.report import multipliers
from offchain.devnet.scenario import (
    MARKET_BTC,
    MARKET_ETH,
    TOKEN_SCALE,
    DemoActors,
    DemoConfig,
    seeded_scenario,
)
from offchain.devnet.summary import format_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def actors(owner, exchange, maker, traders, accounts, liquidator_key, keeper_key) -> DemoActors:
    """The integration actors in their demo roles (the bot's ape account funds its subaccount)."""
    bot = accounts[liquidator_key.address]
    return DemoActors(owner, exchange, maker, tuple(traders), bot, keeper_key)


@pytest.fixture(scope="module")
def demo(request):
    """One run shared by the checks below (each reads a different part of it)."""
    return {}


@pytest.fixture
def result(demo, actors, rpc_url, tmp_path_factory):
    if "result" not in demo:
        chart = tmp_path_factory.mktemp("demo") / "demo.png"
        scenario = seeded_scenario(calm_steps=1, crash_steps=4, rebound_steps=1)
        demo["result"] = run_demo(actors, scenario, rpc_url, DemoConfig(chart=chart))
    return demo["result"]


def test_demo__the_keeper_raises_margin_and_the_bot_deals_with_every_unhealthy_account(result):
    # The multiplier rose after the shock (the keeper sees the first crash hour once its bar
    # has finished, and maintenance phases in over the ramp), in both markets.
    for market_id in (MARKET_BTC, MARKET_ETH):
        path = multipliers(result, market_id)
        assert max(path[2:5]) > path[1]
        assert max(path) >= 2 * path[0]
    assert len(result.first_liquidatable) >= 3
    assert result.unhandled == set()
    assert all(r.left_unhealthy == 0 for r in result.records)
    assert not any(h.liquidatable for h in result.final_health.values())
    # Partial liquidations: some liquidated accounts kept part of the position.
    partial = [
        e
        for e in result.liquidations
        if any(
            m == e.market_id
            for s in result.snapshots.get(e.account, [])
            if s.step == e.step
            for m, _ in s.positions
        )
    ]
    assert partial, "no liquidation left the account a position"


def test_demo__backstops_and_deleveraging_resolve_the_bad_debt(result):
    assert result.backstops
    created = sum(e.bad_debt for e in result.backstops)
    end = result.records[-1]
    if created:
        assert result.deleverages or result.repayments
    # The bad debt left is the engine's (the replay agrees), and what left it was recovered by
    # deleveraging transfers and the fund's repayments: together at least the difference.
    assert end.bad_debt == result.reconciliation.bad_debt
    recovered = sum(e.transfer for e in result.deleverages) + sum(
        e.amount for e in result.repayments
    )
    assert recovered >= created - end.bad_debt
    assert result.bad_debt_recovered + sum(e.amount for e in result.repayments) == (
        created - end.bad_debt
    )
    summary = format_summary(result)
    assert f"{end.bad_debt / WAD:,.2f} USD at the end" in summary
    if end.deficit:
        assert "deficit" in summary and "(every deficit recovered)" not in summary
    else:
        assert "(every deficit recovered)" in summary
    # A backstop pays its caller the reward from what the fund has left after covering (the
    # replay checks each against the fund it reconstructs: no mismatch).
    assert all(0 <= e.reward <= 10 * WAD for e in result.backstops)
    assert result.reconciliation.mismatches == ()


def test_demo__books_balance_to_the_wei_with_funding_adl_and_the_fund_s_positions(result):
    books = result.reconciliation
    assert books.holds, format_summary(result)
    assert books.difference == 0 and books.mismatches == ()
    assert books.replayed >= len(result.descriptions) + 3  # the book, maker, bot, fund
    config = result.config
    deposits = config.maker_collateral + config.bot_collateral + config.insurance
    deposits += sum(account.collateral for account in config.book)
    assert books.token_balance == deposits * TOKEN_SCALE  # nothing was withdrawn
    assert 0 <= books.rounding <= books.fills
    assert books.settlements > 0 and books.funding_settled != 0
    assert result.deleverages == [] or books.fills >= len(result.deleverages)
    assert "holds to the wei" in format_summary(result)


def test_demo__funding_signed_by_the_keeper_paid_by_longs(result):
    end = result.records[-1]
    assert all(end.funding_rates[m] > 0 for m in (MARKET_BTC, MARKET_ETH))
    paid = {a: result.funding_paid(a) for a in {*result.funding_settled, *result.funding_owed}}
    assert sum(v for v in paid.values() if v > 0) > 0
    assert sum(v for v in paid.values() if v < 0) < 0
    # Zero-sum but for each settlement and each amount still owed rounding up.
    total = sum(paid.values())
    assert 0 <= total <= result.reconciliation.settlements + len(result.funding_owed)
    outright = result.roles["outright"]
    assert paid[outright] > 0  # a long pays


def test_demo__every_account_is_charged_what_the_python_reference_says(result):
    """Step after step, every account's maintenance on chain equals the reference: tiered by
    the registry's formula at the multipliers in force with its class, or the portfolio formula
    on the group's shocks, plus the funding reserve."""
    checked = [s for snaps in result.snapshots.values() for s in snaps if s.positions]
    assert len(checked) >= 3 * len(result.snapshots)
    assert all(s.maintenance == s.reference for s in checked)
    assert any(s.group == 1 for s in checked) and any(s.class_id for s in checked)


def test_demo__hedged_pair_pays_the_portfolio_margin_the_outright_long_the_tiered_sum(result):
    hedged, outright = result.roles["hedged"], result.roles["outright"]
    h0, o0 = result.snapshots[hedged][0], result.snapshots[outright][0]
    assert result.records[0].scenarios_fresh
    assert h0.group == 1 and h0.maintenance < h0.tiered + h0.reserve
    assert o0.group == 0 and o0.maintenance == o0.tiered + o0.reserve  # one position: tiered
    assert h0.maintenance < o0.maintenance  # same gross notional
    # Through the crash the hedge is never charged more than its tiered sum, while the
    # scenarios are fresh it is margined by them, and it ends with more equity than the long.
    for h in result.snapshots[hedged]:
        assert h.maintenance <= h.tiered + h.reserve
        if result.records[h.step].scenarios_fresh and len(h.positions) == 2:
            assert h.group == 1
    assert result.final_health[hedged].equity > result.final_health[outright].equity
    assert "portfolio margin: maintenance (USD) of the hedged pair" in format_summary(result)


def test_demo__account_classes_signed_by_the_keeper_change_maintenance(result):
    names = result.class_names
    two_sided = result.snapshots[result.roles["two-sided"]]
    maker = [s for s in two_sided if names.get(s.class_id) == "maker"]
    assert maker, "the two-sided account never reached the maker class"
    # A discount bites once the multiplier is above the floor it may not cross.
    assert any(s.maintenance < s.default for s in maker)
    assert all(s.maintenance <= s.default for s in maker)
    penalised = [
        s
        for snaps in result.snapshots.values()
        for s in snaps
        if names.get(s.class_id) in ("liquidated", "repeat_liquidated") and s.positions
    ]
    assert penalised and all(s.maintenance > s.default for s in penalised)
    # In the default class the reference in the account's class is the default one.
    plain = [s for snaps in result.snapshots.values() for s in snaps if s.positions]
    plain = [s for s in plain if s.class_id == 0]
    assert plain and all(s.maintenance == s.default for s in plain)
    summary = format_summary(result)
    assert "maker" in summary and "liquidated" in summary


def test_demo__accounts_caught_only_because_margin_rose(result):
    assert result.caught_by_multiplier
    for account, c in result.caught_by_multiplier.items():
        assert c.equity >= c.pre_crash  # healthy at the pre-crash multipliers
        assert c.equity < c.maintenance  # liquidatable at those in force
        assert result.first_liquidatable[account] == c.step
        assert result.labels[account] in format_summary(result)


def test_demo__keeper_landed_every_kind_and_the_chart_was_written(result):
    k = result.keeper_batches
    assert k["scenario updates"] > 0 and k["profile updates"] > 0 and k["relayed"] > 0
    assert len(result.keeper_txs) == k["transactions"] >= result.scenario.steps
    assert result.bot_txs
    assert result.chart is not None and result.chart.read_bytes()[:8] == PNG_MAGIC
