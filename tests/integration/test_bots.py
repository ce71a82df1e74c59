"""The Silverback keeper module as a real process (``silverback run``) against the devnet."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from offchain.protocol.chain import latest_block
from tests.integration.conftest import MARKET_BTC

ROOT = Path(__file__).resolve().parents[2]


def test_keeper_bot__silverback_run_pushes_update_on_shock(
    w3, system, rpc_url, keeper_key, registry_client, advance, tmp_path
):
    config = tmp_path / "bot.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
        f"markets:\n  - {{id: 1, name: BTC, feed: '{system.feeds[MARKET_BTC].address}'}}\n"
        "model: {kind: ewma}\n"  # answers from the first readings: no warm-up history needed
    )
    env = {
        **os.environ,
        "DMM_CONFIG": str(config),
        "DMM_KEEPER_KEY": keeper_key.key.hex(),
    }
    silverback = Path(sys.executable).parent / "silverback"
    log_path = tmp_path / "bot.log"
    with open(log_path, "w") as log_file:
        bot = subprocess.Popen(
            [
                str(silverback),
                "run",
                "offchain.bots.keeper_bot:bot",
                "--network",
                f"ethereum:local:{rpc_url}",
            ],
            cwd=tmp_path,  # keeps Silverback's session folder out of the repository
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "Startup complete" not in log_path.read_text():
                assert bot.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the bot did not start"
                time.sleep(0.2)
            start = latest_block(w3).number
            price = 60_000.0
            while not registry_client.risk_updated_events(start + 1):
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                advance(60)
                price *= 0.95
                system.set_price(MARKET_BTC, price)  # each reading is a new block
                time.sleep(1.0)
        finally:
            bot.terminate()
            bot.wait(timeout=20)

    events = registry_client.risk_updated_events(start + 1)
    assert [e["market_id"] for e in events][:1] == [MARKET_BTC]
    output = log_path.read_text()
    assert "market 1 (BTC): update: multiplier" in output
    assert "pushed 1 update(s) [1]" in output
