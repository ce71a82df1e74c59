"""A deployment as a table of steps, run with a record on disk so that a rerun resumes.

:func:`plan` turns a :class:`DeploySpec` into an ordered list of :class:`Step`s by running each
builder of ``STEP_BUILDERS`` in turn: mocks, registry, keepers, threshold, the engine (its three
parts, then the front, then the registry's push into it), the scenario and profile registries and
the keeper relay, markets (with their funding reserve), the scenario groups, the account
classes, exchanges. A new contract is one more builder (a function
``spec -> steps``) in that list; a step names its contract type, what it calls and a view that
tells whether its effect is already on chain. Arguments may hold :class:`Ref` s to contracts
deployed by earlier steps.

:func:`execute` runs the steps through a :class:`Backend` (ape in ``scripts/deploy.py`` and on the
devnet) and writes a :class:`DeployRecord` after every step: addresses, transaction hashes, the
configuration hash, the chain id and the deployer. Run again with the same record, it skips what
is done and goes on from the first step that is not: a deployment that stopped halfway (a revert,
a dead node, Ctrl-C) is finished by running the same command again. A record written for another
configuration, chain or deployer is refused, never resumed. Before each transaction the record
notes the deployer's nonce; if the process dies after sending and before writing, the next run
finds the contract at its ``CREATE`` address (or the call's effect through its check view) and
records it instead of sending it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import rlp
from eth_utils import keccak, to_checksum_address

from offchain.protocol.config_files import one_line
from offchain.protocol.deploy_config import DeploySpec

RECORD_VERSION = 1


class DeployRecordError(RuntimeError):
    """The record cannot be resumed (other config, chain or deployer; contract gone)."""


class DeployStepError(RuntimeError):
    """A step failed on chain; the message names the step, the call and the address."""


@dataclass(frozen=True)
class Ref:
    """The address of the contract deployed by step ``key``, resolved when the step runs."""

    key: str


@dataclass(frozen=True)
class TokenScale:
    """``10**(18 - decimals)`` of the ERC-20 at ``token`` (an address or a :class:`Ref`),
    read from the chain when the step runs: the engine converts token units to WAD with it."""

    token: Any


# Seconds a keeper-signed account profile stays in force before it expires to the default, when
# the deployment has no ``profiles`` section (the shipped one says the same: deploy/risk.yaml).
PROFILE_HEARTBEAT = 7 * 86_400


@dataclass(frozen=True)
class Step:
    """One transaction of a deployment.

    ``kind`` is ``"deploy"`` (``contract`` with ``args``) or ``"call"`` (``fn(*args)`` on the
    contract deployed by step ``target``). ``check`` is an optional view ``(fn, args, expected)``
    on the target that equals ``expected`` once the step's effect is on chain.
    """

    key: str
    kind: str
    contract: str
    args: tuple[Any, ...] = ()
    target: str | None = None
    fn: str | None = None
    check: tuple[str, tuple[Any, ...], Any] | None = None
    describe: str = ""


# ---------------------------------------------------------------------------------------------
# The table


def _mock_steps(spec: DeploySpec) -> Iterable[Step]:
    if spec.mock_collateral is not None:
        t = spec.mock_collateral
        yield Step("token", "deploy", "MockERC20", (t.name, t.symbol, t.decimals))
    for m in spec.markets:
        if m.mock_feed is not None:
            f = m.mock_feed
            yield Step(f"feed:{m.market_id}", "deploy", "MockPriceFeed", (f.decimals, f.answer))


def _registry_steps(spec: DeploySpec) -> Iterable[Step]:
    yield Step("registry", "deploy", "RiskParameterRegistry", (spec.guardian,))
    for keeper in spec.keepers:
        yield Step(
            f"keeper:{keeper}",
            "call",
            "RiskParameterRegistry",
            (keeper,),
            target="registry",
            fn="add_keeper",
            check=("is_keeper", (keeper,), True),
        )
    if spec.signer_threshold != 1:  # the registry starts at 1
        yield Step(
            "signer_threshold",
            "call",
            "RiskParameterRegistry",
            (spec.signer_threshold,),
            target="registry",
            fn="set_signer_threshold",
            check=("signer_threshold", (), spec.signer_threshold),
        )


def _engine_steps(spec: DeploySpec) -> Iterable[Step]:
    """The engine's three delegatecall parts, the engine, and the registry's push into it (set
    before any market is listed: listing checks that the registry pushes to this engine)."""
    collateral = spec.collateral or Ref("token")
    yield Step("engine:trades", "deploy", "EngineTrades", (collateral, TokenScale(collateral)))
    yield Step("engine:liquidations", "deploy", "EngineLiquidations", ())
    yield Step("engine:governance", "deploy", "EngineGovernance", (Ref("registry"),))
    parts = (Ref("engine:trades"), Ref("engine:liquidations"), Ref("engine:governance"))
    yield Step("engine", "deploy", "MarginEngine", (collateral, Ref("registry"), *parts))
    yield Step(
        "engine:push",
        "call",
        "RiskParameterRegistry",
        (Ref("engine"),),
        target="registry",
        fn="set_engine",
        check=("engine", (), Ref("engine")),
    )


def _registry_of_accounts_steps(spec: DeploySpec) -> Iterable[Step]:
    """The scenario and profile registries (they push into the engine) and the keeper relay."""
    yield Step("scenarios", "deploy", "ScenarioRegistry", (Ref("registry"), Ref("engine")))
    heartbeat = spec.profiles.heartbeat if spec.profiles is not None else PROFILE_HEARTBEAT
    yield Step("profiles", "deploy", "ProfileRegistry", (Ref("registry"), Ref("engine"), heartbeat))
    for kind, key, view in (
        (1, "scenarios", "scenario_registry"),
        (2, "profiles", "profile_registry"),
    ):
        yield Step(
            f"engine:{key}",
            "call",
            "MarginEngine",
            (kind, Ref(key)),
            target="engine",
            fn="set_push_registry",
            check=(view, (), Ref(key)),
        )
    yield Step("relay", "deploy", "KeeperRelay", (Ref("registry"), Ref("scenarios")))


def _market_steps(spec: DeploySpec) -> Iterable[Step]:
    for m in spec.markets:
        tiers = [(t.notional_floor, t.maintenance_rate) for t in m.tiers]
        yield Step(
            f"market:{m.market_id}:registry",
            "call",
            "RiskParameterRegistry",
            (m.market_id, tiers, m.initial_ratio, m.guardrails.as_tuple()),
            target="registry",
            fn="configure_market",
            check=("is_configured", (m.market_id,), True),
            describe=f"market {m.label}",
        )
        feed = m.feed or Ref(f"feed:{m.market_id}")
        config = (feed, *m.engine_config("0x" + "00" * 20)[1:])
        yield Step(
            f"market:{m.market_id}:engine",
            "call",
            "MarginEngine",
            (m.market_id, config),
            target="engine",
            fn="add_market",
            describe=f"market {m.label}",
        )
        if m.price_bounds is not None:
            yield Step(
                f"market:{m.market_id}:price_bounds",
                "call",
                "MarginEngine",
                (m.market_id, *m.price_bounds),
                target="engine",
                fn="set_price_bounds",
                describe=f"market {m.label}",
            )
        if m.funding_reserve_seconds:
            yield Step(
                f"market:{m.market_id}:funding_reserve",
                "call",
                "MarginEngine",
                (m.market_id, m.funding_reserve_seconds),
                target="engine",
                fn="set_funding_reserve",
                check=("funding_reserve_seconds", (m.market_id,), m.funding_reserve_seconds),
                describe=f"market {m.label}",
            )


def _group_steps(spec: DeploySpec) -> Iterable[Step]:
    """Scenario groups, once their markets are configured in the risk registry."""
    for g in spec.scenario_groups:
        yield Step(
            f"group:{g.group_id}",
            "call",
            "ScenarioRegistry",
            (g.group_id, g.as_tuple()),
            target="scenarios",
            fn="configure_group",
            check=("group_of", (g.markets[0],), g.group_id),
            describe=f"scenario group {g.group_id}",
        )


def _class_steps(spec: DeploySpec) -> Iterable[Step]:
    """The profile registry's class bounds, then each class (both idempotent)."""
    p = spec.profiles
    if p is None:
        return
    yield Step(
        "profiles:bounds",
        "call",
        "ProfileRegistry",
        (p.min_multiplier, p.max_multiplier),
        target="profiles",
        fn="set_class_bounds",
    )
    for c in p.classes:
        yield Step(
            f"profiles:class:{c.class_id}",
            "call",
            "ProfileRegistry",
            (c.class_id, c.as_tuple()),
            target="profiles",
            fn="define_class",
            describe=f"account class {c.class_id}",
        )


def _exchange_steps(spec: DeploySpec) -> Iterable[Step]:
    for exchange in spec.exchanges:
        yield Step(
            f"exchange:{exchange}",
            "call",
            "MarginEngine",
            (exchange, True),
            target="engine",
            fn="set_exchange",
            check=("is_exchange", (exchange,), True),
        )


# In order. A contract added to the system is one more builder here.
STEP_BUILDERS: list[Callable[[DeploySpec], Iterable[Step]]] = [
    _mock_steps,
    _registry_steps,
    _engine_steps,
    _registry_of_accounts_steps,
    _market_steps,
    _group_steps,
    _class_steps,
    _exchange_steps,
]


def plan(spec: DeploySpec) -> list[Step]:
    """Every step of the deployment of ``spec``, in order (keys are unique)."""
    steps = [step for build in STEP_BUILDERS for step in build(spec)]
    keys = [s.key for s in steps]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate step keys in the plan: {keys}")
    return steps


# ---------------------------------------------------------------------------------------------
# The record


@dataclass
class DeployRecord:
    """What a deployment has done so far; ``path`` None keeps it in memory only."""

    config_hash: str
    chain_id: int
    deployer: str
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, Any] | None = None
    complete: bool = False
    path: Path | None = None

    def address(self, key: str) -> str:
        try:
            return str(self.steps[key]["address"])
        except KeyError:
            raise DeployRecordError(f"step {key!r} has no deployed address yet") from None

    @property
    def addresses(self) -> dict[str, str]:
        return {k: v["address"] for k, v in self.steps.items() if "address" in v}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "config_hash": self.config_hash,
            "chain_id": self.chain_id,
            "deployer": self.deployer,
            "complete": self.complete,
            "pending": self.pending,
            "steps": self.steps,
        }

    def save(self) -> None:
        """Write the record atomically (a crash leaves the old or the new file, never half)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.path)

    @classmethod
    def open(
        cls, path: Path | None, config_hash: str, chain_id: int, deployer: str
    ) -> DeployRecord:
        """The record at ``path`` (a new one if there is none); refuses one written for another
        configuration, chain or deployer."""
        if path is None or not path.exists():
            return cls(config_hash, chain_id, to_checksum_address(deployer), path=path)
        try:
            doc = json.loads(path.read_text())
            record = cls(
                config_hash=str(doc["config_hash"]),
                chain_id=int(doc["chain_id"]),
                deployer=str(doc["deployer"]),
                steps=dict(doc.get("steps") or {}),
                pending=doc.get("pending"),
                complete=bool(doc.get("complete", False)),
                path=path,
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DeployRecordError(f"{path}: not a deployment record ({one_line(exc)})") from None
        if record.config_hash != config_hash:
            raise DeployRecordError(
                f"{path} was written for another configuration ({record.config_hash[:19]}..,"
                f" the file now gives {config_hash[:19]}..): a changed configuration is not"
                " resumed; restore the file, or deploy afresh with another --record"
            )
        if record.chain_id != chain_id:
            raise DeployRecordError(
                f"{path} records chain {record.chain_id}, the node is chain {chain_id}"
            )
        if record.deployer.lower() != deployer.lower():
            raise DeployRecordError(
                f"{path} was deployed by {record.deployer}, not {deployer}: only the owner can"
                " finish the configuration"
            )
        return record


# ---------------------------------------------------------------------------------------------
# Running


class Backend(Protocol):
    """What :func:`execute` needs from a chain library (see ``ApeBackend``)."""

    deployer: str

    def chain_id(self) -> int: ...
    def nonce(self) -> int: ...
    def has_code(self, address: str) -> bool: ...
    def deploy(self, contract: str, args: Sequence[Any]) -> tuple[str, str]: ...
    def transact(self, contract: str, address: str, fn: str, args: Sequence[Any]) -> str: ...
    def view(self, contract: str, address: str, fn: str, args: Sequence[Any]) -> Any: ...


def create_address(deployer: str, nonce: int) -> str:
    """The address a ``CREATE`` by ``deployer`` at ``nonce`` deploys to."""
    raw = keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))[12:]
    return to_checksum_address(raw)


def _resolve(value: Any, record: DeployRecord, backend: Backend | None = None) -> Any:
    if isinstance(value, Ref):
        return record.address(value.key)
    if isinstance(value, TokenScale):
        if backend is None:
            raise ValueError("a token scale is read from the chain: no backend given")
        token = _resolve(value.token, record, backend)
        return 10 ** (18 - int(backend.view("MockERC20", token, "decimals", ())))
    if isinstance(value, tuple):
        return tuple(_resolve(v, record, backend) for v in value)
    if isinstance(value, list):
        return [_resolve(v, record, backend) for v in value]
    return value


def _effect_on_chain(step: Step, record: DeployRecord, backend: Backend) -> bool:
    if step.check is None or step.target is None:
        return False
    fn, args, expected = step.check
    address = record.address(step.target)
    got = backend.view(step.contract, address, fn, _resolve(args, record))
    expected = _resolve(expected, record)
    if isinstance(expected, str) and isinstance(got, str):
        return got.lower() == expected.lower()
    return bool(got == expected)


def _recover_pending(steps: dict[str, Step], record: DeployRecord, backend: Backend) -> None:
    """After a crash between sending and recording: adopt what the chain shows was done."""
    pending = record.pending
    if not pending:
        return
    step = steps.get(pending["key"])
    if step is not None and step.key not in record.steps and backend.nonce() > pending["nonce"]:
        if step.kind == "deploy":
            address = create_address(record.deployer, int(pending["nonce"]))
            if backend.has_code(address):
                record.steps[step.key] = {"address": address, "tx": None, "recovered": True}
        elif _effect_on_chain(step, record, backend):
            record.steps[step.key] = {"tx": None, "recovered": True}
    record.pending = None
    record.save()


def execute(
    steps: Sequence[Step],
    backend: Backend,
    record: DeployRecord,
    on_step: Callable[[Step, dict[str, Any], bool], None] | None = None,
) -> DeployRecord:
    """Run ``steps`` not yet in ``record``; the record is saved after each.

    ``on_step(step, entry, sent)`` reports each step (``sent`` False: found done). Raises
    :class:`DeployStepError` naming the step, the call and the address when one fails; the
    record then holds every step before it.
    """
    by_key = {s.key: s for s in steps}
    resuming = bool(record.steps or record.pending)
    _recover_pending(by_key, record, backend)
    for key, entry in record.steps.items():
        if "address" in entry and not backend.has_code(entry["address"]):
            raise DeployRecordError(
                f"{record.path}: step {key!r} recorded {entry['address']} but there is no code"
                " there: another network, or a node that was reset?"
            )
    for step in steps:
        if step.key in record.steps:
            if on_step:
                on_step(step, record.steps[step.key], False)
            continue
        # Calls only go to contracts of this plan: on a fresh run none can be done already.
        if resuming and step.kind == "call" and _effect_on_chain(step, record, backend):
            record.steps[step.key] = {"tx": None, "found": True}
            record.save()
            if on_step:
                on_step(step, record.steps[step.key], False)
            continue
        args = _resolve(step.args, record, backend)
        what = f"deploy {step.contract}"
        record.pending = {"key": step.key, "nonce": backend.nonce()}
        record.save()
        try:
            if step.kind == "deploy":
                address, tx = backend.deploy(step.contract, args)
                entry: dict[str, Any] = {"address": address, "tx": tx}
            else:
                assert step.target is not None and step.fn is not None
                target = record.address(step.target)
                what = f"{step.contract}.{step.fn} at {target}"
                entry = {"tx": backend.transact(step.contract, target, step.fn, args)}
        except Exception as exc:
            kept = (
                f"; the {len(record.steps)} step(s) done are kept in {record.path}, rerun to resume"
                if record.path
                else ""
            )
            raise DeployStepError(
                f"step {step.key!r} ({what}) failed: {one_line(exc) or type(exc).__name__}{kept}"
            ) from exc
        record.steps[step.key] = entry
        record.pending = None
        record.save()
        if on_step:
            on_step(step, entry, True)
    record.complete = True
    record.save()
    return record


class ApeBackend:
    """:class:`Backend` over an ape ``project`` and account (the provider ape is connected to)."""

    def __init__(self, project: Any, account: Any, web3: Any) -> None:
        self.project = project
        self.account = account
        self.web3 = web3
        self.deployer = to_checksum_address(account.address)
        self._instances: dict[str, Any] = {}

    def chain_id(self) -> int:
        return int(self.web3.eth.chain_id)

    def nonce(self) -> int:
        return int(self.web3.eth.get_transaction_count(self.deployer, "latest"))

    def has_code(self, address: str) -> bool:
        return bool(bytes(self.web3.eth.get_code(to_checksum_address(address))))

    def deploy(self, contract: str, args: Sequence[Any]) -> tuple[str, str]:
        instance = getattr(self.project, contract).deploy(*args, sender=self.account)
        address = to_checksum_address(instance.address)
        self._instances[address] = instance
        return address, str(instance.txn_hash)

    def _at(self, contract: str, address: str) -> Any:
        if address not in self._instances:
            self._instances[address] = getattr(self.project, contract).at(address)
        return self._instances[address]

    def transact(self, contract: str, address: str, fn: str, args: Sequence[Any]) -> str:
        receipt = getattr(self._at(contract, address), fn)(*args, sender=self.account)
        return str(receipt.txn_hash)

    def view(self, contract: str, address: str, fn: str, args: Sequence[Any]) -> Any:
        return getattr(self._at(contract, address), fn)(*args)


__all__ = [
    "STEP_BUILDERS",
    "ApeBackend",
    "Backend",
    "DeployRecord",
    "DeployRecordError",
    "DeployStepError",
    "Ref",
    "Step",
    "create_address",
    "execute",
    "plan",
]
