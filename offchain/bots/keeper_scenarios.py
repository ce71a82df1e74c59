"""The keeper's scenario updates: joint stress scenarios per scenario group, as the backtest
replays them.

Per tick, for every scenario group of the keeper's markets on the ``ScenarioRegistry``:

1. the group's markets, bounds, steps, heartbeat and last accepted update are read from the chain
   (the registry is the authority on the guardrails);
2. the markets' finished bars (the keeper's bar store) are joined on the hour
   (:func:`offchain.risk.joint_returns.joint_history`); the scenario set in force after the last
   finished bar is the one chosen at the last refresh of the backtest's schedule
   (:func:`offchain.risk.scenarios.refresh_row_at`, :func:`~offchain.risk.scenarios.
   refresh_scenarios`: every ``refresh`` bars, from the pool before it, slots matched to the
   previous set), scaled by that bar's volatilities (:func:`~offchain.risk.scenarios.shocks_bps`,
   as :func:`~offchain.risk.scenarios.walk_forward_shocks`);
3. the shocks are clamped into the group's bounds and, while the last update is in force, its
   step limit (:func:`offchain.protocol.portfolio_math.clamp_shocks`, ``previous=None`` when the
   group is stale, was never updated or was reconfigured: the registry starts afresh then), as
   :func:`offchain.risk.portfolio_backtest.replay_keeper` does hour by hour;
4. an update is due when a new bar finished and the clamped shocks differ from those in force,
   when the group is not in force, or once ``refresh_fraction`` of the heartbeat has passed.

``K``, the confidence and the horizon come from the shipped configuration (``deploy/risk.yaml``,
``portfolio:``). A keeper that restarts re-chooses the set at the current refresh row without
the slot history: the same scenarios, possibly in other gap-filler slots (each still inside the
step limit, which the clamp enforces).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from eth_utils import keccak

from offchain.protocol.keeper_clients import GroupOnChain, ScenarioRegistryClient
from offchain.protocol.portfolio_math import (
    ShocksRejected,
    check_shocks,
    clamp_shocks,
    pack_shocks,
)
from offchain.protocol.signing import ScenarioUpdate
from offchain.risk.joint_returns import joint_history
from offchain.risk.prices import Candles
from offchain.risk.scenarios import (
    ScenarioDesign,
    StandardScenarios,
    refresh_row_at,
    refresh_scenarios,
    shocks_bps,
)

log = logging.getLogger("dmm.keeper")

SCENARIO_MODEL_VERSION = "dmm-scenarios/1"

BarSource = Callable[[int, int], Candles]  # (market id, block time) -> finished bars


@dataclass(frozen=True)
class ScenarioDecision:
    """What the keeper does for one group in one tick, and why."""

    group_id: int
    action: str  # "update", "skip" or "refuse"
    reason: str
    update: ScenarioUpdate | None = None
    shocks: tuple[tuple[int, ...], ...] = ()  # signed, [market][scenario] (bps)
    markets: tuple[int, ...] = ()


@dataclass
class _Live:
    """A group's scenario set in force (chosen at the refresh row opening at ``refresh_at``, for
    the group's markets ``markets``)."""

    markets: tuple[int, ...]
    refresh_at: int
    scenarios: StandardScenarios


def scenario_model_hash(
    design: ScenarioDesign, names: Sequence[str], first: int, last: int, n_rows: int, refresh: int
) -> bytes:
    """keccak-256 of the design, the markets and the data window behind an update."""
    text = (
        f"{SCENARIO_MODEL_VERSION}|K={design.n_scenarios}|c={design.confidence}"
        f"|h={design.horizon}|refresh={design.refresh}|min_obs={design.min_obs}"
        f"|markets={','.join(names)}|from={first}|to={last}|rows={n_rows}|set={refresh}"
    )
    return keccak(text=text)


def refresh_due(group: GroupOnChain, now: int, fraction: float) -> bool:
    """Whether the last update is at least ``fraction`` of the heartbeat old (or absent)."""
    return group.updated_at == 0 or now - group.updated_at >= group.guardrails.heartbeat * fraction


@dataclass
class ScenarioPlanner:
    """Scenario groups of the keeper's markets (module docstring).

    Parameters
    ----------
    client
        The scenario registry.
    bars
        Finished bars of a market (the keeper's bar store), oldest first.
    names
        Market id -> name (the joint history's labels).
    design
        ``K``, confidence, horizon, refresh and warm-up of the scenarios.
    bar_seconds
        Bar length: an update is observed at the close of its last bar.
    refresh_fraction
        Re-sign once this fraction of the group's heartbeat has passed.
    groups
        Group ids to drive (``None``: every group of a market in ``names``).
    time_granularity
        ``observed_at`` of a refresh with nothing new is the block time rounded down to this
        (co-signing keepers on neighbouring blocks then sign the same bytes).
    """

    client: ScenarioRegistryClient
    bars: BarSource
    names: Mapping[int, str]
    design: ScenarioDesign
    bar_seconds: int = 3600
    refresh_fraction: float = 0.5
    groups: tuple[int, ...] | None = None
    time_granularity: int = 1
    _live: dict[int, _Live] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.refresh_fraction <= 1:
            raise ValueError(f"refresh_fraction must lie in (0, 1], got {self.refresh_fraction}")
        if self.bar_seconds < 1 or self.time_granularity < 1:
            raise ValueError("bar_seconds and time_granularity must be positive")

    def group_ids(self) -> list[int]:
        """The groups to drive: the configured ones, else every group of the keeper's markets."""
        if self.groups is not None:
            return list(self.groups)
        found = {self.client.group_of(m) for m in self.names}
        return sorted(g for g in found if g)

    def proposal(self, group: GroupOnChain, now: int) -> tuple[list[list[int]], int, bytes, str]:
        """``(shocks [market][scenario] bps, observed_at, model_hash, detail)`` before the
        clamp; raises ``ValueError`` while the history is too short."""
        missing = [m for m in group.markets if m not in self.names]
        if missing:
            raise ValueError(f"markets {missing} of the group are not driven by this keeper")
        names = [self.names[m] for m in group.markets]
        candles = []
        for m, name in zip(group.markets, names, strict=True):
            c = self.bars(m, now)
            candles.append(Candles(c.timestamps, c.open, c.high, c.low, c.close, name, False))
        history = joint_history(candles)
        row = len(history) - 1
        ref = refresh_row_at(history, self.design, row)
        if ref is None:
            valid = int(np.count_nonzero(history.valid))
            raise ValueError(
                f"warming up: {valid} of {self.design.min_obs} joint hours of"
                f" {'/'.join(names)} before the first scenario set"
            )
        refresh_at = int(history.timestamps[ref])
        live = self._live.get(group.group_id)
        if live is not None and live.markets != group.markets:
            live = None  # the group was reconfigured: its old slots mean nothing now
        if live is None or live.refresh_at != refresh_at:
            k = self.design.n_scenarios
            previous = {k: live.scenarios} if live is not None else {}
            chosen = refresh_scenarios(history, self.design, ref, [k], previous)[k]
            live = _Live(group.markets, refresh_at, chosen)
            self._live[group.group_id] = live
        shocks = shocks_bps(live.scenarios.vectors, history.sigma[row], self.design.horizon)
        by_market = [[int(z) for z in column] for column in shocks.T]
        first, last = int(history.timestamps[0]), int(history.timestamps[-1])
        digest = scenario_model_hash(self.design, names, first, last, len(history), refresh_at)
        detail = (
            f"{len(live.scenarios)} scenarios of {'/'.join(names)}, set of"
            f" {refresh_at}, vol {', '.join(f'{s:.3%}' for s in history.sigma[row])}/h,"
            f" worst coverage {live.scenarios.worst_coverage:.1%}"
        )
        return by_market, last + self.bar_seconds, digest, detail

    def decide(self, group_id: int, now: int, deadline: int) -> ScenarioDecision:
        """Everything for one group up to (not including) signing."""
        group = self.client.group(group_id)
        if not group.configured:
            return ScenarioDecision(group_id, "skip", "group not configured on the registry")
        try:
            proposed, observed_at, digest, detail = self.proposal(group, now)
        except ValueError as exc:
            return ScenarioDecision(group_id, "skip", str(exc), markets=group.markets)
        in_force = group.in_force(now)
        previous = group.shocks_by_market() if in_force else None
        try:
            signed = clamp_shocks(proposed, previous, group.guardrails)
            check_shocks(signed, previous, group.guardrails)
        except ShocksRejected as exc:
            return ScenarioDecision(group_id, "refuse", str(exc), markets=group.markets)
        shocks = tuple(tuple(row) for row in signed)
        due = refresh_due(group, now, self.refresh_fraction)
        if observed_at <= group.observed_at:
            if in_force and not due:
                return ScenarioDecision(
                    group_id,
                    "skip",
                    f"nothing observed since the last update (observed_at {group.observed_at})",
                    shocks=shocks,
                    markets=group.markets,
                )
            observed_at = now // self.time_granularity * self.time_granularity
            if observed_at <= group.observed_at:
                return ScenarioDecision(
                    group_id, "skip", "refresh waits for a later block", markets=group.markets
                )
        elif (
            in_force
            and not due
            and previous is not None
            and [list(r) for r in shocks] == [list(r) for r in previous]
        ):
            return ScenarioDecision(
                group_id, "skip", "scenarios unchanged", shocks=shocks, markets=group.markets
            )
        clamped = int(np.count_nonzero(np.array(proposed) != np.array(signed)))
        why = "stale: starts afresh" if not in_force else ("refresh" if due else "new bar")
        update = ScenarioUpdate(
            group_id=group_id,
            count=self.design.n_scenarios,
            shocks=tuple(pack_shocks(row) for row in signed),
            observed_at=observed_at,
            deadline=deadline,
            model_hash=digest,
        )
        return ScenarioDecision(
            group_id,
            "update",
            f"{why}; {detail}" + (f"; {clamped} shock(s) clamped" if clamped else ""),
            update=update,
            shocks=shocks,
            markets=group.markets,
        )

    def tick(self, now: int, deadline: int) -> list[ScenarioDecision]:
        """One decision per group (a group that cannot be read is refused, not raised)."""
        out = []
        for group_id in self.group_ids():
            decision = self.decide(group_id, now, deadline)
            if decision.action == "update":
                log.info("scenario group %d: update: %s", group_id, decision.reason)
            elif decision.action == "refuse":
                log.warning("scenario group %d: nothing signed: %s", group_id, decision.reason)
            else:
                log.debug("scenario group %d: skip: %s", group_id, decision.reason)
            out.append(decision)
        return out


def history_bars(
    times: Callable[[int], tuple[Sequence[int], Sequence[float]]], bar_seconds: int
) -> BarSource:
    """A bar source over raw price readings (a keeper without a bar store): the last price of
    each ``bar_seconds`` bucket that has finished at the block time."""
    from offchain.bots.keeper_models import to_bars

    def source(market_id: int, now: int) -> Candles:
        t, p = times(market_id)
        bar_t, bar_p = to_bars(np.asarray(t, np.int64), np.asarray(p, np.float64), bar_seconds)
        done = bar_t + bar_seconds <= now
        bar_t, bar_p = bar_t[done], bar_p[done]
        return Candles(bar_t, bar_p, bar_p, bar_p, bar_p, f"market {market_id}", False)

    return source


__all__ = [
    "SCENARIO_MODEL_VERSION",
    "BarSource",
    "ScenarioDecision",
    "ScenarioPlanner",
    "history_bars",
    "refresh_due",
    "scenario_model_hash",
]
