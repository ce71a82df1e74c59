"""The liquidation bot on anvil: worst first, rivals, throttling, dry run."""

from __future__ import annotations

import pytest

from offchain import WAD
from offchain.bots.liquidator import Liquidator, LiquidatorConfig, LiquidatorResult, scan
from offchain.devnet.system import USDC
from offchain.protocol.chain import latest_block
from tests.integration.conftest import MARKET_BTC

BTC = 60_000.0


@pytest.fixture
def underwater(w3, system, maker, traders, accounts, make_liquidator, advance):
    """Two trader subaccounts made liquidatable by a 6% fall: 12x (underwater) and 14x worse."""
    trader = traders[1]
    bot = make_liquidator(subaccount=1)
    system.fund(maker, 1_000_000 * USDC)
    system.fund(accounts[bot.sender.address], 500_000 * USDC, subaccount=1)
    for sub, leverage in ((0, 12.0), (1, 16.0), (2, 2.0)):
        system.fund(trader, 10_000 * USDC, subaccount=sub)
        size = int(10_000 * leverage / BTC * WAD)
        system.trade(MARKET_BTC, maker, trader, size, BTC, taker_sub=sub)
    advance(60)
    system.set_price(MARKET_BTC, BTC * 0.925)
    return trader, bot


def test_scan__lists_liquidatable_worst_first(engine_client, underwater):
    trader, _ = underwater

    result = scan(engine_client)

    assert result.scanned == 4  # three traders and the maker
    assert [(h.account.owner, h.account.subaccount) for h in result.liquidatable] == [
        (trader.address, 1),
        (trader.address, 0),
    ]
    assert result.liquidatable[0].equity < 0 < result.liquidatable[1].equity


def test_tick__liquidates_until_none_left(w3, engine_client, underwater, system, maker):
    _, bot = underwater

    result = bot.tick(latest_block(w3))

    assert result.failures == 0
    assert result.backstops >= 1 and result.liquidations >= 1
    assert scan(engine_client).liquidatable == []
    trader = underwater[0]
    assert system.engine.markets_of(trader, 1) == []  # the underwater one was backstopped
    # No insurance fund here: the backstop's shortfall became bad debt, and the bot then
    # deleveraged the other side (the maker's short) until the deficit was gone.
    [backstop] = system.engine.Backstop.range(0, w3.eth.block_number + 1)
    assert backstop.bad_debt > 0
    assert result.deleverages >= 1
    [adl, *_] = system.engine.Deleveraged.range(0, w3.eth.block_number + 1)
    assert adl.owner == maker.address and adl.transfer > 0  # the only short: the maker
    assert system.engine.deficit() == 0 and system.engine.bad_debt() == 0


def test_tick__log_names_the_amount_closed_not_the_position(
    w3, system, maker, traders, accounts, make_liquidator, advance, engine_client, caplog
):
    trader, bot = traders[2], make_liquidator(subaccount=1)
    system.fund(maker, 1_000_000 * USDC)
    system.fund(accounts[bot.sender.address], 500_000 * USDC, subaccount=1)
    system.fund(trader, 10_000 * USDC)
    position = int(10_000 * 11.0 / BTC * WAD)  # 11x: unhealthy after -7.5%, not underwater
    system.trade(MARKET_BTC, maker, trader, position, BTC)
    advance(60)
    system.set_price(MARKET_BTC, BTC * 0.925)
    start = latest_block(w3).number + 1

    bot.tick(latest_block(w3))

    (event,) = [e for e in engine_client.events("Liquidation", start) if e["owner"] == trader]
    closed = abs(event["size"])
    assert 0 < closed < position  # the partial rule closed part of it
    assert (
        f"liquidated {closed / WAD:.6f} of {position / WAD:.6f} in market 1"
        f" (position now {(position - closed) / WAD:.6f})" in caplog.text
    )


def test_resolve__rival_first_is_not_an_error(w3, engine_client, underwater, system, caplog):
    trader, bot = underwater
    target = next(h for h in scan(engine_client).liquidatable if h.equity >= 0)
    system.engine.backstop(trader, 1, sender=system.owner)  # a rival deals with the other one
    rival = system.owner
    system.fund(rival, 500_000 * USDC, subaccount=9)
    sub = target.account.subaccount
    while system.engine.is_liquidatable(trader, sub):  # the rival deals with it first
        size, _ = system.engine.position(trader, sub, MARKET_BTC)
        if system.engine.account_health(trader, sub)[0] < 0:
            system.engine.backstop(trader, sub, sender=rival)
        else:
            system.engine.liquidate(trader, sub, MARKET_BTC, abs(size), 9, sender=rival)

    result = bot.tick(latest_block(w3))  # the bot's own scan finds nothing now
    late = LiquidatorResult(result.block, result.scan)
    bot.resolve(target, late)  # acting on the stale scan: the rival was first

    assert result.scan.liquidatable == []
    assert late.rivals == 1 and late.failures == 0 and late.liquidations == 0
    assert "already handled" in caplog.text


def test_tick__throttles_account_that_keeps_failing(w3, engine_client, underwater, system, caplog):
    _, funded_bot = underwater
    broke = Liquidator(
        engine_client,
        funded_bot.sender,
        LiquidatorConfig(liquidator_subaccount=77, throttle_after=2, throttle_blocks=5),
    )  # subaccount 77 has no collateral: every takeover fails its initial margin check
    block = latest_block(w3)

    first = broke.tick(block)  # backstops the underwater one; the takeover fails
    second = broke.tick(block)  # fails again: throttled
    third = broke.tick(block)  # skipped

    stuck = next(h.account for h in scan(engine_client).liquidatable)
    assert (first.backstops, first.failures) == (1, 1)
    assert (second.backstops, second.failures) == (0, 1)
    assert (third.failures, third.throttled) == (0, [stuck])
    assert "throttled for 5 blocks" in caplog.text
    assert "engine: liquidator below initial margin" in caplog.text


def test_tick__dry_run_sends_nothing(w3, engine_client, underwater, caplog):
    dry = Liquidator(engine_client, None, LiquidatorConfig(liquidator_subaccount=1))

    result = dry.tick(latest_block(w3))

    assert len(scan(engine_client).liquidatable) == 2
    assert result.failures == 0
    assert "dry run: would send" in caplog.text


def test_status_command__shows_markets_and_liquidatable_count(
    w3, system, underwater, rpc_url, tmp_path
):
    from click.testing import CliRunner

    from offchain.cli_ops import status_command

    config = tmp_path / "ops.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
        f"engine: '{system.engine.address}'\n"
        "markets:\n"
        f"  - {{id: 1, name: BTC, feed: '{system.feeds[1].address}'}}\n"
        f"  - {{id: 2, name: ETH, feed: '{system.feeds[2].address}'}}\n"
    )

    result = CliRunner().invoke(status_command, ["--config", str(config)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    btc = next(line for line in lines if line.startswith("1 (BTC)"))
    assert btc.split()[2:5] == ["4.0000", "0.0000", "yes"]  # stale multiplier, no update yet
    assert "subaccounts with positions: 4; liquidatable: 2" in result.output


def test_metrics__health_fails_until_a_tick_then_passes(w3, underwater):
    import requests

    from offchain.bots.metrics import serve
    from tests.integration.conftest import free_port

    _, bot = underwater
    port = free_port()
    server = serve(bot.metrics, port)
    try:
        before = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        bot.tick(latest_block(w3))
        bot.metrics.tick_done()
        after = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()

    assert before.status_code == 503 and after.status_code == 200
    assert 'dmm_liquidations_total{kind="backstop"}' in metrics
    assert "dmm_last_tick_age_seconds" in metrics


def test_liquidator_command__one_tick_from_config_clears_book(
    w3, system, underwater, rpc_url, liquidator_key, engine_client, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from offchain.cli_ops import liquidator_command

    config = tmp_path / "liquidator.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nengine: '{system.engine.address}'\n"
        "liquidator: {subaccount: 1}\nloop: {max_ticks: 1, poll_interval: 0.05}\n"
    )
    monkeypatch.setenv("DMM_LIQUIDATOR_KEY", liquidator_key.key.hex())

    result = CliRunner().invoke(liquidator_command, ["--config", str(config)])

    assert result.exit_code == 0, result.output
    assert scan(engine_client).liquidatable == []
