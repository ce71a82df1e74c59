"""Pre-flight on anvil: a bot whose config does not match the chain refuses to start, in one
line (exit code 2), having sent nothing; ``dmm status --json``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from click.testing import CliRunner
from eth_account import Account

from offchain.cli import main
from offchain.devnet.system import USDC
from offchain.protocol.chain import latest_block
from tests.integration.conftest import HOUR, MARKET_BTC


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bots.yaml"
    path.write_text(text)
    return path


def run(*args: str):
    result = CliRunner(mix_stderr=False).invoke(main, list(args))
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    return result, (errors[0] if len(errors) == 1 else result.stderr)


def history(tmp_path: Path, end: int, price: float, hours: int = 200) -> Path:
    path = tmp_path / "btc.csv"
    rows = [
        f"{end - HOUR * (hours - 1 - i)},{price * (1 + 0.003 * (-1) ** i)}" for i in range(hours)
    ]
    path.write_text("unix,close\n" + "\n".join(rows) + "\n")
    return path


def test_keeper__config_that_does_not_match_the_chain_is_refused(
    w3, system, rpc_url, keeper_key, tmp_path, monkeypatch
):
    btc = system.feeds[MARKET_BTC].address
    reg, eng = system.registry.address, system.engine.address
    stranger = Account.from_key(b"\x66" * 32)
    monkeypatch.setenv("DMM_KEEPER_KEY", stranger.key.hex())
    cases = [
        (
            f"registry: '{reg}'\nmarkets: [{{id: 7, feed: '{btc}'}}]\n",
            ["--dry-run"],
            f"markets[0].id: market 7 is not configured in the registry at {reg}",
        ),
        (
            f"registry: '{eng}'\nmarkets: [{{id: 1, feed: '{btc}'}}]\n",
            ["--dry-run"],
            f"registry: {eng} is not a risk registry (registry.eip712Domain() at {eng}",
        ),
        (
            f"registry: '{keeper_key.address}'\nmarkets: [{{id: 1, feed: '{btc}'}}]\n",
            [],
            f"registry: no contract at {keeper_key.address} on chain",
        ),
        (
            f"registry: '{reg}'\nmarkets: [{{id: 1, feed: '{eng}'}}]\n",
            [],
            f"markets[0].feed: feed.decimals() at {eng}",
        ),
        (
            f"registry: '{reg}'\nmarkets: [{{id: 1, feed: '{btc}'}}]\n",
            [],
            f"the key {stranger.address} is not an authorised keeper of the registry {reg}",
        ),
    ]
    for body, extra, message in cases:
        config = write(tmp_path, f"rpc: {rpc_url}\n{body}loop: {{max_ticks: 1}}\n")
        result, line = run("keeper", "--config", str(config), *extra)
        assert result.exit_code == 2, (body, result.stderr)
        assert message in line, (message, line)
    assert w3.eth.get_transaction_count(stranger.address) == 0
    assert system.registry.market_state(MARKET_BTC).updated_at == 0


def test_keeper__history_far_from_the_feed_refused_with_figures_or_warned(
    w3, system, rpc_url, keeper_key, tmp_path, monkeypatch
):
    monkeypatch.setenv("DMM_KEEPER_KEY", keeper_key.key.hex())
    now = latest_block(w3).timestamp
    btc = system.feeds[MARKET_BTC].address
    old = history(tmp_path, now - 5 * 365 * 86_400, 60_000.0)
    base = f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\nmodel: {{kind: ewma}}\n"
    base += f"markets: [{{id: 1, name: BTC, feed: '{btc}', history: '{old}'}}]\n"

    result, line = run("keeper", "--config", str(write(tmp_path, base)))
    assert result.exit_code == 2
    assert "markets[0].history: the warm-up history ends" in line
    assert "5.0 years before the feed's last answer" in line and "allowed: 3.0 h" in line

    cheap = history(tmp_path, now - HOUR, 6_000.0)  # recent, but a tenth of the feed's price
    text = base.replace(str(old), str(cheap))
    result, line = run("keeper", "--config", str(write(tmp_path, text)))
    assert result.exit_code == 2
    assert "ends at 5,982.00, the feed answers 60,000.00 (+903.0%; allowed 20%)" in line

    warn = text + "keeper: {history_check: warn}\nloop: {max_ticks: 1, poll_interval: 0.05}\n"
    result, _ = run("keeper", "--config", str(write(tmp_path, warn)), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "WARNING dmm.preflight: pre-flight:" in result.stderr
    assert "INFO    dmm: keeper: 1 market(s)" in result.stderr  # INFO logs by default


def test_liquidator__unfunded_subaccount_or_foreign_engine_refused(
    w3, system, rpc_url, liquidator_key, accounts, tmp_path, monkeypatch
):
    monkeypatch.setenv("DMM_LIQUIDATOR_KEY", liquidator_key.key.hex())
    body = f"rpc: {rpc_url}\nengine: '{system.engine.address}'\nloop: {{max_ticks: 1}}\n"
    result, line = run("liquidator", "--config", str(write(tmp_path, body)))
    assert result.exit_code == 2
    assert f"liquidator.subaccount: {liquidator_key.address}/1 holds no collateral" in line

    assert w3.eth.get_transaction_count(liquidator_key.address) == 0

    other = f"registry: '{system.feeds[MARKET_BTC].address}'\n"
    system.fund(accounts[liquidator_key.address], 1_000 * USDC, subaccount=1)
    nonce = w3.eth.get_transaction_count(liquidator_key.address)
    result, line = run("liquidator", "--config", str(write(tmp_path, body + other)))
    assert result.exit_code == 2
    assert f"uses registry {system.registry.address}, the config names" in line
    assert w3.eth.get_transaction_count(liquidator_key.address) == nonce


def test_status__json_to_stdout(system, rpc_url, tmp_path):
    feeds = system.feeds
    config = write(
        tmp_path,
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
        f"engine: '{system.engine.address}'\nmarkets:\n"
        f"  - {{id: 1, name: BTC, feed: '{feeds[1].address}'}}\n"
        f"  - {{id: 7, name: SOL, feed: '{feeds[2].address}'}}\n",
    )
    result, _ = run("status", "--config", str(config), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    btc, sol = doc["markets"]
    assert btc["multiplier"] == 4.0 and btc["stale"] is True and btc["price"] == 60_000.0
    assert sol == {"id": 7, "name": "SOL", "configured": False}
    assert doc["engine"]["liquidatable"] == 0 and doc["engine"]["bad_debt_usd"] == 0.0


def test_keeper__metrics_port_in_use_is_a_config_error(
    system, rpc_url, keeper_key, tmp_path, monkeypatch
):
    monkeypatch.setenv("DMM_KEEPER_KEY", keeper_key.key.hex())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        body = (
            f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\nmodel: {{kind: ewma}}\n"
            f"markets: [{{id: 1, feed: '{system.feeds[MARKET_BTC].address}'}}]\n"
            f"keeper: {{metrics_port: {port}}}\nloop: {{max_ticks: 1}}\n"
        )
        result, line = run("keeper", "--config", str(write(tmp_path, body)), "--dry-run")
    assert result.exit_code == 2
    assert f"keeper.metrics_port: cannot listen on {port} (Address already in use)" in line
