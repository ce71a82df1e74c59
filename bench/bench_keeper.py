"""Keeper and liquidation-bot figures on an anvil devnet (ape-foundry starts and stops it).

``scan_10k_seconds``: the liquidation bot's full scan (``offchain.bots.liquidator.scan``: the
engine's enumeration in pages of 100 through ``users_to_liquidate``, one JSON-RPC batch, then
``health_batch`` of the liquidatable ones) over 10,000 subaccounts with open positions, 5% of
them liquidatable. Opening 10,000 positions by transactions would take minutes, so the
subaccounts are written straight into the engine's storage with ``anvil_setStorageAt`` (the
layout is read from the compiler, ``vyper -f layout``) and checked through the engine's own
views before timing. The figure is the median of 5 scans, wall clock, client included.

``shock_to_update_blocks``: with 1-second blocks, the keeper loop running, a price shock is
mined in block S; the figure is the block of the keeper's new multiplier minus S, the worst of
3 shocks.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from bench.results import print_table, record
from offchain import WAD
from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket
from offchain.bots.keeper_models import CalibratedRiskModel
from offchain.bots.liquidator import scan
from offchain.bots.loop import LoopConfig, run_loop
from offchain.devnet.system import DEVNET_TIERS, DevnetMarket, deploy_system
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient, connect, latest_block
from offchain.protocol.tx_sender import SenderConfig, TxSender

ROOT = Path(__file__).resolve().parents[1]
N_ACCOUNTS = 10_000
LIQUIDATABLE_EVERY = 20  # 5% of the accounts
SYNTHETIC_OWNER = Web3.to_checksum_address("0x00000000000000000000000000000000000d3a11")
MARKET = 1
PRICE = 60_000
SHOCKS = 2  # -10% each; a third would find the model at its daily rise budget, with nothing to push


def engine_layout() -> dict[str, int]:
    """Storage slot of each of the engine's variables, from the compiler."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vyper",
            "-f",
            "layout",
            "-p",
            "contracts",
            "contracts/MarginEngine.vy",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    layout = json.loads(out)
    layout = layout.get("storage_layout", layout)
    slots: dict[str, int] = {}

    def walk(entries: dict, prefix: str) -> None:  # modules nest their variables
        for name, v in entries.items():
            if isinstance(v, dict) and "slot" in v:
                slots[prefix + name] = int(v["slot"])
            elif isinstance(v, dict):
                walk(v, f"{prefix}{name}.")

    walk(layout, "")
    return slots


def _word(value: int) -> bytes:
    return (value % 2**256).to_bytes(32, "big")


def map_slot(slot: int, *keys: int) -> int:
    """Vyper's ``HashMap`` slot: ``keccak256(slot . key)``, nested key by key."""
    for key in keys:
        slot = int.from_bytes(keccak(_word(slot) + _word(key)), "big")
    return slot


def pack_position(size: int, notional: int) -> int:
    return ((size + 2**127) << 128) | (notional + 2**127)


def write_accounts(url: str, engine: str, layout: dict[str, int]) -> None:
    """10,000 one-position subaccounts of one owner, written into the engine's storage."""
    owner = int(SYNTHETIC_OWNER, 16)
    state = {k.removeprefix("engine_state."): v for k, v in layout.items()}
    writes: list[tuple[int, int]] = []
    for i in range(N_ACCOUNTS):
        sub = i + 1
        collateral = 1_000 if i % LIQUIDATABLE_EVERY == 0 else 5_000  # USD
        writes += [
            (map_slot(state["positions"], owner, sub, MARKET), pack_position(WAD, PRICE * WAD)),
            # the account word: 24-bit market ids from the low bits, the default class above
            (map_slot(state["account"], owner, sub), MARKET),
            (map_slot(state["collateral"], owner, sub), collateral * WAD),
            (map_slot(state["active"], i), owner),
            (map_slot(state["active"], i) + 1, sub),
            (map_slot(state["active_index"], owner, sub), i + 1),
        ]
    writes.append((state["active_count"], N_ACCOUNTS))
    session = requests.Session()
    for start in range(0, len(writes), 2_000):
        payload = [
            {
                "jsonrpc": "2.0",
                "id": k,
                "method": "anvil_setStorageAt",
                "params": [engine, hex(slot), "0x" + _word(value).hex()],
            }
            for k, (slot, value) in enumerate(writes[start : start + 2_000])
        ]
        answers = session.post(url, json=payload, timeout=60).json()
        errors = [a for a in answers if "error" in a]
        if errors:
            raise RuntimeError(f"anvil_setStorageAt failed: {errors[0]}")


def measure_scan(w3, system) -> dict[str, float | int]:
    engine = EngineClient(w3, system.engine.address)
    write_accounts(w3.provider.endpoint_uri, system.engine.address, engine_layout())
    # The storage written is what the engine reads: check through its own views.
    assert engine.count() == N_ACCOUNTS
    assert engine.position(SYNTHETIC_OWNER, 7, MARKET) == (WAD, PRICE * WAD)
    assert engine.accounts(N_ACCOUNTS - 100)[-1].subaccount == N_ACCOUNTS
    times = []
    result = None
    for _ in range(5):
        result = scan(engine)
        times.append(result.seconds)
    assert result is not None
    assert result.scanned == N_ACCOUNTS
    assert len(result.liquidatable) == N_ACCOUNTS // LIQUIDATABLE_EVERY
    return {
        "scan_10k_seconds": round(statistics.median(times), 4),
        "found": len(result.liquidatable),
    }


def measure_shock(w3, system, owner_key: str) -> int:
    keeper_key = Account.from_key(b"\x31" * 32)
    w3.provider.make_request("anvil_setBalance", [keeper_key.address, hex(10**20)])
    system.registry.add_keeper(keeper_key.address, sender=system.owner)
    feed = system.feeds[MARKET].address
    registry = RegistryClient(w3, system.registry.address)
    fast = SenderConfig(poll_interval=0.05)
    keeper = Keeper(
        KeeperConfig((KeeperMarket(MARKET, feed, "BTC"),)),
        registry,
        FeedClient(w3),
        # The model the keeper ships (the backtested calibration), one bar per 1-second block as
        # the devnet runs it: an hourly bar would hold a shock until the hour closes.
        CalibratedRiskModel({MARKET: DEVNET_TIERS[0].maintenance_rate}, bar_seconds=1),
        keeper_key,
        TxSender(w3, keeper_key, fast),
        w3.eth.chain_id,
    )
    now = latest_block(w3).timestamp
    hours = 721  # the backtest's warm-up: the model proposes from the first tick
    keeper.warm_up(
        MARKET,
        [now - (hours - i + 1) for i in range(hours)],
        [PRICE * (1 + 0.004 * (-1) ** i) for i in range(hours)],
    )
    start = latest_block(w3).number
    w3.provider.make_request("evm_setAutomine", [False])
    w3.provider.make_request("evm_setIntervalMining", [1])
    stop = threading.Event()
    loop = threading.Thread(
        target=run_loop,
        args=("keeper", w3, keeper.tick, LoopConfig(poll_interval=0.05)),
        kwargs={"stop": stop},
        daemon=True,
    )
    loop.start()
    feeder = TxSender(w3, Account.from_key(owner_key), fast)
    lags = []
    try:
        deadline = time.monotonic() + 30  # the quiet first update, on the loop's first bars
        while not registry.risk_updated_events(start) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not registry.risk_updated_events(start):
            raise RuntimeError("no first keeper update within 30 s")
        price = float(PRICE)
        for _ in range(SHOCKS):
            time.sleep(1.5)
            price *= 0.9
            shock = feeder.send(
                feed, FeedClient(w3).encode_set_answer(feed, round(price * 10**8)), label="shock"
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                events = [
                    e
                    for e in registry.risk_updated_events(shock.block_number)
                    if e["block_number"] > shock.block_number
                    and e["new_multiplier"] > e["old_multiplier"]  # the shock's raise
                ]
                if events:
                    lags.append(events[0]["block_number"] - shock.block_number)
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("no keeper update within 20 s of the shock")
    finally:
        stop.set()
        loop.join(timeout=10)
        w3.provider.make_request("evm_setIntervalMining", [0])
        w3.provider.make_request("evm_setAutomine", [True])
    return max(lags)


def main() -> dict[str, float | int]:
    from ape import accounts, chain, networks

    logging.getLogger("dmm").setLevel(logging.WARNING)
    with networks.parse_network_choice("ethereum:local:foundry"):
        owner = accounts.test_accounts[0]
        w3 = connect(chain.provider.uri, timeout=60)
        system = deploy_system(owner, markets=[DevnetMarket(MARKET, "BTC", float(PRICE))])
        scan_figures = measure_scan(w3, system)
        system = deploy_system(owner, markets=[DevnetMarket(MARKET, "BTC", float(PRICE))])
        blocks = measure_shock(w3, system, owner.private_key)
    results = {
        "scan_10k_seconds": scan_figures["scan_10k_seconds"],
        "shock_to_update_blocks": blocks,
    }
    record(results)
    print_table(
        "Keeper and liquidation bot (anvil)",
        [
            (
                f"liquidation scan, {N_ACCOUNTS:,} subaccounts"
                f" ({scan_figures['found']} liquidatable)",
                f"{results['scan_10k_seconds']:.3f} s",
                "<= 2 s",
            ),
            ("price shock to new multiplier mined (1 s blocks)", f"{blocks} block(s)", "<= 2"),
        ],
    )
    return results


if __name__ == "__main__":
    main()
