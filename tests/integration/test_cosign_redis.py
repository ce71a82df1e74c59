"""k-of-n co-signing over a real transport: keepers on anvil meeting through a redis-server of our
own (and the shared folder, where the rule is the transport's too).

What counts is checked after the transport: a non-keeper's, a garbage or a malleable signature
is ignored; k = 3 with one keeper down waits; keepers that disagree sign different digests and
never combine; two keepers racing to relay land one batch, the other's revert is not an error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from eth_account import Account

from offchain.bots.cosign import CosignSettings
from offchain.bots.keeper import Keeper, KeeperConfig
from offchain.bots.keeper_models import EwmaRiskModel
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import FeedClient, latest_block
from offchain.protocol.signing import batch_digest, sign_batch, to_high_s
from offchain.protocol.tx_sender import TxSender
from tests.integration.conftest import (
    FAST_SENDER,
    MARKET_BTC,
    MARKET_ETH,
    free_port,
    wait_until,
    warm_up,
)

ROOT = Path(__file__).resolve().parents[2]

SECOND_KEY = Account.from_key(b"\x25" * 32)
THIRD_KEY = Account.from_key(b"\x26" * 32)
IMPOSTOR = Account.from_key(b"\x77" * 32)  # a valid key, but not a keeper of the registry


@pytest.fixture
def settings(request, redis_server, tmp_path) -> CosignSettings:
    """Redis by default; ``@pytest.mark.parametrize("settings", ["folder"], indirect=True)``
    for the shared folder."""
    if getattr(request, "param", "redis") == "folder":
        return CosignSettings(transport="folder", dir=str(tmp_path / "cosign"))
    return CosignSettings(
        transport="redis", url=redis_server.url, prefix=f"test:{uuid.uuid4().hex[:8]}"
    )


@pytest.fixture
def keepers(system, fund_eth, keeper_key):
    """The registry's three keepers (the fixture's key first); set the threshold in the test."""
    for key in (SECOND_KEY, THIRD_KEY):
        system.registry.add_keeper(key.address, sender=system.owner)
        fund_eth(key.address)
    return [keeper_key, SECOND_KEY, THIRD_KEY]


def make(w3, key, config: KeeperConfig, registry_client, **model) -> Keeper:
    keeper = Keeper(
        config,
        registry_client,
        FeedClient(w3),
        EwmaRiskModel(**model),
        key,
        TxSender(w3, key, FAST_SENDER),
        w3.eth.chain_id,
        BotMetrics("keeper"),
    )
    warm_up(keeper, latest_block(w3).timestamp, {MARKET_BTC: 60_000.0, MARKET_ETH: 3_000.0})
    return keeper


def published(settings: CosignSettings, digest: bytes) -> dict[str, bytes]:
    from offchain.bots.cosign import make_transport

    return make_transport(settings).collect(digest)


def relayed_signers(system, w3) -> list[int]:
    """``signers`` of every RiskBatchRelayed log so far (one entry per landed batch)."""
    return [e.signers for e in system.registry.RiskBatchRelayed.range(0, w3.eth.block_number + 1)]


def test_cosign__redis_two_of_three_relays_once_with_two_signatures(
    w3, system, keepers, keeper_config, registry_client, settings, caplog
):
    system.registry.set_signer_threshold(2, sender=system.owner)
    config = replace(keeper_config, cosign=settings)
    first, second = (make(w3, k, config, registry_client) for k in keepers[:2])
    block = latest_block(w3)

    alone = first.tick(block)
    together = second.tick(block)

    assert alone.sent is None and alone.dropped == "waiting for co-signers"
    assert "1 of 2 keeper signatures; waiting for co-signers" in caplog.text
    assert together.sent is not None and len(together.signatures) == 2
    assert registry_client.multiplier(MARKET_BTC) == together.updates[0].multiplier
    assert relayed_signers(system, w3) == [2]
    digest = batch_digest(together.updates, w3.eth.chain_id, registry_client.address)
    assert set(published(settings, digest)) == {keepers[0].address, keepers[1].address}
    ttl = redis.Redis.from_url(settings.url).ttl(f"{settings.prefix}:{digest.hex()}")
    assert 0 < ttl <= settings.ttl_seconds


@pytest.mark.parametrize("settings", ["redis", "folder"], indirect=True)
def test_cosign__non_keeper_garbage_and_malleable_signatures_are_ignored(
    w3, system, keepers, keeper_config, registry_client, settings, caplog
):
    system.registry.set_signer_threshold(2, sender=system.owner)
    config = replace(keeper_config, cosign=settings)
    first = make(w3, keepers[0], config, registry_client)
    block = latest_block(w3)
    waiting = first.tick(block)
    digest = batch_digest(waiting.updates, w3.eth.chain_id, registry_client.address)
    chain_id, registry = w3.eth.chain_id, registry_client.address
    third_sig = sign_batch(waiting.updates, THIRD_KEY.key, chain_id, registry)
    transport = first.cosigner.transport
    # An impostor's real signature; garbage under the second keeper's name; the third keeper's
    # signature in its malleable (high-s) form; the third keeper's name on the first's signature.
    transport.publish(
        digest, IMPOSTOR.address, sign_batch(waiting.updates, IMPOSTOR.key, chain_id, registry)
    )
    transport.publish(digest, SECOND_KEY.address, b"\x13" * 65)
    transport.publish(digest, THIRD_KEY.address, to_high_s(third_sig))

    again = first.tick(block)

    assert waiting.dropped == again.dropped == "waiting for co-signers"
    assert f"{IMPOSTOR.address} is not a keeper" in caplog.text
    assert f"co-signature {SECOND_KEY.address}.sig ignored:" in caplog.text
    assert "high-s (malleable) signature" in caplog.text
    assert "1 of 2 keeper signatures" in caplog.text
    assert registry_client.market_state(MARKET_BTC).updated_at == 0
    assert relayed_signers(system, w3) == []


def test_cosign__three_of_three_with_one_keeper_down_waits_then_lands(
    w3, system, keepers, keeper_config, registry_client, settings, caplog
):
    system.registry.set_signer_threshold(3, sender=system.owner)
    config = replace(keeper_config, cosign=settings)
    first, second, third = (make(w3, k, config, registry_client) for k in keepers)
    block = latest_block(w3)

    results = [first.tick(block), second.tick(block), first.tick(block)]

    assert all(r.sent is None and r.dropped == "waiting for co-signers" for r in results)
    assert "2 of 3 keeper signatures; waiting for co-signers" in caplog.text
    assert registry_client.market_state(MARKET_BTC).updated_at == 0

    back = third.tick(block)  # the third keeper comes back

    assert back.sent is not None and len(back.signatures) == 3
    assert relayed_signers(system, w3) == [3]


@pytest.mark.parametrize("settings", ["redis", "folder"], indirect=True)
def test_cosign__disagreeing_keepers_never_combine(
    w3, system, keepers, keeper_config, registry_client, settings
):
    system.registry.set_signer_threshold(2, sender=system.owner)
    config = replace(keeper_config, cosign=settings)
    cautious = make(w3, keepers[0], config, registry_client, reference_hourly_vol=0.001)
    relaxed = make(w3, keepers[1], config, registry_client, reference_hourly_vol=0.01)
    block = latest_block(w3)

    one, two = cautious.tick(block), relaxed.tick(block)

    assert one.updates[0].multiplier != two.updates[0].multiplier
    assert one.dropped == two.dropped == "waiting for co-signers"
    digests = [
        batch_digest(r.updates, w3.eth.chain_id, registry_client.address) for r in (one, two)
    ]
    assert [len(published(settings, d)) for d in digests] == [1, 1]
    assert registry_client.market_state(MARKET_BTC).updated_at == 0
    assert relayed_signers(system, w3) == []


def test_cosign__racing_relays_land_one_batch_and_the_loser_is_not_an_error(
    w3, system, keepers, keeper_config, registry_client, settings, caplog
):
    system.registry.set_signer_threshold(2, sender=system.owner)
    config = replace(keeper_config, cosign=settings)
    first, second, third = (make(w3, k, config, registry_client) for k in keepers)
    block = latest_block(w3)
    assert first.tick(block).dropped == "waiting for co-signers"
    outcomes: dict[str, Any] = {}

    def tick(name: str, keeper: Keeper) -> None:
        try:
            outcomes[name] = keeper.tick(block)
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            outcomes[name] = exc

    w3.provider.make_request("evm_setAutomine", [False])
    try:
        threads = [
            threading.Thread(target=tick, args=(n, k)) for n, k in (("b", second), ("c", third))
        ]
        for t in threads:
            t.start()
        # both batches simulated against the same state and broadcast: one block takes both
        wait_until(
            lambda: all(
                w3.eth.get_transaction_count(k.address, "pending") == 1 for k in keepers[1:]
            ),
            what="both relays in the pool",
        )
        w3.provider.make_request("evm_mine", [])
        for t in threads:
            t.join(timeout=30)
    finally:
        w3.provider.make_request("evm_setAutomine", [True])

    results = [outcomes["b"], outcomes["c"]]
    assert not any(isinstance(r, Exception) for r in results), results
    landed = [r for r in results if r.sent is not None]
    lost = [r for r in results if r.sent is None]
    assert len(landed) == 1 and len(lost) == 1
    relayer = keepers[1] if landed[0] is results[0] else keepers[2]
    assert lost[0].dropped == f"relayed by {relayer.address} first"
    assert "another keeper" in caplog.text and "relayed it first" in caplog.text
    btc = [e for e in registry_client.risk_updated_events(0) if e["market_id"] == MARKET_BTC]
    assert len(btc) == 1
    assert relayed_signers(system, w3) == [2]


def test_cosign__redis_down_is_one_warning_and_no_relay(
    w3, system, keepers, keeper_config, registry_client, caplog
):
    system.registry.set_signer_threshold(2, sender=system.owner)
    dead = CosignSettings(
        transport="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.5
    )
    keeper = make(w3, keepers[0], replace(keeper_config, cosign=dead), registry_client)
    caplog.set_level(logging.INFO, logger="dmm")

    result = keeper.tick(latest_block(w3))

    assert result.sent is None and result.dropped == "waiting for co-signers"
    lines = [r.getMessage() for r in caplog.records if "co-signing transport" in r.getMessage()]
    assert len(lines) == 1 and f"transport redis {dead.url} unavailable" in lines[0]
    assert "ConnectionError" in lines[0] and "not relayed this tick" in lines[0]
    assert registry_client.market_state(MARKET_BTC).updated_at == 0


# ---------------------------------------------------------------------------------------------
# Three keepers as separate processes (`dmm keeper`), meeting over redis-server on loopback


def metric(port: int, name: str) -> float:
    """A sample of a keeper's /metrics (0 when absent or the process does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def test_keepers__three_processes_two_of_three_over_redis_one_killed_updates_still_land(
    w3, system, keepers, rpc_url, registry_client, redis_server, advance, tmp_path
):
    system.registry.set_signer_threshold(2, sender=system.owner)
    feed = system.feeds[MARKET_BTC].address
    ports = [free_port() for _ in keepers]
    procs: list[subprocess.Popen] = []
    logs = [tmp_path / f"keeper{i}.log" for i in range(3)]
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    for i, (key, port) in enumerate(zip(keepers, ports, strict=True)):
        config = tmp_path / f"keeper{i}.yaml"
        config.write_text(
            f"rpc: {rpc_url}\nregistry: '{system.registry.address}'\n"
            f"markets:\n  - {{id: {MARKET_BTC}, name: BTC, feed: '{feed}'}}\n"
            "model: {kind: ewma}\n"  # answers from the second reading: no warm-up file
            f"keeper:\n  metrics_port: {port}\n"
            f"  cosign: {{transport: redis, url: '{redis_server.url}', prefix: '{prefix}'}}\n"
            "loop: {poll_interval: 0.1}\n"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "offchain.cli", "keeper", "--config", str(config)],
                cwd=ROOT,
                env={**os.environ, "DMM_KEEPER_KEY": key.key.hex()},
                stdout=subprocess.DEVNULL,
                stderr=logs[i].open("w"),
            )
        )

    def ticked_since(counts: list[float], alive: list[int]) -> bool:
        return all(metric(ports[i], "dmm_ticks_total") > counts[i] for i in alive)

    def btc_updates() -> list[dict]:
        return [e for e in registry_client.risk_updated_events(0) if e["market_id"] == MARKET_BTC]

    try:
        # Each keeper up and ticking (its tick counter moves on a new block).
        wait_until(lambda: ticked_since([0, 0, 0], [0, 1, 2]), timeout=90, what="three keepers")
        for p, log_path in zip(procs, logs, strict=True):
            assert p.poll() is None, log_path.read_text()[-2000:]

        # A first move: the market's first update, co-signed by two of the three.
        advance(60)
        system.set_price(MARKET_BTC, 58_000.0)
        first = wait_until(btc_updates, timeout=30, what="the first co-signed update")
        counts = [metric(p, "dmm_ticks_total") for p in ports]
        w3.provider.make_request("evm_mine", [])
        wait_until(lambda: ticked_since(counts, [0, 1, 2]), what="a tick after the update")

        procs[2].kill()  # the third keeper dies without a word
        procs[2].wait(timeout=10)
        advance(60)
        system.set_price(MARKET_BTC, 46_400.0)  # -20% in one reading: the EWMA volatility jumps
        second = wait_until(
            lambda: btc_updates()[1:], timeout=30, what="an update after one keeper died"
        )
        counts = [metric(p, "dmm_ticks_total") for p in ports]
        w3.provider.make_request("evm_mine", [])
        wait_until(lambda: ticked_since(counts, [0, 1]), what="ticks after the second update")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait(timeout=20)

    assert len(first) == 1 and len(btc_updates()) == 2  # each move landed once
    assert second[0]["new_multiplier"] > first[0]["new_multiplier"]  # what the shock must change
    signers = [
        e.signers for e in system.registry.RiskBatchRelayed.range(0, w3.eth.block_number + 1)
    ]
    assert signers == [2, 2]
    text = [p.read_text() for p in logs]
    for out in text[:2]:
        assert "Traceback" not in out and "tick failed" not in out, out[-2000:]
    assert sum("pushed 1 update(s) [1]" in out for out in text) >= 1
