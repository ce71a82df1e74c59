"""The keeper on anvil: one batch per tick, bad price data refused, duplicates dropped."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS
from offchain.protocol.chain import FeedReading, latest_block
from tests.integration.conftest import HOUR, MARKET_BTC, MARKET_ETH, warm_up


def risk_events(registry_client, since: int) -> list[dict]:
    return registry_client.risk_updated_events(since)


@pytest.fixture
def primed(w3, system, make_keeper, registry_client):
    """A keeper that has pushed its first batch (both markets at the quiet multiplier)."""
    keeper = make_keeper()
    block = latest_block(w3)
    warm_up(keeper, block.timestamp, {MARKET_BTC: 60_000.0, MARKET_ETH: 3_000.0})
    first = keeper.tick(latest_block(w3))
    assert first.sent is not None
    return keeper


def test_tick__first_tick_pushes_one_batch_for_all_markets(
    w3, system, make_keeper, registry_client
):
    keeper = make_keeper()
    start = latest_block(w3)
    warm_up(keeper, start.timestamp, {MARKET_BTC: 60_000.0, MARKET_ETH: 3_000.0})

    result = keeper.tick(latest_block(w3))

    assert result.sent is not None
    events = risk_events(registry_client, start.number + 1)
    assert sorted(e["market_id"] for e in events) == [MARKET_BTC, MARKET_ETH]
    assert {e["block_number"] for e in events} == {result.sent.block_number}
    assert registry_client.multiplier(MARKET_BTC) == result.updates[0].multiplier


def test_tick__shock_raises_multiplier_within_guardrails(
    w3, system, primed, registry_client, advance
):
    before = registry_client.market_state(MARKET_BTC).target
    advance()
    system.set_price(MARKET_BTC, 48_000.0)  # -20% in one reading

    result = primed.tick(latest_block(w3))

    after = registry_client.market_state(MARKET_BTC).target
    assert result.sent is not None
    # the model's rise (its speed limit: at most 3 points of notional a day) within the
    # max_increase guardrail, clamped off-chain
    assert before < after <= before * (WAD + DEVNET_GUARDRAILS.max_increase) // WAD
    assert [u.market_id for u in result.updates] == [MARKET_BTC]  # ETH inside hysteresis


def test_tick__quiet_market_skipped_inside_hysteresis(
    w3, system, primed, registry_client, caplog, advance
):
    start = latest_block(w3).number
    advance()
    system.set_price(MARKET_BTC, 60_010.0)
    caplog.set_level("DEBUG", logger="dmm")

    result = primed.tick(latest_block(w3))

    assert result.updates == [] and result.sent is None
    assert risk_events(registry_client, start + 1) == []
    assert "inside hysteresis" in caplog.text


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("zero", "price is zero or negative (0.0)"),
        ("negative", "price is zero or negative (-1.0)"),
        ("spike", "price moved x10 in one reading"),
        ("stale", "feed is stale: last update"),
        ("nan", "price is not a finite number (nan)"),
    ],
)
def test_tick__bad_price_data_signs_nothing_for_market(
    w3, system, primed, registry_client, caplog, condition, expected, advance
):
    advance()
    start = latest_block(w3)
    btc = system.feeds[MARKET_BTC]
    if condition == "zero":
        btc.set_answer(0, sender=system.owner)
    elif condition == "negative":
        btc.set_answer(-(10**8), sender=system.owner)
    elif condition == "spike":
        system.set_price(MARKET_BTC, 600_000.0)
    elif condition == "stale":
        btc.set_round(system.feed_answer(45_000.0), start.timestamp - 2 * HOUR, sender=system.owner)
    elif condition == "nan":
        real = primed.feeds.latest

        def nan_for_btc(feed: str) -> FeedReading | object:
            reading = real(feed)
            if feed == btc.address:
                return _NanReading(reading)
            return reading

        primed.feeds.latest = nan_for_btc  # type: ignore[method-assign]
    system.set_price(MARKET_ETH, 2_400.0)  # a real shock on the other market

    result = primed.tick(latest_block(w3))

    assert [u.market_id for u in result.updates] == [MARKET_ETH]
    events = risk_events(registry_client, start.number + 1)
    assert [e["market_id"] for e in events] == [MARKET_ETH]
    refused = [d for d in result.decisions if d.market_id == MARKET_BTC]
    assert refused[0].action == "refuse"
    assert f"market {MARKET_BTC} (BTC): nothing signed: bad price data: {expected}" in caplog.text


class _NanReading:
    def __init__(self, reading: FeedReading) -> None:
        self.updated_at = reading.updated_at + 1
        self.price = math.nan


def test_tick__spike_confirmed_by_second_reading_is_accepted(
    w3, system, primed, registry_client, advance
):
    advance()
    system.set_price(MARKET_BTC, 6_000.0)  # /10
    first = primed.tick(latest_block(w3))
    advance()
    system.set_price(MARKET_BTC, 6_050.0)  # a later round confirms the new level

    second = primed.tick(latest_block(w3))

    assert first.updates == []
    assert [u.market_id for u in second.updates] == [MARKET_BTC]


def test_relay__resubmitted_batch_dropped_in_simulation(
    w3, system, primed, registry_client, caplog, advance
):
    advance()
    system.set_price(MARKET_BTC, 50_000.0)
    result = primed.tick(latest_block(w3))
    assert result.sent is not None
    nonce_after_first = w3.eth.get_transaction_count(primed.sender.address)
    events_before = len(risk_events(registry_client, 0))

    again = replace(result, sent=None, dropped=None)
    primed.relay(again)

    assert again.sent is None
    assert "observed_at not after the last update" in (again.dropped or "")
    assert len(risk_events(registry_client, 0)) == events_before
    assert w3.eth.get_transaction_count(primed.sender.address) == nonce_after_first
    assert "dropped: the chain already holds it" in caplog.text


def test_tick__dry_run_signs_and_sends_nothing(w3, system, make_keeper, registry_client, caplog):
    keeper = make_keeper(dry_run=True)
    start = latest_block(w3)
    warm_up(keeper, start.timestamp, {MARKET_BTC: 60_000.0, MARKET_ETH: 3_000.0})

    result = keeper.tick(latest_block(w3))

    assert len(result.updates) == 2
    assert len(result.signatures) == 1 and len(result.signatures[0]) == 65
    assert result.sent is None
    assert risk_events(registry_client, 0) == []
    assert "dry run" in caplog.text and "would submit 2 update(s)" in caplog.text
    assert registry_client.market_state(MARKET_BTC).updated_at == 0


def test_keeper_command__dry_run_from_config_prints_signed_batch(
    w3, system, rpc_url, keeper_key, registry_client, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from offchain.cli_ops import keeper_command

    now = latest_block(w3).timestamp
    history = tmp_path / "btc.csv"
    hours = 800  # the calibrated model (the default) proposes after 721 bars
    rows = [
        f"{(now - HOUR * (hours - i)) * 1000},{60_000 * (1 + 0.004 * (-1) ** i)}"
        for i in range(hours)
    ]
    history.write_text("unix,close\n" + "\n".join(rows) + "\n")
    config = tmp_path / "keeper.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
        "markets:\n"
        f"  - {{id: 1, name: BTC, feed: '{system.feeds[1].address}', history: '{history}'}}\n"
        "loop: {max_ticks: 1, poll_interval: 0.05}\n"
    )
    monkeypatch.setenv("DMM_KEEPER_KEY", keeper_key.key.hex())

    result = CliRunner().invoke(keeper_command, ["--config", str(config), "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "dry run: block" in result.output and "would submit 1 update(s)" in result.output
    assert f"signed by {keeper_key.address}" in result.output
    # The shipped model (the default) prices alternating 0.4% hourly moves at about its 1% floor
    # (2x a 0.5% first tier).
    proposed = float(re.search(r"market 1: multiplier (\d+\.\d+)", result.output).group(1))
    assert 2.0 <= proposed < 3.0
    assert registry_client.market_state(MARKET_BTC).updated_at == 0


def test_relay__paused_registry_relays_nothing_and_is_not_a_failure(
    w3, system, primed, registry_client, advance, caplog
):
    system.registry.pause(sender=system.owner)
    advance()
    system.set_price(MARKET_BTC, 48_000.0)
    nonce = w3.eth.get_transaction_count(primed.sender.address)

    result = primed.tick(latest_block(w3))

    assert result.updates and result.sent is None and result.dropped == "registry paused"
    assert w3.eth.get_transaction_count(primed.sender.address) == nonce
    assert "registry is paused: 1 signed update(s) not relayed" in caplog.text
