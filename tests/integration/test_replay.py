"""``dmm replay`` on the anvil devnet: what it pushes into the mock feeds (the CSV's last N
prices as moves from each feed's price, ``--absolute`` as they are, the seeded crash), the clock
it moves, its exit codes; and what it refuses before sending anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from offchain.cli import main
from offchain.devnet.replay import CrashScenario, crash_scenario
from offchain.protocol.chain import latest_block
from tests.integration.conftest import MARKET_BTC, MARKET_ETH

FEED_DECIMALS = 8


@pytest.fixture
def replay_env(system, rpc_url, tmp_path, monkeypatch):
    """A bot file naming both devnet feeds; the owner (who may set mock answers) relays."""
    monkeypatch.setenv("DMM_REPLAY_KEY", system.owner.private_key)
    config = tmp_path / "bots.yaml"
    config.write_text(
        f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\nmarkets:\n"
        f"  - {{id: 1, name: BTC, feed: '{system.feeds[MARKET_BTC].address}'}}\n"
        f"  - {{id: 2, name: ETH, feed: '{system.feeds[MARKET_ETH].address}'}}\n"
    )
    return config


def answer(system, market_id: int) -> int:
    return int(system.feeds[market_id].latestRoundData()[1])


def replay(*args: str):
    return CliRunner(mix_stderr=False).invoke(main, ["replay", "--interval", "0", *args])


def test_replay__csv_last_n_as_moves_from_each_feed(system, replay_env, tmp_path, w3):
    csv = tmp_path / "prices.csv"
    closes = [100.0, 90.0, 80.0, 88.0, 110.0]  # the last 3: 80 -> 88 -> 110
    csv.write_text(
        "unix,close\n" + "".join(f"{1_600_000_000 + 3600 * i},{p}\n" for i, p in enumerate(closes))
    )
    btc, eth = answer(system, MARKET_BTC), answer(system, MARKET_ETH)
    before = latest_block(w3)

    result = replay("--config", str(replay_env), "--csv", str(csv), "--last", "3",
                    "--step-seconds", "3600")  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "replayed 3 price(s) into 2 feed(s)\n"
    # each feed moved by the CSV's last three, relative to its own price: x 110/80 in the end
    assert answer(system, MARKET_BTC) == round(btc / 10**FEED_DECIMALS * 110 / 80 * 10**8)
    assert answer(system, MARKET_ETH) == round(eth / 10**FEED_DECIMALS * 110 / 80 * 10**8)
    assert latest_block(w3).timestamp - before.timestamp >= 3 * 3600  # an hour per step


def test_replay__absolute_pushes_the_csv_prices_as_they_are(system, replay_env, tmp_path):
    csv = tmp_path / "prices.csv"
    csv.write_text("unix,close\n1600000000,61000\n1600003600,59000.5\n")

    result = replay("--config", str(replay_env), "--csv", str(csv), "--absolute")

    assert result.exit_code == 0, result.stderr
    assert answer(system, MARKET_BTC) == answer(system, MARKET_ETH) == 59_000_50_000_000


def test_replay__seeded_crash_of_the_given_depth(system, replay_env):
    btc = answer(system, MARKET_BTC)

    result = replay("--config", str(replay_env), "--crash-pct", "0.4", "--seed", "3",
                    "--feed", system.feeds[MARKET_BTC].address)  # fmt: skip

    path = crash_scenario(CrashScenario(start_price=1.0, crash_pct=0.4, seed=3))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"replayed {len(path)} price(s) into 1 feed(s)\n"
    assert answer(system, MARKET_BTC) == round(btc / 10**8 * path[-1] * 10**8)
    assert min(path) < 0.61 * max(path[:5])  # the crash was as deep as asked


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--last", "0"], 2, "'--last': 0 is not in the range x>=1"),
        (["--crash-pct", "2"], 2, "'--crash-pct': 2 must be below 1"),
        (["--crash-pct", "0"], 2, "'--crash-pct': 0 must be above 0"),
        (["--csv", "missing.csv"], 2, "missing.csv"),
        (["--feed", "0x" + "00" * 19 + "01"], 1, "0x0000000000000000000000000000000000000001"),
    ],
)
def test_replay__refusals_send_nothing(system, replay_env, w3, args, code, fragment):
    nonce = w3.eth.get_transaction_count(system.owner.address)
    prices = (answer(system, MARKET_BTC), answer(system, MARKET_ETH))

    result = replay("--config", str(replay_env), *args)

    assert result.exit_code == code, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("Error: ") and fragment in line and "Traceback" not in result.stderr
    assert w3.eth.get_transaction_count(system.owner.address) == nonce
    assert (answer(system, MARKET_BTC), answer(system, MARKET_ETH)) == prices
