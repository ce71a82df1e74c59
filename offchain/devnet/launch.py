"""``dmm devnet``: a local devnet with the system deployed, accounts funded and the bots' config
written; optionally the bots running and a crash replayed until both have acted.

Steps (each logged):

1. read and check the devnet file (``deploy/devnet.yaml``): node, accounts, the deployment
   (``system``, checked as any deployment file), funding, demo positions;
2. start anvil on the port (mining each transaction at once), connect ape to it;
3. deploy the mocks and the system through the deployment plan (``deploy_plan``), recording
   ``deployment.json`` in the output folder;
4. fund the liquidator's subaccount, the maker and the insurance fund; open the demo positions
   against the maker; write a warm-up history per market (quiet hours ending at the feed's price);
5. switch the node to one block every ``block_time`` seconds (bots tick on blocks) and write
   ``bots.yaml`` (keeper and liquidator, separate metrics ports), ``devnet.env`` (the devnet's
   public test keys) and, with ``--detach``, ``anvil.pid``;
6. with ``--bots``: start ``dmm keeper`` and ``dmm liquidator`` as processes (logs in the folder)
   and wait until both answer ``/healthz``; with ``--crash``: replay the crash into the feeds
   and report when the keeper has raised a multiplier and the liquidator has liquidated;
7. stay up until Ctrl-C (or return at once with ``--detach``; stop after 6 with ``--once``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account

from offchain import WAD
from offchain.devnet.devnet_config import Devnet, DevnetConfigError, load_devnet
from offchain.devnet.node import (
    ROOT,
    Node,
    alive,
    start_anvil,
    stop_from_pidfile,
    write_pidfile,
)
from offchain.devnet.replay import CrashScenario, crash_scenario, replay, scaled_paths
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient, connect
from offchain.protocol.deploy_plan import ApeBackend, DeployRecord, execute, plan
from offchain.protocol.tx_sender import SenderConfig, TxSender

log = logging.getLogger("dmm.devnet")

MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_FILE = ROOT / "deploy" / "devnet.yaml"
HOUR = 3600
REPLAY_SENDER = SenderConfig(poll_interval=0.1, backoff_initial=0.1, backoff_max=1.0)


class DevnetError(RuntimeError):
    """The devnet could not be brought up, or the bots did not act in time."""


@dataclass(frozen=True)
class LaunchOptions:
    config: Path
    out: Path
    port: int | None = None
    block_time: int | None = None
    detach: bool = False
    bots: bool = False
    crash: bool = False
    once: bool = False
    timeout: float = 180.0
    started: float = 0.0


def devnet_keys(count: int = 10) -> list[Any]:
    """The devnet mnemonic's first ``count`` accounts (public keys for a devnet only)."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)
    ]


def stop_detached(out: Path) -> str:
    return stop_from_pidfile(out / "anvil.pid")


# ---------------------------------------------------------------------------------------------
# Setting up the chain (ape, while the node mines each transaction at once)


def deploy_and_fund(devnet: Devnet, node: Node, out: Path) -> dict[str, Any]:
    """Deploy, fund and open the demo positions; returns addresses and the deployment time."""
    from ape import Project, accounts, networks
    from ape.logging import logger as ape_logger

    if logging.getLogger("dmm").getEffectiveLevel() >= logging.INFO:
        ape_logger.set_level("WARNING")  # not a line per transaction: the steps are logged below
    project = Project(ROOT)  # the repository's contracts, wherever the command runs from
    f = devnet.file
    with networks.ethereum.local.use_provider(
        "foundry", provider_settings={"host": node.url}
    ) as provider:
        actors = accounts.test_accounts
        owner = actors[f.accounts.owner]
        backend = ApeBackend(project, owner, provider.web3)
        record_path = out / "deployment.json"
        record_path.unlink(missing_ok=True)  # a new node: an old record cannot be resumed
        record = DeployRecord.open(
            record_path, devnet.spec.config_hash(), backend.chain_id(), backend.deployer
        )
        steps = plan(devnet.spec)
        log.info("deploying %d steps (record %s)", len(steps), record_path)
        execute(steps, backend, record)
        log.info(
            "deployed: registry %s, engine %s", record.address("registry"), record.address("engine")
        )
        token = project.MockERC20.at(
            record.address("token") if devnet.spec.collateral is None else devnet.spec.collateral
        )
        engine = project.MarginEngine.at(record.address("engine"))
        unit = 10 ** int(token.decimals())

        def deposit(actor: Any, usd: float, subaccount: int) -> None:
            amount = round(usd * unit)
            token.mint(actor, amount, sender=actor)
            token.approve(engine, 2**256 - 1, sender=actor)
            engine.deposit(subaccount, amount, sender=actor)

        liquidator = actors[f.accounts.liquidator]
        deposit(liquidator, f.funding.liquidator_usd, f.funding.liquidator_subaccount)
        maker = actors[f.accounts.maker]
        deposit(maker, f.funding.maker_usd, 0)
        if f.funding.insurance_fund_usd > 0:
            amount = round(f.funding.insurance_fund_usd * unit)
            token.mint(owner, amount, sender=owner)
            token.approve(engine, 2**256 - 1, sender=owner)
            engine.fund_insurance(amount, sender=owner)
        markets = {m.market_id: m for m in devnet.spec.markets}
        for p in f.positions:
            trader = actors[p.trader]
            deposit(trader, p.collateral_usd, p.subaccount)
            if p.isolated:
                engine.set_isolated(p.subaccount, p.market, sender=trader)
            mock = markets[p.market].mock_feed
            assert mock is not None
            price = mock.answer / 10**mock.decimals
            size = int(p.leverage * p.collateral_usd / price * WAD)
            engine.settle_trade(
                p.market,
                maker,
                0,
                trader,
                p.subaccount,
                size if p.side == "long" else -size,
                mock.answer * 10 ** (18 - mock.decimals),
                sender=owner,
            )
            log.info(
                "position: account %d/%d %s %.4f of market %d at %s (%gx, %s USD)",
                p.trader,
                p.subaccount,
                p.side,
                size / WAD,
                p.market,
                f"{price:,.2f}",
                p.leverage,
                f"{p.collateral_usd:,.0f}",
            )
        now = int(provider.web3.eth.get_block("latest")["timestamp"])
        return {
            "registry": record.address("registry"),
            "engine": record.address("engine"),
            "feeds": {
                m.market_id: m.feed or record.address(f"feed:{m.market_id}")
                for m in devnet.spec.markets
            },
            "now": now,
        }


# ---------------------------------------------------------------------------------------------
# Files for the bots


def warm_up_history(price: float, end: int, hours: int, vol: float, seed: int) -> list[tuple]:
    """Quiet hourly closes (a random walk of ``vol`` per hour) ending at ``price`` at ``end``."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, vol, hours - 1)
    logs = np.concatenate([[0.0], np.cumsum(steps)])
    closes = price * np.exp(logs - logs[-1])
    return [(end - HOUR * (hours - 1 - i), float(c)) for i, c in enumerate(closes)]


def write_files(devnet: Devnet, deployed: dict[str, Any], node: Node, out: Path) -> Path:
    """``history/*.csv``, ``bots.yaml`` and ``devnet.env`` in ``out``; returns the config path."""
    f = devnet.file
    (out / "history").mkdir(parents=True, exist_ok=True)
    market_lines = []
    for i, m in enumerate(devnet.spec.markets):
        mock = m.mock_feed
        price = mock.answer / 10**mock.decimals if mock else None
        history = ""
        if price is not None:
            name = f"{(m.name or str(m.market_id)).lower().replace('/', '-')}.csv"
            rows = warm_up_history(
                price,
                deployed["now"] - HOUR,
                f.history.hours,
                f.history.hourly_vol,
                f.history.seed + i,
            )
            (out / "history" / name).write_text(
                "unix,close\n" + "".join(f"{t},{p:.6f}\n" for t, p in rows)
            )
            history = f", history: history/{name}"
        market_lines.append(
            f"  - {{id: {m.market_id}, name: {m.name or m.market_id},"
            f" feed: '{deployed['feeds'][m.market_id]}'{history}}}"
        )
    config = out / "bots.yaml"
    config.write_text(
        "# Written by `dmm devnet` for its devnet (see offchain/bots/keeper.example.yaml).\n"
        f"#   set -a; . {out / 'devnet.env'}; set +a\n"
        f"#   dmm keeper --config {config}\n"
        f"#   dmm liquidator --config {config}\n"
        f"#   dmm status --config {config}\n"
        f"#   dmm dashboard --config {config}      # http://127.0.0.1:{f.bots.dashboard_port}/\n"
        f"#   DMM_CONFIG={config} silverback run offchain.bots.keeper_bot:bot"
        f" --network ethereum:local:{node.url}\n"
        f"rpc: {node.url}\n"
        f"registry: '{deployed['registry']}'\n"
        f"engine: '{deployed['engine']}'\n"
        "markets:  # history: relative to this file\n" + "\n".join(market_lines) + "\n"
        "keeper:\n"
        f"  metrics_port: {f.bots.keeper_metrics_port}\n"
        "  max_feed_age: 7200      # replayed steps move the clock an hour at a time,\n"
        "  deadline_seconds: 7200  # so a feed or a signed update must outlive a jump\n"
        f"model: {{kind: {f.bots.model}}}\n"
        "liquidator:\n"
        f"  subaccount: {f.funding.liquidator_subaccount}\n"
        f"  metrics_port: {f.bots.liquidator_metrics_port}\n"
        "sender: {receipt_timeout: 60}\n"
        "loop: {poll_interval: 0.25, outage_tolerance_seconds: 60}\n"
        f"dashboard: {{port: {f.bots.dashboard_port}, refresh_seconds: 2}}\n"
    )
    keys = devnet_keys()
    (out / "devnet.env").write_text(
        "# The devnet mnemonic's public test keys: for this devnet only, never a real network.\n"
        f"DMM_KEEPER_KEY={keys[f.accounts.keeper].key.hex()}\n"
        f"DMM_LIQUIDATOR_KEY={keys[f.accounts.liquidator].key.hex()}\n"
        f"DMM_REPLAY_KEY={keys[f.accounts.owner].key.hex()}\n"
    )
    from offchain.bots.bot_config import load_config

    load_config(config).keeper_config()  # what was written must pass the bots' own checks
    return config


# ---------------------------------------------------------------------------------------------
# Bots and the crash


def start_bot(name: str, config: Path, out: Path) -> subprocess.Popen:
    keys = (out / "devnet.env").read_text().splitlines()
    env = {**os.environ, **dict(line.split("=", 1) for line in keys if "=" in line)}
    handle = open(out / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process
    return subprocess.Popen(
        [sys.executable, "-m", "offchain.cli", name, "--config", str(config)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def last_line(path: Path) -> str:
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    return lines[-1] if lines else "(no output)"


def wait_healthy(
    bots: dict[str, subprocess.Popen], ports: dict[str, int], out: Path, timeout: float
) -> None:
    import requests

    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending:
        for name in list(pending):
            if bots[name].poll() is not None:
                raise DevnetError(
                    f"the {name} exited with code {bots[name].returncode}:"
                    f" {last_line(out / f'{name}.log')}"
                )
            try:
                ok = requests.get(f"http://127.0.0.1:{pending[name]}/healthz", timeout=1).ok
            except requests.RequestException:
                ok = False
            if ok:
                log.info("%s healthy on :%d/healthz", name, pending.pop(name))
        if pending and time.monotonic() > deadline:
            raise DevnetError(f"{', '.join(pending)} not healthy after {timeout:.0f} s")
        time.sleep(0.25)


def run_crash(
    devnet: Devnet,
    deployed: dict[str, Any],
    node: Node,
    timeout: float,
    bots: dict[str, subprocess.Popen],
    out: Path,
) -> dict[str, Any]:
    """Replay the crash; wait until the keeper raised a multiplier and the liquidator acted."""
    c = devnet.file.crash
    w3 = connect(node.url, timeout=5)
    keys = devnet_keys()
    feeds = FeedClient(w3)
    targets = list(deployed["feeds"].values())
    path = crash_scenario(
        CrashScenario(
            start_price=1.0,
            calm_steps=c.calm_steps,
            crash_pct=c.crash_pct,
            crash_steps=c.crash_steps,
            rebound_pct=c.rebound_pct,
            rebound_steps=c.rebound_steps,
            seed=c.seed,
        )
    )
    paths = scaled_paths(feeds, targets, path, 1.0)
    registry = RegistryClient(w3, deployed["registry"])
    engine = EngineClient(w3, deployed["engine"])
    liquidator = keys[devnet.file.accounts.liquidator].address
    start = int(w3.eth.block_number) + 1
    began = time.monotonic()
    acted: dict[str, Any] = {}

    def check(_: int = 0, __: Any = None) -> None:
        if "keeper" not in acted:
            ups = [
                e
                for e in registry.risk_updated_events(start)
                # a raise of a multiplier already in force: the keeper's first update is not
                # an answer to the price move
                if e["old_multiplier"] != 0 and e["new_multiplier"] > e["old_multiplier"]
            ]
            if ups:
                acted["keeper"] = (ups[0], time.monotonic() - began)
        if "liquidator" not in acted:
            done = [e for e in engine.events("Liquidation", start) if e["liquidator"] == liquidator]
            done += [e for e in engine.events("Backstop", start)]
            if done:
                acted["liquidator"] = (done[0], time.monotonic() - began)
        for name, proc in bots.items():
            if proc.poll() is not None:
                raise DevnetError(f"the {name} exited: {last_line(out / f'{name}.log')}")

    def advance(_: int) -> None:
        if c.step_seconds:
            w3.provider.make_request("evm_increaseTime", [c.step_seconds])

    log.info(
        "replaying a crash: %d steps of %d s, %s",
        len(path),
        c.step_seconds,
        ", ".join(f"{p:.3f}" for p in path),
    )
    sender = TxSender(w3, keys[devnet.file.accounts.owner], REPLAY_SENDER)
    replay(sender, feeds, paths, interval=c.interval, on_step=check, before_step=advance)
    deadline = time.monotonic() + timeout
    while len(acted) < 2:
        check()
        if time.monotonic() > deadline:
            missing = {"keeper", "liquidator"} - set(acted)
            raise DevnetError(
                f"{' and '.join(sorted(missing))} did not act within {timeout:.0f} s"
                " of the crash (see the logs in the output folder)"
            )
        time.sleep(0.5)
    return acted


def report_acted(acted: dict[str, Any], started: float, echo: Callable[[str], Any]) -> None:
    update, t_keeper = acted["keeper"]
    event, t_liq = acted["liquidator"]
    echo(
        f"keeper acted:     market {update['market_id']} multiplier"
        f" {update['old_multiplier'] / WAD:.4f} -> {update['new_multiplier'] / WAD:.4f}"
        f" in block {update['block_number']} ({t_keeper:.1f} s into the crash)"
    )
    if "size" in event:
        what = (
            f"liquidated {abs(event['size']) / WAD:.6f} of market {event['market_id']} from"
            f" {event['owner']}/{event['subaccount']}"
        )
    else:
        what = f"backstopped {event['owner']}/{event['subaccount']}"
    echo(
        f"liquidator acted: {what} in block {event['block_number']} ({t_liq:.1f} s into the crash)"
    )
    echo(
        f"both bots acted on the price move, {time.monotonic() - started:.0f} s after the"
        " command started"
    )


# ---------------------------------------------------------------------------------------------
# The command


def launch(options: LaunchOptions, echo: Callable[[str], Any] = print) -> None:
    """Bring the devnet up as ``options`` say (see the module's docstring)."""
    keys = devnet_keys()
    devnet = load_devnet(options.config, [k.address for k in keys])
    if logging.getLogger("dmm").getEffectiveLevel() >= logging.INFO:
        logging.getLogger("dmm.tx").setLevel(logging.WARNING)  # one line per replay step
    f = devnet.file
    port = options.port or f.node.port
    block_time = options.block_time or f.node.block_time
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    pidfile = out / "anvil.pid"
    if pidfile.exists():
        echo(stop_from_pidfile(pidfile))
    with open(out / "anvil.log", "wb") as anvil_log:
        try:
            node = start_anvil(port, devnet.chain_id, anvil_log)
        except Exception as exc:
            if "in use" in str(exc):
                raise DevnetConfigError(str(exc)) from None
            raise
    bots: dict[str, subprocess.Popen] = {}
    keep = False
    try:
        log.info("anvil on %s (chain %d), pid %d", node.url, node.chain_id, node.pid)
        deployed = deploy_and_fund(devnet, node, out)
        config = write_files(devnet, deployed, node, out)
        connect(node.url).provider.make_request("evm_setIntervalMining", [block_time])
        echo(f"devnet up on {node.url} (chain {node.chain_id}), one block every {block_time} s")
        echo(f"  registry {deployed['registry']}   engine {deployed['engine']}")
        for market_id, feed in deployed["feeds"].items():
            echo(f"  market {market_id} feed {feed}")
        echo(
            f"  bot config {config}; keys in {out / 'devnet.env'}; record {out / 'deployment.json'}"
        )
        echo(f"  silverback --network ethereum:local:{node.url}")
        if options.detach:
            write_pidfile(pidfile, node)
            keep = True
            echo(f"detached: node pid {node.pid} in {pidfile}; stop with `dmm devnet --stop`")
            return
        if options.bots:
            bots = {name: start_bot(name, config, out) for name in ("keeper", "liquidator")}
            wait_healthy(
                bots,
                {
                    "keeper": f.bots.keeper_metrics_port,
                    "liquidator": f.bots.liquidator_metrics_port,
                },
                out,
                options.timeout,
            )
            echo(f"keeper and liquidator running (logs {out}/keeper.log, {out}/liquidator.log)")
        if options.crash:
            acted = run_crash(devnet, deployed, node, options.timeout, bots, out)
            report_acted(acted, options.started, echo)
            if options.once:
                return
        if not options.bots:
            env = out / "devnet.env"
            echo(f"run the bots: set -a; . {env}; set +a; then dmm keeper --config {config}")
            echo(
                f"          and dmm liquidator --config {config}; a price move:"
                f" dmm replay --config {config} --step-seconds 3600"
            )
        echo("up until Ctrl-C")
        while node.process.poll() is None:
            for name, proc in bots.items():
                if proc.poll() is not None:
                    raise DevnetError(f"the {name} exited: {last_line(out / f'{name}.log')}")
            time.sleep(0.5)
        raise DevnetError(f"anvil exited with code {node.process.returncode}")
    except KeyboardInterrupt:
        echo("stopping the devnet")
    finally:
        for proc in bots.values():
            if alive(proc.pid):
                proc.terminate()
        for proc in bots.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not keep:
            node.stop()


__all__ = [
    "DevnetError",
    "LaunchOptions",
    "devnet_keys",
    "launch",
    "stop_detached",
    "warm_up_history",
]
