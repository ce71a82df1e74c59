"""Landing a tick's batches (no chain): risk and scenario batches through the relay in one
transaction, each alone when the chain already holds one, profiles on their own, nothing while
paused, co-signatures for every kind, and the dry run's data on stdout."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from eth_account import Account

from offchain import WAD
from offchain.bots.keeper import Decision, Keeper, KeeperConfig, KeeperMarket, TickResult
from offchain.bots.keeper_models import EwmaRiskModel
from offchain.bots.keeper_profiles import ProfileDecision
from offchain.bots.keeper_scenarios import ScenarioDecision
from offchain.protocol.portfolio_math import pack_shocks
from offchain.protocol.signing import (
    ProfileUpdate,
    RiskUpdate,
    ScenarioUpdate,
    recover_signer,
)
from offchain.protocol.tx_sender import SentTx, SimulationReverted

NOW = 1_800_000_000
HASH = b"\x07" * 32
REGISTRY = "0x" + "a1" * 20
SCENARIOS = "0x" + "a2" * 20
PROFILES = "0x" + "a3" * 20
RELAY = "0x" + "a4" * 20
KEEPERS = [Account.from_key(bytes([i + 9]) * 32) for i in range(2)]
DUPLICATE = "registry: observed_at not after the last update"


@dataclass
class FakeRegistry:
    address: str = REGISTRY
    is_paused: bool = False
    threshold: int = 1

    def paused(self) -> bool:
        return self.is_paused

    def encode_submit(self, updates, signatures) -> bytes:
        return b"risk"

    def is_keeper(self, signer: str) -> bool:
        return signer in {k.address for k in KEEPERS}

    def signer_threshold(self) -> int:
        return self.threshold


class FakeSubmitClient:
    def __init__(self, address: str, tag: bytes) -> None:
        self.address = address
        self.tag = tag

    def encode_submit(self, updates, signatures) -> bytes:
        return self.tag


class FakeRelay:
    address = RELAY

    def encode_relay(self, updates, update_signatures, scenarios, scenario_signatures) -> bytes:
        assert update_signatures and scenario_signatures
        return b"relay"


@dataclass
class FakeSender:
    """Records every transaction; ``revert`` maps an address to a simulation revert reason."""

    revert: dict[str, str] = field(default_factory=dict)
    sent: list[tuple[str, bytes, str]] = field(default_factory=list)

    def recover(self) -> None:
        pass

    def send(self, to: str, data: bytes, label: str = "tx", value: int = 0) -> SentTx:
        if to in self.revert:
            raise SimulationReverted(self.revert[to], label, to)
        self.sent.append((to, data, label))
        return SentTx(
            label, "0x" + "00" * 32, len(self.sent), 100 + len(self.sent), 50_000, 1, 1, 1
        )


def keeper(sender=None, registry=None, relay=True, key=KEEPERS[0], cosign_dir=None, echo=None):
    config = KeeperConfig(
        (KeeperMarket(1, "0x" + "11" * 20, "BTC"), KeeperMarket(2, "0x" + "12" * 20, "ETH")),
        cosign_dir=cosign_dir,
    )
    k = Keeper(
        config,
        registry or FakeRegistry(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        EwmaRiskModel(),
        key,
        sender,  # type: ignore[arg-type]
        31337,
        echo=echo or (lambda s: None),
        relay=FakeRelay() if relay else None,  # type: ignore[arg-type]
    )
    k.scenarios = SimpleNamespace(client=FakeSubmitClient(SCENARIOS, b"scen"))  # type: ignore[assignment]
    k.profiles = SimpleNamespace(client=FakeSubmitClient(PROFILES, b"prof"))  # type: ignore[assignment]
    return k


def tick(risk=True, scenario=True, profile=False) -> TickResult:
    decisions = []
    if risk:
        u = RiskUpdate(1, 3 * WAD, 0, NOW, NOW + 600, HASH)
        decisions.append(Decision(1, "update", "test", u))
    result = TickResult(7, NOW, decisions)
    if scenario:
        words = (pack_shocks([-500, 500]), pack_shocks([-600, 600]))
        su = ScenarioUpdate(1, 2, words, NOW, NOW + 600, HASH)
        result.scenarios = [
            ScenarioDecision(1, "update", "test", su, ((-500, 500), (-600, 600)), (1, 2))
        ]
    if profile:
        pu = ProfileUpdate("0x" + "77" * 20, 0, 4, NOW, NOW + 600, HASH)
        result.profiles = [ProfileDecision(pu.owner, 0, 4, "update", "liquidated", pu)]
    return result


def test_submit__risk_and_scenarios_land_together_through_the_relay():
    sender = FakeSender()
    result = tick()
    keeper(sender).relay(result)
    assert [(to, data) for to, data, _ in sender.sent] == [(RELAY, b"relay")]
    assert result.relayed and result.sent is not None and result.transactions == [result.sent]


def test_submit__without_a_relay_each_batch_is_its_own_transaction():
    sender = FakeSender()
    result = tick(profile=True)
    keeper(sender, relay=False).relay(result)
    assert [to for to, _, _ in sender.sent] == [REGISTRY, SCENARIOS, PROFILES]
    assert not result.relayed and len(result.transactions) == 3
    assert result.sent is not None and result.sent.label.startswith("risk batch [1]")


def test_submit__relay_refused_for_a_batch_already_on_chain_sends_the_other_alone():
    sender = FakeSender(revert={RELAY: DUPLICATE, REGISTRY: DUPLICATE})
    result = tick()
    keeper(sender).relay(result)
    assert [to for to, _, _ in sender.sent] == [SCENARIOS]
    assert result.dropped == DUPLICATE and result.sent is None and not result.relayed


def test_submit__any_other_revert_is_a_failure():
    sender = FakeSender(revert={RELAY: "scenarios: shock beyond its bound"})
    with pytest.raises(SimulationReverted, match="shock beyond its bound"):
        keeper(sender).relay(tick())


def test_submit__paused_registry_sends_nothing():
    sender = FakeSender()
    result = tick(profile=True)
    keeper(sender, registry=FakeRegistry(is_paused=True)).relay(result)
    assert sender.sent == [] and result.dropped == "registry paused"


def test_submit__dry_run_prints_batches_and_each_groups_scenarios():
    lines: list[str] = []
    k = keeper(None, echo=lines.append)
    k.reference = lambda d, now: [f"  reference books of group {d.group_id}"]
    result = tick(profile=True)
    k.relay(result)
    text = "\n".join(lines)
    assert "would submit 1 update(s)" in text and "(scenario batch [1])" in text
    assert "account 0x7777777777777777777777777777777777777777/0: class 4" in text
    assert "group 1: 2 scenarios" in text
    assert "       BTC       ETH" in text and "-5.00%    -6.00%" in text
    assert "reference books of group 1" in text
    assert len(result.signatures) == 1


@pytest.mark.parametrize("kind", ["scenario", "profile"])
def test_cosign__scenario_and_profile_batches_meet_the_threshold_under_their_domain(tmp_path, kind):
    registry = FakeRegistry(threshold=2)
    senders = [FakeSender(), FakeSender()]
    result = tick(risk=False, scenario=kind == "scenario", profile=kind == "profile")
    verifying = SCENARIOS if kind == "scenario" else PROFILES
    updates = result.scenario_updates or result.profile_updates

    first = keeper(senders[0], registry, relay=False, key=KEEPERS[0], cosign_dir=str(tmp_path))
    first.relay(result)
    assert senders[0].sent == []  # one of two signatures: waiting

    second = keeper(senders[1], registry, relay=False, key=KEEPERS[1], cosign_dir=str(tmp_path))
    again = tick(risk=False, scenario=kind == "scenario", profile=kind == "profile")
    second.relay(again)
    assert [to for to, _, _ in senders[1].sent] == [verifying]
    folder = next(tmp_path.iterdir())
    signers = {
        recover_signer(updates, bytes.fromhex(p.read_text().strip()[2:]), 31337, verifying)
        for p in folder.glob("*.sig")
    }
    assert signers == {KEEPERS[0].address, KEEPERS[1].address}
