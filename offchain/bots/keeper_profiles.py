"""The keeper's account profiles: every ``interval_s`` seconds, each active account's class.

1. the engine's ``Trade``, ``Liquidation`` and ``Backstop`` logs since the last run are added to
   the keeper's event log (:class:`offchain.bots.engine_records.AccountEventLog`, 90 days kept);
2. each account seen there gets its record (the owner's trailing volume, the subaccount's equity
   and positions with their markets' open interest) and its class by the shipped rule
   (:func:`offchain.risk.profiles.derive` with the class table of ``deploy/risk.yaml`` at the
   deployment's scale);
3. an update is signed for each account whose class differs from the one in force, or whose
   class expires within ``refresh_s`` (:func:`offchain.risk.profiles.profiles_to_sign`), if the
   registry finds the account eligible for it now (``ProfileRegistry.is_eligible``: the registry
   refuses a whole batch for one ineligible account) and the update is observed after the
   account's last one.

The insurance fund's subaccount (the engine's own) is never profiled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from offchain.bots.engine_records import AccountEventLog, EngineRecords
from offchain.protocol.chain import Block
from offchain.protocol.keeper_clients import ProfileRegistryClient
from offchain.protocol.signing import ProfileUpdate
from offchain.risk.profiles import (
    ClassDecision,
    ClassTable,
    Key,
    derive,
    profile_model_hash,
    profiles_to_sign,
)

log = logging.getLogger("dmm.keeper")

MAX_PROFILE_BATCH = 32  # ProfileRegistry.submit_profiles


@dataclass(frozen=True)
class ProfileDecision:
    """One account's class this run and what the keeper does about it."""

    owner: str
    subaccount: int
    class_id: int
    action: str  # "update" or "skip"
    reason: str
    update: ProfileUpdate | None = None


@dataclass
class ProfilePlanner:
    """Account classes for the keeper (module docstring).

    Parameters
    ----------
    client
        The profile registry.
    records
        The engine's events and account records.
    table
        The class table and rules (``deploy/risk.yaml``, ``profiles:``, one scale).
    interval_s
        Seconds between two runs (block time).
    refresh_s
        Re-sign a class that expires within this many seconds.
    start_block
        First block of the event log (the engine's deployment, or 90 days back).
    time_granularity
        ``observed_at`` is the block time rounded down to this (co-signing keepers).
    """

    client: ProfileRegistryClient
    records: EngineRecords
    table: ClassTable
    interval_s: int = 3600
    refresh_s: int = 86_400
    start_block: int = 0
    time_granularity: int = 1
    last_run: int | None = None
    events: AccountEventLog = field(init=False)

    def __post_init__(self) -> None:
        if self.interval_s < 1 or self.refresh_s < 0 or self.time_granularity < 1:
            raise ValueError("interval_s and time_granularity must be >= 1, refresh_s >= 0")
        self.events = AccountEventLog(next_block=self.start_block)
        self.model_hash = profile_model_hash(self.table)

    def due(self, now: int) -> bool:
        """Whether a run is due at block time ``now``."""
        return self.last_run is None or now - self.last_run >= self.interval_s

    def classes(self, block: Block) -> dict[Key, ClassDecision]:
        """Read the new events up to ``block`` and derive every active account's class."""
        read = self.events.extend(self.records, block.number, block.timestamp)
        if read:
            log.info("profiles: %d new account event(s) up to block %d", read, block.number)
        histories = self.events.histories(engine=self.records.address)
        return {
            key: derive(self.records.record(key[0], key[1], h), block.timestamp, self.table)
            for key, h in sorted(histories.items())
        }

    def decide(self, block: Block, deadline: int) -> list[ProfileDecision]:
        """One run (module docstring); sets ``last_run``."""
        now = block.timestamp
        decisions = self.classes(block)
        current = {key: self.client.profile(*key) for key in decisions}
        in_force = {key: (c, expires) for key, (c, _, expires) in current.items()}
        observed_at = now // self.time_granularity * self.time_granularity
        out: list[ProfileDecision] = []
        for change in profiles_to_sign(decisions, in_force, now, self.refresh_s):
            key = (change.owner, change.subaccount)
            if observed_at <= current[key][1]:
                why = "observed in this period already"
                out.append(ProfileDecision(*key, change.class_id, "skip", why))
                continue
            if not self.client.is_eligible(change.owner, change.subaccount, change.class_id):
                out.append(
                    ProfileDecision(
                        *key,
                        change.class_id,
                        "skip",
                        f"not eligible on chain for class {change.class_id} ({change.reason})",
                    )
                )
                continue
            update = ProfileUpdate(
                change.owner,
                change.subaccount,
                change.class_id,
                observed_at,
                deadline,
                self.model_hash,
            )
            out.append(ProfileDecision(*key, change.class_id, "update", change.reason, update))
        self.last_run = now
        for d in out:
            level = logging.INFO if d.action == "update" else logging.DEBUG
            log.log(level, "profile %s/%d: %s: %s", d.owner, d.subaccount, d.action, d.reason)
        return out

    def tick(self, block: Block, deadline: int) -> list[ProfileDecision]:
        """:meth:`decide` when a run is due, else nothing."""
        return self.decide(block, deadline) if self.due(block.timestamp) else []


def batches(
    updates: Iterable[ProfileUpdate], size: int = MAX_PROFILE_BATCH
) -> list[list[ProfileUpdate]]:
    """Updates in batches the registry accepts (at most 32 each)."""
    items = list(updates)
    return [items[i : i + size] for i in range(0, len(items), size)]


__all__ = ["MAX_PROFILE_BATCH", "ProfileDecision", "ProfilePlanner", "batches"]
