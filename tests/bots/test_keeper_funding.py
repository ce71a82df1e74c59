"""The keeper's funding: a funding move alone is pushed, a small one waits, quotes are bounded,
and the reference mode signs exactly what the funding study replays (no chain)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from offchain import WAD
from offchain.bots.keeper import KeeperConfig, KeeperMarket, decide
from offchain.bots.keeper_funding import FundingPlanner, MarketFunding
from offchain.bots.keeper_models import Proposal
from offchain.protocol.chain import Block, FeedReading
from offchain.protocol.margin_math import MarketState
from offchain.risk.funding import (
    AccumulatorReading,
    PremiumFundingModel,
    ReferenceFundingModel,
)
from offchain.risk.funding_history import FEED_DECIMALS, FundingHistory, replay_reference
from tests.conftest import DEFAULT_GUARDRAILS as GUARDRAILS

NOW = 1_800_000_000
CONFIG = KeeperConfig((KeeperMarket(1, "0x" + "11" * 20, "BTC"),))
HASH = b"\x01" * 32
BOUND = 190_000_000_000  # the shipped max_funding_rate
INTEREST_PER_S = 10**14 // 28_800  # 0.01% per 8 hours


def _state(funding: int, target: int = 2 * WAD) -> MarketState:
    return MarketState(
        target=target,
        ramp_from=target,
        funding_rate=funding,
        updated_at=NOW - 100,
        observed_at=NOW - 100,
    )


def test_decide__funding_move_alone_pushed_with_the_same_multiplier():
    proposal = Proposal(2 * WAD, 3 * INTEREST_PER_S, HASH)
    d = decide(1, proposal, _state(INTEREST_PER_S), GUARDRAILS, NOW, NOW, CONFIG)
    assert d.action == "update" and d.update is not None
    assert d.update.multiplier == 2 * WAD and d.update.funding_rate == 3 * INTEREST_PER_S
    assert f"funding {INTEREST_PER_S} -> {3 * INTEREST_PER_S}" in d.reason


def test_decide__funding_move_inside_its_hysteresis_waits():
    proposal = Proposal(2 * WAD, INTEREST_PER_S + INTEREST_PER_S // 50, HASH)  # +2%
    d = decide(1, proposal, _state(INTEREST_PER_S), GUARDRAILS, NOW, NOW, CONFIG)
    assert d.action == "skip" and "inside hysteresis" in d.reason


def test_decide__funding_sign_flip_pushed():
    d = decide(1, Proposal(2 * WAD, -1, HASH), _state(1), GUARDRAILS, NOW, NOW, CONFIG)
    assert d.action == "update" and d.update is not None and d.update.funding_rate == -1


def test_decide__funding_beyond_the_bound_is_clamped():
    d = decide(1, Proposal(2 * WAD, 10**13, HASH), _state(0), GUARDRAILS, NOW, NOW, CONFIG)
    assert d.update is not None and d.update.funding_rate == GUARDRAILS.max_funding_rate


@dataclass
class FakeRecords:
    """The engine's premium accumulators by block number."""

    by_block: dict[int, tuple[int, int]]
    reads: list[int] = field(default_factory=list)

    def premium_reading(self, market_id: int, block: Block) -> AccumulatorReading:
        self.reads.append(block.number)
        weighted, notional = self.by_block[block.number]
        return AccumulatorReading(block.timestamp, weighted, notional)


@dataclass
class FakeFeeds:
    answer: int
    updated_at: int
    decimals: int = FEED_DECIMALS

    def latest(self, feed: str) -> FeedReading:
        return FeedReading(feed, 1, self.answer, self.decimals, self.updated_at)


def test_premium__fills_above_the_oracle_quote_the_binance_rate_inside_the_bound():
    # 1M USD traded 0.1% above the oracle over 8 hours: (0.1% - 0.05%) per 8 hours.
    records = FakeRecords({1: (0, 0), 2: (1_000 * WAD, 1_000_000 * WAD)})
    planner = FundingPlanner({1: MarketFunding(1, PremiumFundingModel())}, records, FakeFeeds(0, 0))
    assert planner.quote(1, Block(1, NOW, 0), BOUND).source == "none"
    q = planner.quote(1, Block(2, NOW + 8 * 3600, 0), BOUND)
    assert q.source == "premium" and q.premium == 10**15
    assert q.rate == 5 * 10**14 // 28_800 and not q.clipped
    # The same block again reads nothing new (a reading must be later than the last).
    assert planner.quote(1, Block(2, NOW + 8 * 3600, 0), BOUND).rate == q.rate
    assert records.reads == [1, 2]
    tight = planner.quote(1, Block(2, NOW + 8 * 3600, 0), 10**10)
    assert tight.rate == 10**10 and tight.clipped


def test_premium__needs_the_engine():
    with pytest.raises(ValueError, match="engine's address"):
        FundingPlanner({1: MarketFunding(1, PremiumFundingModel())}, None, FakeFeeds(0, 0))


def test_reference__needs_a_feed():
    with pytest.raises(ValueError, match="needs a feed"):
        MarketFunding(1, ReferenceFundingModel())


def test_zero__no_section_signs_nothing():
    planner = FundingPlanner({}, None, FakeFeeds(0, 0))
    assert planner.quote(1, Block(1, NOW, 0), BOUND) is None
    assert planner.mode(1) == "zero"


def test_reference__the_keeper_signs_what_the_funding_study_replays():
    """Live = backtest: at every hourly tick the planner quotes the rate the study's replay
    carries (the same model, the same bound), fresh, clipped and stale hours alike."""
    # Eight 8-hour settlements with a day's hole (the feed goes stale and decays).
    hours = np.array([0, 8, 16, 24, 48, 56, 64, 72])
    times = (hours * 3600 + NOW).astype(np.int64)
    rate_8h = np.array([1e-4, 3e-4, -2e-4, 8e-3, 1e-4, 0.0, 5e-4, -1e-3])
    history = FundingHistory("BTCUSDT", times, rate_8h, np.full(8, 28_800))
    replay = replay_reference(history, BOUND)
    model = ReferenceFundingModel()
    answers = np.rint(history.rate_8h * 10**FEED_DECIMALS).astype(np.int64)
    for tick, expected in zip(replay.ticks.tolist(), replay.rate.tolist(), strict=True):
        k = int(np.searchsorted(history.times, tick, side="right")) - 1
        feeds = FakeFeeds(int(answers[k]), int(history.times[k]))
        planner = FundingPlanner({1: MarketFunding(1, model, "0x" + "22" * 20)}, None, feeds)
        q = planner.quote(1, Block(tick, tick, 0), BOUND)
        assert q.rate / WAD == expected
    assert replay.clipped.any()  # the 0.8% settlement is beyond the shipped bound
    assert replay.stale.any()  # and the hole makes the feed stale
