"""The devnet file and the command's options, without a chain: mistakes are one line, exit 2."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from offchain.cli import main
from offchain.devnet.devnet_config import DevnetConfigError, load_devnet
from offchain.devnet.launch import DEFAULT_FILE, devnet_keys, warm_up_history

ADDRESSES = [k.address for k in devnet_keys()]


@pytest.fixture
def doc() -> dict:
    return yaml.safe_load(DEFAULT_FILE.read_text())


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "devnet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_devnet_keys__the_mnemonic_anvil_funds():
    assert ADDRESSES[0] == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert ADDRESSES[1] == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_load_devnet__shipped_file_passes():
    devnet = load_devnet(DEFAULT_FILE, ADDRESSES)
    assert devnet.chain_id == 31337
    assert [m.name for m in devnet.spec.markets] == ["BTC", "ETH"]
    assert devnet.file.bots.keeper_metrics_port != devnet.file.bots.liquidator_metrics_port


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["bots"].__setitem__("liquidator_metrics_port", 9101), "must differ"),
        (
            lambda d: d["bots"].__setitem__("dashboard_port", 9102),
            "bots.dashboard_port: 9102 is also a metrics port",
        ),
        (
            lambda d: d["node"].__setitem__("port", 9103),
            "node.port: 9103 is also a metrics or dashboard port",
        ),
        (lambda d: d["accounts"].__setitem__("keeper", 5), "the keeper account (0x9965"),
        (lambda d: d["positions"][0].__setitem__("market", 9), "positions[0].market: 9 is not"),
        (lambda d: d["positions"][0].__setitem__("trader", 3), "is the maker or the liquidator"),
        (lambda d: d["positions"][0].__setitem__("side", "up"), "positions[0].side: Input should"),
        (lambda d: d["positions"][0].__setitem__("isolated", "yes"), "positions[0].isolated:"),
        (lambda d: d["crash"].__setitem__("crash_pct", 2), "crash.crash_pct: Input should be less"),
        (lambda d: d["node"].__setitem__("blocktime", 1), "node.blocktime: unknown key; did you"),
        (lambda d: d["system"].__setitem__("chain_id", "31337"), "system: chain_id: Input should"),
        (lambda d: d["system"]["markets"][0]["engine"].pop("mock_feed"), "exactly one of 'feed'"),
        (lambda d: d["accounts"].__setitem__("owner", 12), "accounts.owner: Input should be less"),
    ],
)
def test_load_devnet__mistakes_one_line(tmp_path, doc, edit, message):
    data = copy.deepcopy(doc)
    edit(data)
    with pytest.raises(DevnetConfigError) as excinfo:
        load_devnet(write(tmp_path, data), ADDRESSES)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_warm_up_history__hourly_ending_at_the_price():
    rows = warm_up_history(60_000.0, end=1_800_000_000, hours=720, vol=0.004, seed=7)
    times = np.array([t for t, _ in rows])
    prices = np.array([p for _, p in rows])
    assert len(rows) == 720 and times[-1] == 1_800_000_000
    assert set(np.diff(times)) == {3600}
    assert prices[-1] == pytest.approx(60_000.0)
    assert np.std(np.diff(np.log(prices))) == pytest.approx(0.004, rel=0.1)


def test_devnet_command__usage_errors_exit_2(tmp_path, doc):
    runner = CliRunner(mix_stderr=False)
    result = runner.invoke(main, ["devnet", "--once"])
    assert result.exit_code == 2 and "--once needs --crash" in result.stderr
    result = runner.invoke(main, ["devnet", "--detach", "--bots"])
    assert result.exit_code == 2 and "--detach starts the node only" in result.stderr
    bad = copy.deepcopy(doc)
    bad["funding"]["liquidator_usd"] = float("nan")
    result = runner.invoke(main, ["devnet", "--config", str(write(tmp_path, bad))])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].endswith(
        "funding.liquidator_usd: nan is not a finite number"
    )


def test_devnet_command__stop_without_a_detached_node(tmp_path):
    result = CliRunner(mix_stderr=False).invoke(main, ["devnet", "--stop", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "no detached devnet" in result.stdout
