"""``dmm devnet`` as an operator runs it: a real process that starts anvil with a block time,
deploys from the devnet file, writes the bots' config, and (``--crash``) runs both bots through
a crash until each has acted on the price move; ``--detach`` / ``--stop`` leave and stop a node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from offchain.bots.bot_config import load_config
from offchain.cli import main
from offchain.devnet.node import alive, port_free
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def devnet_file(tmp_path: Path, **crash) -> tuple[Path, dict]:
    doc = yaml.safe_load((ROOT / "deploy" / "devnet.yaml").read_text())
    doc["node"]["port"] = free_port()
    doc["bots"]["keeper_metrics_port"] = free_port()
    doc["bots"]["liquidator_metrics_port"] = free_port()
    doc["bots"]["dashboard_port"] = free_port()
    doc["crash"].update(crash)
    path = tmp_path / "devnet.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, doc


def dmm(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_devnet__crash_until_both_bots_acted(tmp_path):
    config, doc = devnet_file(tmp_path, calm_steps=1, crash_steps=4, rebound_steps=0, interval=0)
    out = tmp_path / "out"

    done = dmm(
        "devnet",
        "--config",
        str(config),
        "--out",
        str(out),
        "--crash",
        "--once",
        "--timeout",
        "120",
        timeout=240,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert f"devnet up on http://127.0.0.1:{doc['node']['port']} (chain 31337)" in done.stdout
    assert f"silverback --network ethereum:local:http://127.0.0.1:{doc['node']['port']}" in (
        done.stdout
    )
    assert "keeper acted:     market " in done.stdout
    assert "liquidator acted: " in done.stdout
    assert "both bots acted on the price move" in done.stdout
    cfg = load_config(out / "bots.yaml")  # what it wrote passes the bots' own checks
    assert cfg.metrics_port("keeper") != cfg.metrics_port("liquidator")
    assert cfg.dashboard_config().port == doc["bots"]["dashboard_port"]
    assert cfg.keeper_config().markets[0].name == "BTC"
    record = json.loads((out / "deployment.json").read_text())
    assert record["complete"] and record["steps"]["engine"]["address"] == cfg.file.engine
    keeper_log = (out / "keeper.log").read_text()
    assert "warmed up with 721 of 721 prices" in keeper_log and "pushed" in keeper_log
    assert "liquidated" in (out / "liquidator.log").read_text()
    assert port_free("127.0.0.1", doc["node"]["port"])  # --once stopped the node
    assert port_free("127.0.0.1", doc["bots"]["keeper_metrics_port"])  # and the bots


def test_devnet__detach_status_and_stop(tmp_path):
    config, doc = devnet_file(tmp_path)
    out = tmp_path / "out"

    done = dmm("devnet", "--config", str(config), "--out", str(out), "--detach", timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    pid = json.loads((out / "anvil.pid").read_text())["pid"]
    try:
        assert alive(pid)
        status = CliRunner(mix_stderr=False).invoke(
            main, ["status", "--config", str(out / "bots.yaml"), "--json", "-"]
        )
        assert status.exit_code == 0, status.stderr
        markets = json.loads(status.stdout)["markets"]
        assert [(m["name"], m["price"], m["stale"]) for m in markets] == [
            ("BTC", 60_000.0, True),
            ("ETH", 3_000.0, True),
        ]
        again = dmm(
            "devnet", "--config", str(config), "--out", str(tmp_path / "o2"), "--detach", timeout=60
        )
        assert again.returncode == 2  # the port is taken: one line, nothing started
        assert again.stderr.splitlines()[-1].startswith(f"Error: port {doc['node']['port']}")
    finally:
        stopped = dmm("devnet", "--out", str(out), "--stop", timeout=60)
    assert stopped.returncode == 0 and f"(pid {pid}) stopped" in stopped.stdout
    assert not alive(pid) and not (out / "anvil.pid").exists()
