"""Both Silverback modules as real processes (``silverback run``) against the devnet: the keeper
raises the multiplier on a shock (from a known quiet level, by what the guardrails allow), the
liquidation bot liquidates an account a price move made unhealthy. Waits are on chain state and
the bots' tick counters, never on a sleep."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS, USDC
from offchain.protocol.chain import latest_block
from tests.integration.conftest import HOUR, MARKET_BTC, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
BTC = 60_000.0


def ticks(port: int) -> float:
    """The bot's completed ticks, from its /metrics (0 until it answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith("dmm_ticks_total"))


@contextmanager
def silverback(module: str, rpc_url: str, env: dict[str, str], log_path: Path) -> Iterator:
    """``silverback run MODULE`` on the devnet until the block ends; waits for its start-up."""
    binary = Path(sys.executable).parent / "silverback"
    with open(log_path, "w") as log_file:
        bot = subprocess.Popen(
            [str(binary), "run", module, "--network", f"ethereum:local:{rpc_url}"],
            cwd=log_path.parent,  # keeps Silverback's session folder out of the repository
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:

            def started() -> bool:
                assert bot.poll() is None, log_path.read_text()[-3000:]
                return "Startup complete" in log_path.read_text()

            wait_until(started, timeout=90, interval=0.2, what=f"{module} start-up")
            yield bot
        finally:
            bot.terminate()
            bot.wait(timeout=20)


def quiet_history(path: Path, end: int, price: float, hours: int = 48) -> Path:
    """Hourly closes wiggling 0.2% around ``price``, the last an hour before ``end``."""
    rows = [
        f"{end - HOUR * (hours - i)},{price * (1 + 0.002 * (-1) ** i):.2f}" for i in range(hours)
    ]
    path.write_text("unix,close\n" + "\n".join(rows) + "\n")
    return path


def test_keeper_bot__silverback_run_raises_the_multiplier_on_a_shock(
    w3, system, rpc_url, keeper_key, registry_client, advance, tmp_path
):
    feed = system.feeds[MARKET_BTC]
    history = quiet_history(tmp_path / "btc.csv", int(feed.latestRoundData()[3]), BTC)
    port = free_port()
    config = tmp_path / "bot.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
        f"markets:\n  - {{id: 1, name: BTC, feed: '{feed.address}', history: '{history}'}}\n"
        "model: {kind: ewma}\n"
        f"keeper: {{metrics_port: {port}}}\n"
    )
    env = {"DMM_CONFIG": str(config), "DMM_KEEPER_KEY": keeper_key.key.hex()}
    start = latest_block(w3).number + 1

    def updates() -> list[dict]:
        return registry_client.risk_updated_events(start)

    with silverback("offchain.bots.keeper_bot:bot", rpc_url, env, tmp_path / "bot.log"):
        w3.provider.make_request("evm_mine", [])  # a block to tick on: the quiet first update
        [quiet] = wait_until(updates, timeout=60, what="the keeper's first update")
        done = ticks(port)
        advance(60)
        system.set_price(MARKET_BTC, BTC * 0.8)  # -20% in one reading
        shock = wait_until(lambda: updates()[1:], timeout=60, what="the update after the shock")
        wait_until(lambda: ticks(port) > done, what="the tick that pushed it counted")

    output = (tmp_path / "bot.log").read_text()
    # The quiet history prices at the floor; the shock lifts it by all the guardrails allow.
    assert quiet["new_multiplier"] == DEVNET_GUARDRAILS.min_multiplier
    [raised] = shock
    assert raised["old_multiplier"] == quiet["new_multiplier"]
    step = quiet["new_multiplier"] * (WAD + DEVNET_GUARDRAILS.max_increase) // WAD
    assert quiet["new_multiplier"] < raised["new_multiplier"] <= step
    assert "market 1 (BTC): update: multiplier" in output and "clamped from" in output
    assert output.count("pushed 1 update(s) [1]") == 2  # each move once, no duplicate
    assert "Traceback" not in output


def test_liquidator_bot__silverback_run_liquidates_after_a_price_move(
    w3, system, rpc_url, liquidator_key, maker, traders, accounts, engine_client, fund_eth,
    advance, tmp_path,
):  # fmt: skip
    trader = traders[2]
    fund_eth(liquidator_key.address)
    system.fund(maker, 1_000_000 * USDC)
    system.fund(accounts[liquidator_key.address], 500_000 * USDC, subaccount=1)
    system.fund(trader, 10_000 * USDC)
    system.trade(MARKET_BTC, maker, trader, int(10_000 * 11.0 / BTC * WAD), BTC)
    port = free_port()
    config = tmp_path / "bot.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
        f"engine: '{system.engine.address}'\n"
        f"liquidator: {{subaccount: 1, metrics_port: {port}}}\n"
    )
    env = {"DMM_CONFIG": str(config), "DMM_LIQUIDATOR_KEY": liquidator_key.key.hex()}

    def liquidations() -> list[dict]:
        return [
            e
            for e in engine_client.events("Liquidation", start)
            if e["liquidator"] == liquidator_key.address
        ]

    with silverback("offchain.bots.liquidator_bot:bot", rpc_url, env, tmp_path / "bot.log"):
        w3.provider.make_request("evm_mine", [])
        wait_until(lambda: ticks(port) >= 1, what="a first scan")
        assert not system.engine.is_liquidatable(trader, 0)  # healthy: nothing to do yet
        start = latest_block(w3).number + 1
        advance(60)
        system.set_price(MARKET_BTC, BTC * 0.925)  # the 11x long falls below maintenance
        assert system.engine.is_liquidatable(trader, 0)
        done = wait_until(liquidations, timeout=60, what="the bot's liquidation")
        wait_until(lambda: not system.engine.is_liquidatable(trader, 0), what="healthy again")

    output = (tmp_path / "bot.log").read_text()
    assert done[0]["owner"] == trader.address and done[0]["subaccount"] == 0
    assert 0 < abs(done[0]["size"]) <= int(10_000 * 11.0 / BTC * WAD)
    size, _ = engine_client.position(trader.address, 0, MARKET_BTC)
    assert size == int(10_000 * 11.0 / BTC * WAD) - sum(abs(e["size"]) for e in liquidations())
    assert f"account {trader.address}/0:" in output and "liquidated" in output
    assert "Traceback" not in output
