"""k-of-n on anvil: two keepers sharing a co-signing folder; the one that completes the
registry's threshold relays, once."""

from __future__ import annotations

import logging
from dataclasses import replace

from eth_account import Account

from offchain.bots.keeper import Keeper
from offchain.bots.keeper_models import EwmaRiskModel
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import FeedClient, latest_block
from offchain.protocol.tx_sender import TxSender
from tests.integration.conftest import FAST_SENDER, MARKET_BTC, MARKET_ETH, warm_up

SECOND_KEY = Account.from_key(b"\x25" * 32)


def _keeper(w3, key, config, registry_client) -> Keeper:
    return Keeper(
        config,
        registry_client,
        FeedClient(w3),
        EwmaRiskModel(),
        key,
        TxSender(w3, key, FAST_SENDER),
        w3.eth.chain_id,
        BotMetrics("keeper"),
    )


def test_cosign__second_signature_completes_two_of_two_and_relays_once(
    w3, system, keeper_key, keeper_config, registry_client, fund_eth, advance, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="dmm.keeper")
    system.registry.add_keeper(SECOND_KEY.address, sender=system.owner)
    system.registry.set_signer_threshold(2, sender=system.owner)
    fund_eth(SECOND_KEY.address)
    config = replace(keeper_config, cosign_dir=str(tmp_path / "cosign"))
    first = _keeper(w3, keeper_key, config, registry_client)
    second = _keeper(w3, SECOND_KEY, config, registry_client)
    now = latest_block(w3).timestamp
    for keeper in (first, second):
        warm_up(keeper, now, {MARKET_BTC: 60_000.0, MARKET_ETH: 3_000.0})
    block = latest_block(w3)

    alone = first.tick(block)

    assert alone.sent is None and alone.dropped == "waiting for co-signers"
    assert "1 of 2 keeper signatures; waiting for co-signers" in caplog.text
    assert registry_client.market_state(MARKET_BTC).updated_at == 0

    together = second.tick(block)  # the same block: the same batch, the second signature

    assert together.sent is not None
    assert len(together.signatures) == 2
    assert registry_client.multiplier(MARKET_BTC) == together.updates[0].multiplier
    digests = list((tmp_path / "cosign").iterdir())
    assert len(digests) == 1 and len(list(digests[0].glob("*.sig"))) == 2

    # The first keeper, a block later, finds nothing new to sign: applied once.
    advance(5)
    system.set_price(MARKET_ETH, 3_000.0)  # mines a block; BTC's round is unchanged
    again = first.tick(latest_block(w3))
    assert not any(u.market_id == MARKET_BTC for u in again.updates)


def test_cosign__tampered_signature_file_does_not_count(
    w3, system, keeper_key, keeper_config, registry_client, tmp_path, caplog
):
    system.registry.add_keeper(SECOND_KEY.address, sender=system.owner)
    system.registry.set_signer_threshold(2, sender=system.owner)
    config = replace(keeper_config, cosign_dir=str(tmp_path / "cosign"))
    first = _keeper(w3, keeper_key, config, registry_client)
    warm_up(first, latest_block(w3).timestamp, {MARKET_BTC: 60_000.0, MARKET_ETH: 3_000.0})
    block = latest_block(w3)
    first.tick(block)
    [folder] = list((tmp_path / "cosign").iterdir())
    # A file claiming the second keeper, but holding the first keeper's signature.
    own = (folder / f"{keeper_key.address}.sig").read_text()
    (folder / f"{SECOND_KEY.address}.sig").write_text(own)

    result = first.tick(block)

    assert result.sent is None and result.dropped == "waiting for co-signers"
    assert f"recovers to {keeper_key.address}" in caplog.text
    assert registry_client.market_state(MARKET_BTC).updated_at == 0
