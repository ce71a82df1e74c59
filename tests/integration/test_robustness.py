"""The keeper when things go wrong: RPC down, a crash between signing and mining, a stuck
transaction under a base-fee spike, and repeated failures."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner
from eth_account import Account
from web3 import Web3
from web3.exceptions import TransactionNotFound

from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket
from offchain.bots.keeper_models import EwmaRiskModel
from offchain.bots.loop import LoopConfig, TooManyFailures, run_loop
from offchain.bots.metrics import BotMetrics
from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_INITIAL_RATIO, DEVNET_TIERS
from offchain.protocol.chain import FeedClient, RegistryClient, connect, latest_block
from offchain.protocol.tx_sender import SenderConfig, TxSender, TxTimeout
from tests.integration.conftest import FAST_SENDER, MARKET_BTC, free_port, warm_up

GWEI = 10**9
# anvil's first default account (mnemonic "test ... junk"), the owner on our own anvil.
ANVIL_OWNER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def ticks(keeper: Keeper) -> float:
    """Ticks the keeper's loop completed (its Prometheus counter)."""
    return keeper.metrics.ticks.labels("keeper")._value.get()


def send(w3: Web3, key, tx: dict) -> Any:
    tx = {
        "from": key.address,
        "nonce": w3.eth.get_transaction_count(key.address),
        "chainId": w3.eth.chain_id,
        "gas": 6_000_000,
        "maxFeePerGas": 50 * GWEI,
        "maxPriorityFeePerGas": GWEI,
        **tx,
    }
    signed = key.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


def deploy(w3: Web3, key, contract_type, *args) -> Any:
    abi = [a.model_dump(by_alias=True, mode="json") for a in contract_type.abi]
    factory = w3.eth.contract(abi=abi, bytecode=contract_type.deployment_bytecode.bytecode)
    data = factory.constructor(*args).build_transaction({"from": key.address})["data"]
    receipt = send(w3, key, {"data": data})
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)


@pytest.fixture
def own_system(own_anvil, project, keeper_key):
    """Registry (one market) and a mock feed deployed on our own anvil, by raw transactions."""
    w3 = connect(own_anvil.url, timeout=2)
    owner = Account.from_key(ANVIL_OWNER_KEY)
    w3.provider.make_request("anvil_setBalance", [keeper_key.address, hex(10**20)])
    registry = deploy(w3, owner, project.RiskParameterRegistry.contract_type, owner.address)
    feed = deploy(w3, owner, project.MockPriceFeed.contract_type, 8, 60_000 * 10**8)
    send(
        w3,
        owner,
        {
            "to": registry.address,
            "data": registry.encode_abi("add_keeper", args=[keeper_key.address]),
        },
    )
    tiers = [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS]
    data = registry.encode_abi(
        "configure_market",
        args=[MARKET_BTC, tiers, DEVNET_INITIAL_RATIO, DEVNET_GUARDRAILS.as_tuple()],
    )
    send(w3, owner, {"to": registry.address, "data": data})
    return {"w3": w3, "owner": owner, "registry": registry, "feed": feed}


def own_keeper(own_system, keeper_key, sender_config: SenderConfig) -> Keeper:
    """A warmed-up keeper of MARKET_BTC on our own anvil."""
    w3 = own_system["w3"]
    keeper = Keeper(
        KeeperConfig((KeeperMarket(MARKET_BTC, own_system["feed"].address, "BTC"),)),
        RegistryClient(w3, own_system["registry"].address),
        FeedClient(w3),
        EwmaRiskModel(),
        keeper_key,
        TxSender(w3, keeper_key, sender_config),
        w3.eth.chain_id,
    )
    warm_up(keeper, latest_block(w3).timestamp, {MARKET_BTC: 60_000.0})
    return keeper


def test_run_loop__rpc_down_retries_and_resumes_without_duplicates(
    own_anvil, own_system, keeper_key, caplog
):
    w3, owner, feed = own_system["w3"], own_system["owner"], own_system["feed"]
    keeper = own_keeper(own_system, keeper_key, FAST_SENDER)
    registry = keeper.registry
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["ticks"] = run_loop(
                "keeper",
                w3,
                keeper.tick,
                LoopConfig(
                    poll_interval=0.05,
                    max_consecutive_failures=12,
                    backoff_initial=0.1,
                    backoff_max=0.8,
                ),
                keeper.metrics,
                stop=stop,
            )
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(registry.risk_updated_events(0)) == 1)
        own_anvil.stop()  # the node goes away; its state is kept on disk
        wait_for(lambda: caplog.text.count("node unreachable for") >= 2, timeout=10)
        own_anvil.start()
        w3.provider.make_request("evm_increaseTime", [60])
        send(
            w3,
            owner,
            {"to": feed.address, "data": feed.encode_abi("set_answer", args=[48_000 * 10**8])},
        )
        wait_for(lambda: len(registry.risk_updated_events(0)) >= 2)
        # Three more blocks, each ticked (the tick counter says so): nothing else may land.
        for _ in range(3):
            done = ticks(keeper)
            w3.provider.make_request("evm_mine", [])
            wait_for(lambda: ticks(keeper) > done)  # noqa: B023 - called before done changes
    finally:
        stop.set()
        thread.join(timeout=10)

    assert "error" not in outcome
    events = registry.risk_updated_events(0)
    assert len(events) == 2
    assert events[0]["observed_at"] < events[1]["observed_at"]
    assert events[1]["new_multiplier"] > events[0]["new_multiplier"]
    assert "RpcUnavailable" in caplog.text and "retry in" in caplog.text
    assert "keeper recovered after" in caplog.text
    assert w3.eth.get_transaction_count(keeper_key.address) == 2


def test_recover__killed_between_signing_and_mining_applies_once(
    w3, system, make_keeper, registry_client, keeper_key, advance, caplog
):
    first = make_keeper()
    warm_up(first, latest_block(w3).timestamp, {1: 60_000.0, 2: 3_000.0})
    first.tick(latest_block(w3))
    advance()
    system.set_price(MARKET_BTC, 48_000.0)
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        # The first process signs and broadcasts, then dies before the block is mined.
        dying = make_keeper(receipt_timeout=0.3, stuck_blocks=1000)
        dying.history = first.history
        with pytest.raises(TxTimeout):
            dying.tick(latest_block(w3))
        mined, pending = (
            w3.eth.get_transaction_count(keeper_key.address),
            w3.eth.get_transaction_count(keeper_key.address, "pending"),
        )
        assert pending == mined + 1

        # A new process starts: it recovers the nonce from the chain while the old tx lands.
        restarted = make_keeper()
        warm_up(restarted, latest_block(w3).timestamp, {1: 60_000.0, 2: 3_000.0})
        timer = threading.Timer(0.5, lambda: w3.provider.make_request("evm_mine", []))
        timer.start()
        next_nonce = restarted.sender.recover(timeout=10)
        timer.join()
    finally:
        w3.provider.make_request("evm_setAutomine", [True])

    result = restarted.tick(latest_block(w3))

    assert next_nonce == mined + 1
    assert result.sent is None
    btc = [e for e in registry_client.risk_updated_events(0) if e["market_id"] == MARKET_BTC]
    assert len(btc) == 2  # the first tick and the shock, once
    assert w3.eth.get_transaction_count(keeper_key.address) == next_nonce
    assert "nonce recovered from chain" in caplog.text


def test_send__stuck_under_base_fee_spike_replaced_with_fee_bump(
    w3, system, make_keeper, registry_client, keeper_key, advance, caplog
):
    keeper = make_keeper(stuck_blocks=1, poll_interval=0.05)
    warm_up(keeper, latest_block(w3).timestamp, {1: 60_000.0, 2: 3_000.0})
    keeper.tick(latest_block(w3))
    advance()
    system.set_price(MARKET_BTC, 48_000.0)
    nonce = w3.eth.get_transaction_count(keeper_key.address)
    outcome: dict[str, Any] = {}
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        thread = threading.Thread(
            target=lambda: outcome.setdefault("r", keeper.tick(latest_block(w3)))
        )
        thread.start()
        wait_for(lambda: w3.eth.get_transaction_count(keeper_key.address, "pending") > nonce)
        w3.provider.make_request("anvil_setNextBlockBaseFeePerGas", [hex(100 * GWEI)])
        w3.provider.make_request("evm_mine", [])
        for _ in range(60):
            if not thread.is_alive():
                break
            time.sleep(0.15)
            w3.provider.make_request("evm_mine", [])
        thread.join(timeout=5)
    finally:
        w3.provider.make_request("evm_setAutomine", [True])

    sent = outcome["r"].sent
    assert sent is not None and sent.replacements
    mined_tx = w3.eth.get_transaction(sent.tx_hash)
    assert mined_tx["nonce"] == nonce
    assert mined_tx["maxFeePerGas"] * 8 >= sent.first_max_fee * 9  # >= +12.5%
    assert mined_tx["maxPriorityFeePerGas"] * 8 >= sent.first_priority_fee * 9
    first_hash = re.findall(r"risk batch \[1\] sent: (0x[0-9a-f]{64})", caplog.text)[0]
    assert first_hash != sent.tx_hash
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(first_hash)
    # Kept in the pool it is "stuck for N blocks"; evicted by the spike (anvil does) the node
    # refuses it again as "priced out": either way it is replaced at the same nonce.
    assert re.search(r"risk batch \[1\] (stuck for \d+ blocks|priced out) at nonce", caplog.text)
    assert registry_client.market_state(MARKET_BTC).target == outcome["r"].updates[0].multiplier


def test_run_loop__k_consecutive_failures_stop_with_clear_error(
    w3, system, keeper_config, fund_eth
):
    impostor = Account.from_key(b"\x77" * 32)  # signs, but is not a keeper of the registry
    fund_eth(impostor.address)
    registry = RegistryClient(w3, system.registry.address)
    keeper = Keeper(
        keeper_config,
        registry,
        FeedClient(w3),
        EwmaRiskModel(),
        impostor,
        TxSender(w3, impostor, FAST_SENDER),
        w3.eth.chain_id,
        BotMetrics("keeper"),
    )
    warm_up(keeper, latest_block(w3).timestamp, {1: 60_000.0, 2: 3_000.0})

    with pytest.raises(TooManyFailures) as excinfo:
        run_loop(
            "keeper",
            w3,
            keeper.tick,
            LoopConfig(poll_interval=0.05, max_consecutive_failures=3, backoff_initial=0.05),
            keeper.metrics,
        )

    assert str(excinfo.value) == (
        "keeper: stopping after 3 consecutive failed ticks; last error: SimulationReverted:"
        f" risk batch [1,2] to {registry.address}: reverted in simulation:"
        " registry: signer is not a keeper"
    )
    assert registry.market_state(MARKET_BTC).updated_at == 0
    assert w3.eth.get_transaction_count(impostor.address) == 0


def test_keeper_command__dead_rpc_exits_with_clear_error(tmp_path):
    from offchain.cli_ops import keeper_command

    port = free_port()
    config = tmp_path / "keeper.yaml"
    config.write_text(
        f"rpc: http://127.0.0.1:{port}\n"
        "registry: '0x0000000000000000000000000000000000000001'\n"
        "markets:\n  - {id: 1, feed: '0x0000000000000000000000000000000000000002'}\n"
        "loop: {max_consecutive_failures: 3, backoff_initial: 0.05, poll_interval: 0.05}\n"
    )

    result = CliRunner().invoke(keeper_command, ["--config", str(config), "--dry-run"])

    assert result.exit_code == 1
    url = f"http://127.0.0.1:{port}"
    assert result.output == f"Error: cannot reach the node at {url} (connection refused)\n"


def test_replacement_fees__rise_by_at_least_one_eighth(w3, keeper_key):
    sender = TxSender(w3, keeper_key, SenderConfig())
    max_fee, tip = sender.replacement_fees(8 * GWEI, GWEI)
    assert max_fee * 8 >= 8 * GWEI * 9 and tip * 8 >= GWEI * 9


def test_send__rpc_down_with_tx_in_flight_resumes_same_nonce(
    own_anvil, own_system, keeper_key, caplog
):
    w3, owner, feed = own_system["w3"], own_system["owner"], own_system["feed"]
    patient = SenderConfig(
        poll_interval=0.05, backoff_initial=0.1, backoff_max=0.5, rpc_retries=20, receipt_timeout=60
    )
    keeper = own_keeper(own_system, keeper_key, patient)
    registry = keeper.registry
    first = keeper.tick(latest_block(w3))
    assert first.sent is not None
    # A later round needs a later second (no evm_increaseTime: a restarted node forgets it).
    wait_for(lambda: int(time.time()) > latest_block(w3).timestamp, timeout=5)
    set_price = feed.encode_abi("set_answer", args=[48_000 * 10**8])
    send(w3, owner, {"to": feed.address, "data": set_price})
    nonce = w3.eth.get_transaction_count(keeper_key.address)
    w3.provider.make_request("evm_setAutomine", [False])
    outcome: dict[str, Any] = {}

    def tick() -> None:
        try:
            outcome["result"] = keeper.tick(latest_block(w3))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    wait_for(lambda: w3.eth.get_transaction_count(keeper_key.address, "pending") > nonce)
    own_anvil.stop()  # the node dies with the batch in its pool
    wait_for(lambda: "RPC unavailable during" in caplog.text)  # the sender saw it go
    own_anvil.start()  # back, automining, with an empty pool
    thread.join(timeout=30)

    assert "error" not in outcome, outcome.get("error")
    sent = outcome["result"].sent
    assert sent is not None and sent.nonce == nonce
    assert w3.eth.get_transaction_count(keeper_key.address) == nonce + 1
    assert [e["new_multiplier"] for e in registry.risk_updated_events(0)][1:] == [
        outcome["result"].updates[0].multiplier
    ]
    assert "RPC unavailable during" in caplog.text
    assert "unknown to the node (dropped or node restarted); broadcasting again" in caplog.text
