"""The demo on anvil with a short crash (1 calm hour, a 30% / 38% fall over 4 hours, 1 hour of
rebound): the keeper raises margin, the bot deals with every unhealthy account, the books balance
to the wei and the chart is written."""

from __future__ import annotations

import pytest

from offchain.devnet.demo import run_demo
from offchain.devnet.report import format_summary, multipliers
from offchain.devnet.scenario import (
    MARKET_BTC,
    MARKET_ETH,
    TOKEN_SCALE,
    DemoActors,
    DemoConfig,
    seeded_scenario,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def actors(owner, exchange, maker, traders, accounts, liquidator_key, keeper_key) -> DemoActors:
    """The integration actors in their demo roles (the bot's ape account funds its subaccount)."""
    bot = accounts[liquidator_key.address]
    return DemoActors(owner, exchange, maker, tuple(traders), bot, keeper_key)


def test_run_demo__short_crash_liquidates_backstops_and_balances(actors, rpc_url, tmp_path):
    scenario = seeded_scenario(calm_steps=1, crash_steps=4, rebound_steps=1)
    chart = tmp_path / "demo.png"
    config = DemoConfig(chart=chart)

    result = run_demo(actors, scenario, rpc_url, config)

    # The multiplier rose after the shock (step 2 is the first crash hour; the keeper sees it
    # when that bar has finished, at step 3, and maintenance phases in over the ramp), in both
    # markets.
    for market_id in (MARKET_BTC, MARKET_ETH):
        path = multipliers(result, market_id)
        assert max(path[2:5]) > path[1]
        assert max(path) >= 2 * path[0]
    # Every subaccount that became liquidatable was liquidated or backstopped, at once.
    assert len(result.first_liquidatable) >= 3
    assert result.unhandled == set()
    assert all(r.left_unhealthy == 0 for r in result.records)
    assert result.liquidations and result.backstops
    assert not any(h.liquidatable for h in result.final_health.values())
    # The insurance fund: what was paid in, plus its share of every penalty, minus what it
    # covered; what it could not cover is exactly the recorded bad debt.
    fees = sum(e.penalty - e.reward for e in result.liquidations)
    covered = sum(e.covered for e in result.backstops)
    end = result.records[-1]
    assert end.insurance_fund == result.initial_insurance + fees - covered
    assert end.bad_debt == sum(e.bad_debt for e in result.backstops)
    # The books against the token balance, to the wei.
    books = result.reconciliation
    assert books.holds, format_summary(result)
    deposits = config.maker_collateral + config.bot_collateral + config.insurance
    deposits += sum(account.collateral for account in config.book)
    assert books.token_balance == deposits * TOKEN_SCALE  # nothing was withdrawn
    assert 0 <= books.rounding <= books.fills
    # The bots spent gas, and the chart was written.
    assert len(result.keeper_txs) == scenario.steps + 1
    assert result.bot_txs
    assert result.chart == chart
    assert chart.read_bytes()[:8] == PNG_MAGIC
    assert "holds to the wei" in format_summary(result)
