"""The deployment plan and its record, on an in-memory chain: what runs, what resumes, what is
refused. (``tests/integration/test_deploy.py`` runs the same plan on anvil.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from offchain.protocol.deploy_config import load_deploy_spec
from offchain.protocol.deploy_plan import (
    STEP_BUILDERS,
    DeployRecord,
    DeployRecordError,
    DeployStepError,
    Ref,
    TokenScale,
    create_address,
    execute,
    plan,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "testnet.example.yaml"
DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


class FakeChain:
    """A backend that records every transaction; ``fail_at`` makes that transaction raise (after
    it was sent, with ``mined=True``, as a crash between sending and recording does)."""

    def __init__(self, fail_at: int | None = None, mined: bool = False) -> None:
        self.deployer = DEPLOYER
        self.sent: list[tuple] = []
        self.code: set[str] = set()
        self.state: dict[tuple, Any] = {}
        self.fail_at = fail_at
        self.mined = mined

    def chain_id(self) -> int:
        return 11155111

    def nonce(self) -> int:
        return len(self.sent)

    def has_code(self, address: str) -> bool:
        return address in self.code

    def _maybe_fail(self) -> None:
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            if self.mined:
                return
            raise RuntimeError("registry: tier rates decreasing")

    def deploy(self, contract: str, args: Any) -> tuple[str, str]:
        self._maybe_fail()
        address = create_address(self.deployer, self.nonce())
        self.sent.append(("deploy", contract, tuple(args)))
        self.code.add(address)
        self._crash_after_send()
        return address, f"0x{len(self.sent):064x}"

    def transact(self, contract: str, address: str, fn: str, args: Any) -> str:
        self._maybe_fail()
        self.sent.append((fn, address, tuple(args)))
        if fn == "add_keeper":
            self.state[("is_keeper", address, args[0])] = True
        if fn == "set_signer_threshold":
            self.state[("signer_threshold", address)] = args[0]
        if fn == "configure_market":
            self.state[("is_configured", address, args[0])] = True
        if fn == "set_exchange":
            self.state[("is_exchange", address, args[0])] = True
        if fn == "set_engine":
            self.state[("engine", address)] = args[0]
        if fn == "set_push_registry":
            view = "scenario_registry" if args[0] == 1 else "profile_registry"
            self.state[(view, address)] = args[1]
        self._crash_after_send()
        return f"0x{len(self.sent):064x}"

    def _crash_after_send(self) -> None:
        if self.mined and self.fail_at is not None and len(self.sent) == self.fail_at + 1:
            raise KeyboardInterrupt  # the process dies after the node took the transaction

    def view(self, contract: str, address: str, fn: str, args: Any) -> Any:
        if fn == "decimals":
            return 6  # the collateral: a 6-decimal token
        return self.state.get((fn, address, *args), 1 if fn == "signer_threshold" else False)


@pytest.fixture
def spec():
    return load_deploy_spec(EXAMPLE)


def test_create_address__matches_the_devnet_first_contract():
    # anvil's first account deploys its first contract (nonce 0) at this well-known address
    assert create_address(DEPLOYER, 0) == "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_plan__steps_in_dependency_order(spec):
    keys = [s.key for s in plan(spec)]
    assert keys[0] == "registry" and keys[4] == "signer_threshold"
    # The engine's parts, the engine, then the registry's push into it; then the registries
    # that push accounts' risk into it and the relay; only then are markets listed.
    assert keys[5:14] == [
        "engine:trades",
        "engine:liquidations",
        "engine:governance",
        "engine",
        "engine:push",
        "scenarios",
        "profiles",
        "engine:scenarios",
        "engine:profiles",
    ]
    assert keys.index("relay") < keys.index("market:1:registry") < keys.index("market:1:engine")
    assert "market:1:price_bounds" in keys and "market:2:price_bounds" not in keys
    # Funding reserves with their market; scenario groups once their markets are configured;
    # the class bounds before the classes; exchanges last.
    assert keys.index("market:1:engine") < keys.index("market:1:funding_reserve")
    assert keys.index("market:2:registry") < keys.index("group:1") < keys.index("profiles:bounds")
    assert keys.index("profiles:bounds") < keys.index("profiles:class:1")
    assert keys[-1] == "exchange:0x4444444444444444444444444444444444444444"
    engine = next(s for s in plan(spec) if s.key == "engine")
    parts = (Ref("engine:trades"), Ref("engine:liquidations"), Ref("engine:governance"))
    assert engine.args == (spec.collateral, Ref("registry"), *parts)
    trades = next(s for s in plan(spec) if s.key == "engine:trades")
    assert trades.args == (spec.collateral, TokenScale(spec.collateral))
    assert len(STEP_BUILDERS) == 8  # a new contract is one more builder


def test_execute__fresh_deployment_records_every_step(spec, tmp_path):
    chain = FakeChain()
    record = DeployRecord.open(tmp_path / "r.json", spec.config_hash(), 11155111, DEPLOYER)

    execute(plan(spec), chain, record)

    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["complete"] is True and doc["pending"] is None
    assert doc["config_hash"] == spec.config_hash() and doc["chain_id"] == 11155111
    assert len(doc["steps"]) == len(plan(spec)) == len(chain.sent)
    assert doc["steps"]["registry"]["address"] == create_address(DEPLOYER, 0)
    add_market = next(s for s in chain.sent if s[0] == "add_market")
    assert add_market[1] == doc["steps"]["engine"]["address"]  # Ref resolved


def test_execute__failure_keeps_what_was_done_and_a_rerun_resumes(spec, tmp_path):
    path = tmp_path / "r.json"
    at = [s.key for s in plan(spec)].index("market:1:engine")  # one transaction per step
    broken = FakeChain(fail_at=at)
    record = DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER)
    with pytest.raises(DeployStepError) as excinfo:
        execute(plan(spec), broken, record)
    message = str(excinfo.value)
    assert "step 'market:1:engine' (MarginEngine.add_market at 0x" in message
    assert f"registry: tier rates decreasing; the {at} step(s) done are kept in" in message
    assert len(json.loads(path.read_text())["steps"]) == at

    broken.fail_at = None  # fixed; the same command again
    resumed = DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER)
    execute(plan(spec), broken, resumed)

    assert len(broken.sent) == len(plan(spec))  # nothing deployed or sent twice
    deploys = sum(s.kind == "deploy" for s in plan(spec))
    assert [s[0] for s in broken.sent].count("deploy") == deploys


def test_execute__complete_record_sends_nothing(spec, tmp_path):
    chain = FakeChain()
    path = tmp_path / "r.json"
    execute(plan(spec), chain, DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER))
    sent = len(chain.sent)
    execute(plan(spec), chain, DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER))
    assert len(chain.sent) == sent


@pytest.mark.parametrize("step", [0, 1])  # a deployment, then a call
def test_execute__crash_after_sending_is_adopted_not_resent(spec, tmp_path, step):
    path = tmp_path / "r.json"
    chain = FakeChain(fail_at=step, mined=True)
    with pytest.raises(KeyboardInterrupt):
        execute(plan(spec), chain, DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER))
    doc = json.loads(path.read_text())
    assert doc["pending"] == {"key": plan(spec)[step].key, "nonce": step}
    chain.fail_at = None

    execute(plan(spec), chain, DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER))

    assert len(chain.sent) == len(plan(spec))  # the sent transaction was not sent again
    entry = json.loads(path.read_text())["steps"][plan(spec)[step].key]
    assert entry["recovered"] is True


def test_open__refuses_another_config_chain_or_deployer(spec, tmp_path):
    path = tmp_path / "r.json"
    execute(
        plan(spec), FakeChain(), DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER)
    )
    with pytest.raises(DeployRecordError, match="written for another configuration"):
        DeployRecord.open(path, "sha256:" + "0" * 64, 11155111, DEPLOYER)
    with pytest.raises(DeployRecordError, match="records chain 11155111, the node is chain 1"):
        DeployRecord.open(path, spec.config_hash(), 1, DEPLOYER)
    with pytest.raises(DeployRecordError, match="only the owner can finish"):
        DeployRecord.open(path, spec.config_hash(), 11155111, "0x" + "12" * 20)
    path.write_text("{not json")
    with pytest.raises(DeployRecordError, match="not a deployment record"):
        DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER)


def test_execute__recorded_contract_without_code_is_refused(spec, tmp_path):
    path = tmp_path / "r.json"
    execute(
        plan(spec), FakeChain(), DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER)
    )
    fresh_node = FakeChain()  # e.g. a devnet that was restarted
    with pytest.raises(DeployRecordError, match="no code there"):
        execute(
            plan(spec), fresh_node, DeployRecord.open(path, spec.config_hash(), 11155111, DEPLOYER)
        )
    assert fresh_node.sent == []
