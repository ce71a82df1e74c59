"""scripts/deploy.py on ape's local chain: a reviewed file becomes configured contracts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from offchain.protocol.deploy_config import load_deploy_spec
from scripts.deploy import deploy
from tests.conftest import WAD
from tests.engine.conftest import FEED_DECIMALS, feed_answer

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "testnet.example.yaml"


def test_deploy__example_file_on_devnet_mocks(project, owner, accounts):
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    feeds = [
        project.MockPriceFeed.deploy(FEED_DECIMALS, feed_answer(p), sender=owner)
        for p in (60_000, 3_000)
    ]
    spec = load_deploy_spec(EXAMPLE)
    spec = dataclasses.replace(
        spec,
        collateral=token.address,
        markets=[
            dataclasses.replace(m, feed=f.address) for m, f in zip(spec.markets, feeds, strict=True)
        ],
    )

    registry, engine = deploy(spec, owner)

    assert registry.signer_threshold() == 2
    assert all(registry.is_keeper(k) for k in spec.keepers)
    for m in spec.markets:
        assert registry.initial_ratio(m.market_id) == m.initial_ratio
        assert engine.market_config(m.market_id).feed == m.feed
    assert engine.price_bounds(1) == (1 * WAD, 10**9 * WAD)  # set from min/max_answer
    assert engine.price_bounds(2) == (0, 0)
    assert all(engine.is_exchange(x) for x in spec.exchanges)
    assert engine.owner() == owner.address == registry.owner()
