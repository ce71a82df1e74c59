"""The keeper's account classes (no chain): on its schedule it signs the class the shipped rule
gives each active account, only where the registry would accept it."""

from __future__ import annotations

from dataclasses import dataclass, field

from offchain import WAD
from offchain.bots.keeper_profiles import MAX_PROFILE_BATCH, ProfilePlanner, batches
from offchain.protocol.chain import Block
from offchain.protocol.signing import ProfileUpdate
from offchain.risk.profiles import (
    AccountHistory,
    AccountRecord,
    LiquidationEvent,
    TradeEvent,
    profile_model_hash,
)
from offchain.risk.risk_config import load_risk_config

TABLE = load_risk_config().profiles.table("devnet")
NOW = 1_800_000_000
ENGINE = "0x" + "ee" * 20
TRADER = "0x" + "11" * 20
MAKER = "0x" + "22" * 20
WHALE = "0x" + "33" * 20


@dataclass
class Records:
    """The engine's events by block, and each account's record."""

    fills: list[tuple[int, TradeEvent]] = field(default_factory=list)
    liqs: list[tuple[int, LiquidationEvent]] = field(default_factory=list)
    equity: dict[str, int] = field(default_factory=dict)
    volume: dict[str, int] = field(default_factory=dict)
    address: str = ENGINE

    def trades(self, start: int, stop: int) -> list[TradeEvent]:
        return [e for b, e in self.fills if start <= b <= stop]

    def liquidations(self, start: int, stop: int) -> list[LiquidationEvent]:
        return [e for b, e in self.liqs if start <= b <= stop]

    def backstops(self, start: int, stop: int) -> list:
        return []

    def record(self, owner: str, sub: int, history: AccountHistory) -> AccountRecord:
        return AccountRecord(
            owner, sub, self.volume.get(owner, 0), self.equity.get(owner, 0), history
        )


@dataclass
class FakeProfiles:
    """The profile registry: profiles in force and on-chain eligibility."""

    profiles: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)
    eligible: set[tuple[str, int]] = field(default_factory=set)
    address: str = "0x" + "66" * 20

    def profile(self, owner: str, sub: int) -> tuple[int, int, int]:
        return self.profiles.get((owner, sub), (0, 0, 0))

    def is_eligible(self, owner: str, sub: int, class_id: int) -> bool:
        penalty = TABLE.multiplier(class_id) >= WAD
        return penalty or (owner, class_id) in self.eligible


def trade(at: int, taker: str, maker: str, size: int) -> TradeEvent:
    return TradeEvent(at, 1, maker, 0, taker, 0, size, 60_000 * WAD)


def make(records: Records, registry: FakeProfiles, **kw) -> ProfilePlanner:
    return ProfilePlanner(registry, records, TABLE, start_block=1, **kw)  # type: ignore[arg-type]


def test_profiles__liquidated_gets_the_penalty_a_two_sided_maker_its_discount():
    records = Records()
    # The maker sells 10 BTC and buys 9.5 over the month; the trader is liquidated once.
    records.fills += [(2, trade(NOW - 86_400, TRADER, MAKER, 10 * WAD))]
    records.fills += [(3, trade(NOW - 3_600, MAKER, TRADER, 95 * WAD // 10))]
    records.liqs += [(4, LiquidationEvent(NOW - 600, 1, TRADER, 0))]
    records.equity = {MAKER: 60_000 * WAD, TRADER: 1_000 * WAD}
    records.volume = {MAKER: 1_200_000 * WAD, TRADER: 1_200_000 * WAD}
    registry = FakeProfiles(eligible={(MAKER, 1)})
    planner = make(records, registry)

    decisions = planner.decide(Block(5, NOW, 0), NOW + 600)

    by_owner = {d.owner: d for d in decisions}
    assert by_owner[TRADER].class_id == TABLE.by_name("liquidated").class_id
    assert by_owner[MAKER].class_id == TABLE.by_name("maker").class_id
    for d in decisions:
        assert d.action == "update" and d.update is not None
        assert d.update.observed_at == NOW and d.update.deadline == NOW + 600
        assert d.update.model_hash == profile_model_hash(TABLE)
    assert planner.last_run == NOW


def test_profiles__ineligible_discount_is_not_signed():
    records = Records()
    records.fills += [(2, trade(NOW - 86_400, TRADER, MAKER, 10 * WAD))]
    records.fills += [(3, trade(NOW - 3_600, MAKER, TRADER, 95 * WAD // 10))]
    records.equity = {MAKER: 60_000 * WAD}
    records.volume = {MAKER: 1_200_000 * WAD}
    planner = make(records, FakeProfiles())  # the registry says not eligible (equity moved)
    d = next(d for d in planner.decide(Block(5, NOW, 0), NOW + 600) if d.owner == MAKER)
    assert d.action == "skip" and d.update is None and "not eligible on chain" in d.reason


def test_profiles__class_in_force_left_alone_and_refreshed_before_it_expires():
    records = Records()
    records.liqs += [(4, LiquidationEvent(NOW - 600, 1, TRADER, 0))]
    liquidated = TABLE.by_name("liquidated").class_id
    registry = FakeProfiles({(TRADER, 0): (liquidated, NOW - 10, NOW + 5 * 86_400)})
    planner = make(records, registry)
    assert planner.decide(Block(5, NOW, 0), NOW + 600) == []
    registry.profiles[(TRADER, 0)] = (liquidated, NOW - 10, NOW + 3_600)  # expires within a day
    (d,) = planner.decide(Block(6, NOW + 1, 0), NOW + 600)
    assert d.action == "update" and "refresh liquidated" in d.reason


def test_profiles__observed_at_must_pass_the_last_update():
    records = Records()
    records.liqs += [(4, LiquidationEvent(NOW - 600, 1, TRADER, 0))]
    registry = FakeProfiles({(TRADER, 0): (0, NOW, 0)})  # an update observed at this second
    (d,) = make(records, registry).decide(Block(5, NOW, 0), NOW + 600)
    assert d.action == "skip" and "observed in this period" in d.reason


def test_profiles__runs_on_its_interval_and_reads_each_block_once():
    records = Records()
    records.liqs += [(4, LiquidationEvent(NOW - 600, 1, TRADER, 0))]
    planner = make(records, FakeProfiles(), interval_s=3600)
    assert planner.due(NOW)
    assert len(planner.tick(Block(5, NOW, 0), NOW + 600)) == 1
    assert planner.tick(Block(6, NOW + 3599, 0), NOW + 600) == []  # not due yet
    assert planner.events.next_block == 6
    assert len(planner.tick(Block(7, NOW + 3600, 0), NOW + 600)) == 1  # the class again
    assert len(planner.events.liquidations) == 1  # block 4 was read once


def test_profiles__the_insurance_fund_is_never_profiled():
    records = Records()
    records.liqs += [(4, LiquidationEvent(NOW - 600, 1, ENGINE, 0))]
    assert make(records, FakeProfiles()).decide(Block(5, NOW, 0), NOW + 600) == []


def test_batches__at_most_32_per_batch():
    updates = [ProfileUpdate(TRADER, i, 4, NOW, NOW + 1, b"\x01" * 32) for i in range(70)]
    assert [len(b) for b in batches(updates)] == [32, 32, 6] and MAX_PROFILE_BATCH == 32
