"""The keeper's scenario updates (no chain): hour by hour it signs what the portfolio backtest
replays; stale or reconfigured groups start afresh; every refusal and skip has its reason."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from offchain import WAD
from offchain.bots.keeper_scenarios import ScenarioPlanner, history_bars, refresh_due
from offchain.protocol.keeper_clients import GroupOnChain
from offchain.protocol.portfolio_math import (
    GroupParams,
    ShockGuardrails,
    pack_shocks,
    unpack_shocks,
)
from offchain.protocol.signing import ScenarioUpdate
from offchain.risk.joint_returns import joint_history
from offchain.risk.portfolio_backtest import replay_keeper
from offchain.risk.prices import HOUR, Candles
from offchain.risk.scenarios import ScenarioDesign, walk_forward_shocks, walk_forward_vectors

T0 = 1_600_000_000 // HOUR * HOUR
DESIGN = ScenarioDesign(n_scenarios=6, min_obs=300, refresh=24)
PARAMS = GroupParams(0, WAD // 20, 2 * WAD)


def synthetic(n: int, seed: int = 3) -> list[Candles]:
    """Two correlated markets with a volatility regime change."""
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n) < n // 2, 0.006, 0.015)
    common = rng.standard_normal(n)
    out = []
    for i, name in enumerate(("BTC", "ETH")):
        own = rng.standard_normal(n)
        r = vol * (0.8 * common + 0.6 * own) * (1 + 0.3 * i)
        p = 1_000.0 * (i + 1) * np.exp(np.cumsum(r))
        t = T0 + np.arange(n, dtype=np.int64) * HOUR
        out.append(Candles(t, p, p, p, p, name, has_ohlc=False))
    return out


def head(c: Candles, n: int) -> Candles:
    return Candles(
        c.timestamps[:n], c.open[:n], c.high[:n], c.low[:n], c.close[:n], c.symbol, False
    )


@dataclass
class FakeChain:
    """The scenario registry's group 1 (markets 1 and 2), updated as the registry would."""

    group: GroupOnChain

    def group_of(self, market_id: int) -> int:
        return 1 if market_id in self.group.markets else 0

    def group_with(self, **changes) -> None:
        self.group = replace(self.group, **changes)

    def land(self, u: ScenarioUpdate, now: int) -> None:
        self.group = replace(
            self.group, count=u.count, shocks=u.shocks, observed_at=u.observed_at, updated_at=now
        )

    def read(self, group_id: int) -> GroupOnChain:
        assert group_id == 1
        return self.group


class FakeClient:
    address = "0x" + "55" * 20

    def __init__(self, chain: FakeChain) -> None:
        self.chain = chain

    def group(self, group_id: int) -> GroupOnChain:
        return self.chain.read(group_id)

    def group_of(self, market_id: int) -> int:
        return self.chain.group_of(market_id)


def chain_with(guardrails: ShockGuardrails, observed_at: int = T0) -> FakeChain:
    return FakeChain(GroupOnChain(1, (1, 2), guardrails, PARAMS, 0, (), observed_at, 0))


def planner(chain: FakeChain, candles: list[Candles], rows: dict[str, int]) -> ScenarioPlanner:
    by_id = {1: candles[0], 2: candles[1]}
    return ScenarioPlanner(
        FakeClient(chain),  # type: ignore[arg-type]
        lambda m, now: head(by_id[m], rows["n"]),
        {1: "BTC", 2: "ETH"},
        DESIGN,
    )


def test_planner__hour_by_hour_signs_what_the_backtest_replays():
    candles = synthetic(420)
    history = joint_history(candles)
    vectors, ready, _ = walk_forward_vectors(history, DESIGN)
    proposed = walk_forward_shocks(history, vectors[DESIGN.n_scenarios], DESIGN)
    # Tight steps: most hours are clamped against the previous signed update.
    guardrails = ShockGuardrails((250, 250), (15, 15), 7200)
    replayed = replay_keeper(proposed, ready, guardrails)
    assert replayed.clamped_updates > 10

    chain = chain_with(guardrails)
    rows = {"n": 0}
    p = planner(chain, candles, rows)
    first = int(np.flatnonzero(ready)[0])
    signed_rows = 0
    for row in range(first - 2, len(history)):
        rows["n"] = row + 1
        now = int(history.timestamps[row]) + HOUR
        d = p.decide(1, now, now + 600)
        if row < first:
            assert d.action == "skip" and "warming up" in d.reason
            continue
        assert d.action == "update", d.reason
        assert d.update is not None and d.update.observed_at == now
        by_market = [unpack_shocks(w, d.update.count) for w in d.update.shocks]
        assert by_market == replayed.shocks[row].T.tolist(), row
        chain.land(d.update, now)
        signed_rows += 1
    assert signed_rows == len(history) - first


def test_planner__stale_group_starts_afresh_inside_the_bounds():
    candles = synthetic(400)
    guardrails = ShockGuardrails((250, 250), (1, 1), 7200)
    chain = chain_with(guardrails)
    p = planner(chain, candles, {"n": 400})
    now = int(candles[0].timestamps[-1]) + HOUR
    far = [[0] * DESIGN.n_scenarios, [0] * DESIGN.n_scenarios]
    words = tuple(pack_shocks(r) for r in far)
    # In force: every shock held within one basis point of zero.
    chain.group_with(
        count=DESIGN.n_scenarios, shocks=words, observed_at=now - 10, updated_at=now - 10
    )
    held = p.decide(1, now, now + 600)
    assert held.action == "update" and all(abs(z) <= 1 for row in held.shocks for z in row)
    # Stale (last update older than the heartbeat): the step limit no longer binds.
    chain.group_with(updated_at=now - 7201, observed_at=now - 7201)
    fresh = p.decide(1, now, now + 600)
    assert fresh.action == "update" and "stale: starts afresh" in fresh.reason
    assert max(abs(z) for row in fresh.shocks for z in row) > 1
    assert all(abs(z) <= 250 for row in fresh.shocks for z in row)


def test_planner__a_reconfigured_group_starts_afresh_and_is_rechosen():
    candles = synthetic(400)
    chain = chain_with(ShockGuardrails((250, 250), (1, 1), 7200))
    p = planner(chain, candles, {"n": 400})
    now = int(candles[0].timestamps[-1]) + HOUR
    before = p.decide(1, now, now + 600)
    assert before.action == "update"
    # Configuring a group clears its scenarios (updated_at 0) and moves observed_at to the
    # configuration block: the next update is free inside the bounds, observed at the block.
    chain.group_with(markets=(2, 1), observed_at=now + 5, updated_at=0, count=0, shocks=())
    after = p.decide(1, now + 10, now + 600)
    assert after.action == "update" and after.update is not None
    assert after.update.observed_at == now + 10
    # The set is chosen again for the new market order: the one-market scenarios (the first
    # four, "X down / X up") are about the same joint moves (the direction grid, hence the
    # covering scale, depends on the order by a few basis points), listed in the new order.
    swapped = [(before.shocks[0][k], before.shocks[1][k]) for k in (2, 3, 0, 1)]
    again = [(after.shocks[1][k], after.shocks[0][k]) for k in range(4)]
    for (b1, e1), (b2, e2) in zip(swapped, again, strict=True):
        assert abs(b1 - b2) <= 12 and abs(e1 - e2) <= 12
    assert after.shocks[0][0] < 0 < after.shocks[0][1]  # ETH down, ETH up first now


def test_planner__count_lowered_while_in_force_is_refused():
    candles = synthetic(400)
    chain = chain_with(ShockGuardrails((250, 250), (250, 250), 7200))
    p = planner(chain, candles, {"n": 400})
    now = int(candles[0].timestamps[-1]) + HOUR
    words = tuple(pack_shocks([0] * 16) for _ in range(2))
    chain.group_with(count=16, shocks=words, observed_at=now - 60, updated_at=now - 60)
    d = p.decide(1, now, now + 600)
    assert d.action == "refuse" and "count lowered while scenarios are in force" in d.reason


def test_planner__skips_nothing_new_unchanged_and_refreshes_when_due():
    candles = synthetic(400)
    chain = chain_with(ShockGuardrails((250, 250), (250, 250), 7200))
    p = planner(chain, candles, {"n": 400})
    close = int(candles[0].timestamps[-1]) + HOUR
    first = p.decide(1, close, close + 600)
    assert first.update is not None
    chain.land(first.update, close)
    # The same bar a minute later: nothing observed since.
    same = p.decide(1, close + 60, close + 660)
    assert same.action == "skip" and "nothing observed since" in same.reason
    # Half the heartbeat later (refresh_fraction 0.5): re-signed, observed at the block.
    due = p.decide(1, close + 3600, close + 4200)
    assert due.action == "update" and due.update is not None
    assert due.update.observed_at == close + 3600 and "refresh" in due.reason
    assert refresh_due(chain.group, close + 3600, 0.5) and not refresh_due(chain.group, close, 0.5)
    # A new bar whose clamped shocks are those in force: nothing to sign.
    chain.land(due.update, close + 3600)
    chain.group_with(observed_at=close - 1)
    unchanged = p.decide(1, close + 3601, close + 4200)
    assert unchanged.action == "skip" and unchanged.reason == "scenarios unchanged"


def test_planner__markets_not_driven_and_unconfigured_groups():
    candles = synthetic(400)
    chain = chain_with(ShockGuardrails((250, 250), (250, 250), 7200))
    p = planner(chain, candles, {"n": 400})
    assert p.group_ids() == [1]
    chain.group_with(markets=(1, 3))
    d = p.decide(1, T0 + 10**6, T0 + 10**6 + 600)
    assert d.action == "skip" and "markets [3] of the group are not driven" in d.reason
    chain.group_with(markets=())
    assert p.decide(1, T0, T0 + 600).reason == "group not configured on the registry"


def test_history_bars__finished_buckets_only():
    times = [T0, T0 + 10, T0 + 3700, T0 + 7300]
    source = history_bars(lambda m: (times, [1.0, 2.0, 3.0, 4.0]), HOUR)
    bars = source(1, T0 + 7300)
    assert bars.timestamps.tolist() == [T0, T0 + 3600]
    assert bars.close.tolist() == [2.0, 3.0]


def test_planner__settings_checked():
    chain = chain_with(ShockGuardrails((250, 250), (250, 250), 7200))
    with pytest.raises(ValueError, match="refresh_fraction"):
        ScenarioPlanner(FakeClient(chain), lambda m, n: None, {}, DESIGN, refresh_fraction=0)  # type: ignore[arg-type]
