"""Signing and landing a tick's batches: risk updates, scenario updates, account profiles.

Each kind is one EIP-712 batch under its registry's domain (:mod:`offchain.protocol.signing`),
signed by the keeper and, with ``keeper.cosign`` (a shared folder or Redis), completed to the
registry's k-of-n threshold by the same transport as risk batches
(:meth:`offchain.bots.keeper.Keeper.cosign`, given the batch's verifying registry). Then:

- a risk batch and a scenario batch of the same tick go through the ``KeeperRelay`` in **one
  transaction** when a relay is configured, so a market's multiplier and its group's scenarios
  move together (both apply or neither). If the relay's simulation reverts because the chain
  already holds one of them (a re-sent batch), each is sent on its own so the other still lands;
- otherwise, and for profile batches (which the relay does not carry), each batch is its own
  transaction, simulated first; a batch the chain already holds (same ``observed_at``) is dropped,
  and so is one whose transaction reverted because a co-signing keeper relayed it first;
- while the risk registry is paused nothing is sent (the scenario and profile registries share
  its pause);
- no sender (dry run): every batch is printed, and each scenario group's shocks with the
  maintenance of the reference books under them (:mod:`offchain.bots.keeper_reference`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offchain import WAD
from offchain.protocol.portfolio_math import unpack_shocks
from offchain.protocol.signing import ProfileUpdate, RiskUpdate, ScenarioUpdate, sign_batch
from offchain.protocol.tx_sender import SentTx, SimulationReverted, TxFailed

if TYPE_CHECKING:
    from offchain.bots.keeper import Keeper, TickResult

log = logging.getLogger("dmm.keeper")

# A registry's reason for an update it already holds: a re-sent batch is dropped, not an error.
DUPLICATE_REASONS = ("observed_at not after the last update",)
MAX_SCENARIO_BATCH = 8  # ScenarioRegistry.submit_scenarios and KeeperRelay


@dataclass
class Signed:
    """A batch with the signatures that meet the threshold (``None``: waiting for co-signers)."""

    kind: str
    updates: Sequence[Any]
    verifying: str
    signatures: list[bytes] | None

    @property
    def pushed(self) -> str:
        """What the log says was pushed (``2 update(s) [1,2]`` for a risk batch)."""
        if self.kind == "risk":
            markets = ",".join(str(u.market_id) for u in self.updates)
            return f"{len(self.updates)} update(s) [{markets}]"
        return self.label

    @property
    def label(self) -> str:
        if self.kind == "risk":
            return f"risk batch [{','.join(str(u.market_id) for u in self.updates)}]"
        if self.kind == "scenario":
            return f"scenario batch [{','.join(str(u.group_id) for u in self.updates)}]"
        return f"profile batch ({len(self.updates)} account(s))"


def sign(keeper: Keeper, kind: str, updates: Sequence[Any], verifying: str) -> Signed:
    """This keeper's signature, completed by co-signers when keepers co-sign."""
    if keeper.signer is None:
        return Signed(kind, updates, verifying, [])
    assert keeper.chain_id is not None
    own = sign_batch(updates, keeper.signer.key, keeper.chain_id, verifying)
    if keeper.cosigner is not None and not keeper.dry_run:
        return Signed(kind, updates, verifying, keeper.cosign(updates, own, verifying=verifying))
    return Signed(kind, updates, verifying, [own])


def _duplicate(reason: str) -> bool:
    return any(r in reason for r in DUPLICATE_REASONS)


def send_one(keeper: Keeper, batch: Signed, to: str, data: bytes) -> SentTx | str:
    """Send one batch's transaction; the revert reason when the chain already holds it."""
    assert keeper.sender is not None
    try:
        sent = keeper.sender.send(to, data, label=batch.label)
    except SimulationReverted as exc:
        if _duplicate(exc.reason):
            log.info("%s dropped: the chain already holds it (%s)", batch.label, exc.reason)
            return exc.reason
        raise
    except TxFailed:
        relayer = keeper.relayed_elsewhere(batch.updates, batch.verifying)
        if relayer is None:
            raise
        log.info("%s dropped: another keeper (%s) relayed it first", batch.label, relayer)
        return f"relayed by {relayer} first"
    keeper.metrics.gas(sent.cost_wei)
    log.info(
        "pushed %s in block %d: gas %d, cost %.6f ETH",
        batch.pushed,
        sent.block_number,
        sent.gas_used,
        sent.cost_wei / 10**18,
    )
    return sent


def _encode(keeper: Keeper, batch: Signed) -> tuple[str, bytes]:
    assert batch.signatures is not None
    if batch.kind == "risk":
        return keeper.registry.address, keeper.registry.encode_submit(
            batch.updates, batch.signatures
        )
    client = keeper.scenarios.client if batch.kind == "scenario" else keeper.profiles.client  # type: ignore[union-attr]
    return client.address, client.encode_submit(batch.updates, batch.signatures)


def submit(keeper: Keeper, result: TickResult) -> None:
    """Sign the tick's batches and land them (module docstring); fills ``result``."""
    batches: list[Signed] = []
    if result.updates:
        risk = sign(keeper, "risk", result.updates, keeper.registry.address)
        result.signatures = list(risk.signatures or [])
        if risk.signatures is None:
            result.dropped = "waiting for co-signers"
        batches.append(risk)
    scenario_updates = result.scenario_updates
    for i in range(0, len(scenario_updates), MAX_SCENARIO_BATCH):
        assert keeper.scenarios is not None
        chunk = scenario_updates[i : i + MAX_SCENARIO_BATCH]
        batches.append(sign(keeper, "scenario", chunk, keeper.scenarios.client.address))
    if result.profile_updates:
        from offchain.bots.keeper_profiles import batches as profile_batches

        assert keeper.profiles is not None
        for chunk in profile_batches(result.profile_updates):
            batches.append(sign(keeper, "profile", chunk, keeper.profiles.client.address))
    if keeper.dry_run:
        print_dry_run(keeper, result, batches)
        return
    ready = [b for b in batches if b.signatures is not None]
    for b in batches:
        if b.signatures is None:
            log.info("%s: waiting for co-signers", b.label)
    if not ready:
        return
    if keeper.registry.paused():
        result.dropped = "registry paused"
        n = sum(len(b.updates) for b in ready)
        log.warning("registry is paused: %d signed update(s) not relayed", n)
        return
    risk = next((b for b in ready if b.kind == "risk"), None)
    scenario = next((b for b in ready if b.kind == "scenario"), None)
    relay = keeper.relay_client is not None and risk is not None and scenario is not None
    if relay and _relay_both(keeper, result, risk, scenario):  # type: ignore[arg-type]
        ready = [b for b in ready if b is not risk and b is not scenario]
    for b in ready:
        to, data = _encode(keeper, b)
        sent = send_one(keeper, b, to, data)
        if isinstance(sent, str):
            if b.kind == "risk":
                result.dropped = sent
            continue
        if b.kind == "risk":
            result.sent = sent
        result.transactions.append(sent)
        _count(keeper, b)


def _relay_both(keeper: Keeper, result: TickResult, risk: Signed, scenario: Signed) -> bool:
    """Both batches through the relay in one transaction; ``False`` when the chain already holds
    one of them (then they go separately)."""
    relay = keeper.relay_client
    assert relay is not None and keeper.sender is not None
    assert risk.signatures is not None and scenario.signatures is not None
    data = relay.encode_relay(risk.updates, risk.signatures, scenario.updates, scenario.signatures)
    label = f"relay {risk.label} + {scenario.label}"
    try:
        sent = keeper.sender.send(relay.address, data, label=label)
    except SimulationReverted as exc:
        if _duplicate(exc.reason):
            log.info("%s: one is already on chain (%s); sending each alone", label, exc.reason)
            return False
        raise
    keeper.metrics.gas(sent.cost_wei)
    log.info(
        "pushed %s in one transaction, block %d: gas %d, cost %.6f ETH",
        label,
        sent.block_number,
        sent.gas_used,
        sent.cost_wei / 10**18,
    )
    result.sent = sent
    result.relayed = True
    result.transactions.append(sent)
    _count(keeper, risk)
    _count(keeper, scenario)
    return True


def _count(keeper: Keeper, batch: Signed) -> None:
    if batch.kind == "risk":
        for u in batch.updates:
            keeper.metrics.updates_pushed.labels(str(u.market_id)).inc()
    elif batch.kind == "scenario":
        for u in batch.updates:
            keeper.metrics.updates_pushed.labels(f"group:{u.group_id}").inc()
    else:
        keeper.metrics.updates_pushed.labels("profiles").inc(len(batch.updates))


# ---------------------------------------------------------------------------------------------
# Dry run: data on stdout


def print_dry_run(keeper: Keeper, result: TickResult, batches: Sequence[Signed]) -> None:
    """Every batch, and each group's scenarios with the reference books' margins."""
    echo: Callable[[str], Any] = keeper.echo
    who = keeper.signer.address if keeper.signer else "nobody (no key)"
    for b in batches:
        echo(
            f"dry run: block {result.block}: would submit {len(b.updates)} update(s) signed by"
            f" {who} ({b.label})"
        )
        for u in b.updates:
            echo("  " + describe(u))
        for s in b.signatures or []:
            echo(f"  signature 0x{s.hex()}")
    for d in result.scenarios:
        if d.update is None:
            continue
        for line in scenario_table(d.markets, d.shocks, keeper.market_names):
            echo(line)
        if keeper.reference is not None:
            for line in keeper.reference(d, result.now):
                echo(line)


def describe(u: RiskUpdate | ScenarioUpdate | ProfileUpdate) -> str:
    """One line per update."""
    if isinstance(u, RiskUpdate):
        return (
            f"market {u.market_id}: multiplier {u.multiplier / WAD:.4f}"
            f" funding {u.funding_rate} observed_at {u.observed_at}"
            f" deadline {u.deadline} model {u.model_hash.hex()[:16]}"
        )
    if isinstance(u, ScenarioUpdate):
        return (
            f"group {u.group_id}: {u.count} scenarios, words"
            f" {', '.join(hex(w) for w in u.shocks)} observed_at {u.observed_at}"
            f" deadline {u.deadline} model {u.model_hash.hex()[:16]}"
        )
    return (
        f"account {u.owner}/{u.subaccount}: class {u.class_id} observed_at {u.observed_at}"
        f" deadline {u.deadline} model {u.model_hash.hex()[:16]}"
    )


def scenario_table(
    markets: Sequence[int], shocks: Sequence[Sequence[int]], names: dict[int, str]
) -> list[str]:
    """The shocks of one group, a scenario per line, in percent."""
    head = "  scenario " + "".join(f"{names.get(m, str(m)):>10}" for m in markets)
    lines = [head]
    count = len(shocks[0]) if shocks else 0
    for k in range(count):
        cells = "".join(f"{shocks[i][k] / 100:>9.2f}%" for i in range(len(markets)))
        lines.append(f"  {k:>8} {cells}")
    return lines


def unpack_update(u: ScenarioUpdate) -> list[list[int]]:
    """A scenario update's shocks, ``[market][scenario]``."""
    return [unpack_shocks(word, u.count) for word in u.shocks]


__all__ = [
    "DUPLICATE_REASONS",
    "MAX_SCENARIO_BATCH",
    "Signed",
    "describe",
    "print_dry_run",
    "scenario_table",
    "send_one",
    "sign",
    "submit",
    "unpack_update",
]
