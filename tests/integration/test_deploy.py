"""``scripts/deploy.py`` on anvil: the example deployment file deploys cleanly on devnet mocks;
a deployment stopped halfway resumes, a finished one sends nothing again, a changed file and a
file that does not fit the chain are refused before anything is sent."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from offchain import WAD
from offchain.protocol.deploy_config import DeployConfigError, parse_deploy_spec
from offchain.protocol.deploy_plan import (
    ApeBackend,
    DeployRecord,
    DeployRecordError,
    DeployStepError,
    execute,
    plan,
)
from scripts.deploy import deploy

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "testnet.example.yaml"


class StopsAfter(ApeBackend):
    """An ape backend whose transactions fail from the ``n``-th on (a node gone mid-way)."""

    def __init__(self, n: int, *args: Any) -> None:
        super().__init__(*args)
        self.left = n

    def _spend(self) -> None:
        if self.left == 0:
            raise ConnectionError("node went away")
        self.left -= 1

    def deploy(self, contract: str, args: Any) -> tuple[str, str]:
        self._spend()
        return super().deploy(contract, args)

    def transact(self, contract: str, address: str, fn: str, args: Any) -> str:
        self._spend()
        return super().transact(contract, address, fn, args)


@pytest.fixture
def example_on_mocks(project, owner, chain) -> dict:
    """The example file with this chain's id and devnet mocks for its collateral and feeds."""
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    feeds = [project.MockPriceFeed.deploy(8, p * 10**8, sender=owner) for p in (60_000, 3_000)]
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["chain_id"] = chain.chain_id
    raw["collateral"] = token.address
    for market, feed in zip(raw["markets"], feeds, strict=True):
        market["engine"]["feed"] = feed.address
    return raw


def test_deploy__example_file_on_anvil_resumes_and_refuses_a_changed_file(
    example_on_mocks, owner, project, tmp_path, w3
):
    spec = parse_deploy_spec(example_on_mocks)
    record = tmp_path / "testnet.deployment.json"
    steps = plan(spec)
    nonce = w3.eth.get_transaction_count(owner.address)

    deploy(spec, owner, project, record_path=record, dry_run=True, echo=lambda s: None)
    assert w3.eth.get_transaction_count(owner.address) == nonce and not record.exists()

    half = StopsAfter(6, project, owner, owner.provider.web3)
    with pytest.raises(DeployStepError, match="node went away; the 6 step"):
        execute(steps, half, DeployRecord.open(record, spec.config_hash(), *_who(half)))
    assert w3.eth.get_transaction_count(owner.address) == nonce + 6

    lines: list[str] = []
    done = deploy(spec, owner, project, record_path=record, echo=lines.append)

    assert w3.eth.get_transaction_count(owner.address) == nonce + len(steps)  # none twice
    assert any(line.startswith("resuming") for line in lines)
    registry = project.RiskParameterRegistry.at(done.address("registry"))
    engine = project.MarginEngine.at(done.address("engine"))
    assert registry.signer_threshold() == 2
    assert all(registry.is_keeper(k) for k in spec.keepers)
    for m in spec.markets:
        assert registry.initial_ratio(m.market_id) == m.initial_ratio
        assert engine.market_config(m.market_id).feed == m.feed
    assert engine.price_bounds(1) == (1 * WAD, 10**9 * WAD)
    assert all(engine.is_exchange(x) for x in spec.exchanges)
    assert engine.owner() == owner.address == registry.owner()

    deploy(spec, owner, project, record_path=record, echo=lambda s: None)  # again: complete
    assert w3.eth.get_transaction_count(owner.address) == nonce + len(steps)

    changed = copy.deepcopy(example_on_mocks)
    changed["markets"][0]["engine"]["oi_cap_usd"] = 60_000_000
    with pytest.raises(DeployRecordError, match="written for another configuration"):
        deploy(parse_deploy_spec(changed), owner, project, record_path=record, echo=print)


def _who(backend: ApeBackend) -> tuple[int, str]:
    return backend.chain_id(), backend.deployer


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.__setitem__("chain_id", 1), "chain_id: the file pins 1 but the node is"),
        (
            lambda d: d.__setitem__("collateral", "0x" + "ab" * 20),
            "collateral: no contract at 0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB on chain",
        ),
        (
            lambda d: d["markets"][1]["engine"].__setitem__("feed", "0x" + "cd" * 20),
            "markets[1].engine.feed: no contract at",
        ),
        (
            lambda d: d["markets"][0]["engine"].__setitem__("max_answer", 10**33),
            "max_answer: 1000000000000000000000000000000000 at 8 decimals is above",
        ),
    ],
)
def test_deploy__what_does_not_fit_the_chain_is_refused_before_sending(
    example_on_mocks, owner, project, tmp_path, w3, edit, message
):
    data = copy.deepcopy(example_on_mocks)
    edit(data)
    nonce = w3.eth.get_transaction_count(owner.address)
    with pytest.raises(DeployConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        deploy(parse_deploy_spec(data), owner, project, record_path=tmp_path / "r.json")
    assert w3.eth.get_transaction_count(owner.address) == nonce
    assert not (tmp_path / "r.json").exists()
