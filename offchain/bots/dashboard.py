"""The live risk page's numbers: one read-only snapshot of the registry, the engine and the feeds.

``dmm dashboard`` (``offchain/bots/dashboard_app.py`` serves it) shows, per refresh:

- each configured market: the multiplier in force and the target, an increase ramp under way,
  stale or not, the funding rate in force, the feed's price and age, the first tier's
  maintenance rate in force;
- every subaccount with positions (the engine's enumeration, ``health_batch`` in batches): the
  distribution of equity / maintenance, and the accounts nearest liquidation;
- the insurance fund, bad debt and the deficit that deleveraging recovers;
- recent keeper updates (``RiskUpdated``), liquidations, backstops and deleverages;
- each market's maintenance margin over time: the first tier's rate in force, rebuilt from the
  registry's update log and guardrails with the registry's own rules
  (``margin_math.apply_update`` and ``multiplier_in_force``: ramps, stale fallback, decay), so the
  line ends exactly at what ``multiplier()`` answers now.

Everything is read through ``offchain.protocol.chain`` clients; nothing is sent. Logs are read
incrementally (the last ``lookback_blocks``), block times cached. A failed read (a node that does
not answer, an address without the contract) becomes one line in the snapshot's ``error`` and
the last good snapshot is kept for the page.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from offchain import WAD
from offchain.bots.keeper import KeeperMarket
from offchain.protocol.chain import (
    CallFailed,
    EngineClient,
    FeedClient,
    Health,
    RegistryClient,
    RpcUnavailable,
    describe_unavailable,
    latest_block,
    rpc,
)
from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    UpdateRejected,
    apply_update,
    multiplier_in_force,
)
from offchain.protocol.signing import RiskUpdate

# Buckets of equity / maintenance: (label, upper bound, exclusive).
HEALTH_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 0 underwater", 0.0),
    ("0 - 1 liquidatable", 1.0),
    ("1 - 1.25", 1.25),
    ("1.25 - 1.5", 1.5),
    ("1.5 - 2", 2.0),
    ("2 - 5", 5.0),
    (">= 5", math.inf),
)
ENGINE_EVENTS = ("Liquidation", "Backstop", "Deleveraged")
CHART_SAMPLES = 160  # points of each margin line, besides the exact breakpoints


@dataclass(frozen=True)
class DashboardConfig:
    """The ``dashboard:`` section of the bots' file."""

    host: str = "127.0.0.1"  # listen address (loopback: put a proxy in front to share it)
    port: int = 9103
    refresh_seconds: float = 5.0  # the page asks for new numbers this often
    lookback_blocks: int = 50_000  # logs read for events and the margin chart
    max_events: int = 30  # recent events listed
    nearest: int = 10  # accounts nearest liquidation listed
    max_accounts: int = 10_000  # subaccounts read per refresh (the enumeration's first)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must lie in [1, 65535], not {self.port}")
        if not 0.2 <= self.refresh_seconds <= 3600:
            raise ValueError(f"refresh_seconds must lie in [0.2, 3600], not {self.refresh_seconds}")
        for name in ("lookback_blocks", "max_events", "nearest", "max_accounts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


def usd(wei: int) -> float:
    return wei / WAD


def ratio_bucket(ratio: float) -> int:
    """Index in :data:`HEALTH_BUCKETS` of an equity / maintenance ratio."""
    for i, (_, upper) in enumerate(HEALTH_BUCKETS):
        if ratio < upper:
            return i
    return len(HEALTH_BUCKETS) - 1


def health_distribution(health: Sequence[Health]) -> list[dict[str, Any]]:
    """How many subaccounts fall in each bucket of equity / maintenance."""
    counts = [0] * len(HEALTH_BUCKETS)
    for h in health:
        counts[ratio_bucket(h.margin_ratio)] += 1
    return [
        {"bucket": label, "count": n} for (label, _), n in zip(HEALTH_BUCKETS, counts, strict=True)
    ]


def nearest_liquidation(health: Sequence[Health], limit: int) -> list[dict[str, Any]]:
    """The ``limit`` subaccounts with the lowest equity / maintenance, lowest first."""
    rows = sorted(health, key=lambda h: (h.margin_ratio, h.equity))[:limit]
    return [
        {
            "owner": h.account.owner,
            "subaccount": h.account.subaccount,
            "equity_usd": usd(h.equity),
            "equity_wei": str(h.equity),
            "maintenance_usd": usd(h.maintenance),
            "maintenance_wei": str(h.maintenance),
            "ratio": None if math.isinf(h.margin_ratio) else h.margin_ratio,
            "cushion_usd": usd(h.equity - h.maintenance),
            "liquidatable": h.liquidatable,
        }
        for h in rows
    ]


def state_after(state: MarketState, g: Guardrails, event: dict[str, Any], at: int) -> MarketState:
    """The registry's state of a market after a logged ``RiskUpdated`` landed at ``at``: the
    registry's own rule (``apply_update``); if the guardrails have changed since (the step no
    longer passes), the fields the log carries, with the ramp starting from what was in force."""
    update = RiskUpdate(
        market_id=int(event["market_id"]),
        multiplier=int(event["new_multiplier"]),
        funding_rate=int(event["new_funding_rate"]),
        observed_at=int(event["observed_at"]),
        deadline=at,
        model_hash=bytes(event["model_hash"]),
    )
    try:
        return apply_update(state, g, update, at)
    except UpdateRejected:
        return MarketState(
            target=update.multiplier,
            ramp_from=multiplier_in_force(state, g, at),
            funding_rate=update.funding_rate,
            updated_at=at,
            observed_at=update.observed_at,
            last_decrease_at=state.last_decrease_at,
        )


def margin_series(
    updates: Sequence[tuple[int, dict[str, Any]]],
    g: Guardrails,
    tier0_rate: int,
    now: int,
    start: int | None = None,
    samples: int = CHART_SAMPLES,
) -> list[tuple[int, float]]:
    """``(time, first-tier maintenance rate in force, % of notional)`` from ``start`` to ``now``.

    ``updates`` are ``(block time, RiskUpdated log)`` oldest first, from the market's first
    update on (before it: the stale multiplier). The multiplier in force is
    ``multiplier_in_force`` of the state after the last update at or before each time; the rate
    ``tier0_rate * m / WAD**2``. Times: ``samples`` evenly spaced ones plus each update, the
    second before it, and the end of each ramp and each heartbeat (exact corners).
    """
    states: list[tuple[int, MarketState]] = []
    state = MarketState()
    for at, event in updates:
        state = state_after(state, g, event, at)
        states.append((at, state))
    if start is None:
        start = states[0][0] if states else now - 3600
    start = min(start, now)
    times = {start, now}
    if now > start:
        step = (now - start) / max(samples - 1, 1)
        times.update(int(start + i * step) for i in range(samples))
    for at, _ in states:
        for t in (at - 1, at, at + g.increase_ramp, at + g.heartbeat, at + g.heartbeat + 1):
            if start <= t <= now:
                times.add(t)
    out: list[tuple[int, float]] = []
    k = -1
    for t in sorted(times):
        while k + 1 < len(states) and states[k + 1][0] <= t:
            k += 1
        m = multiplier_in_force(states[k][1] if k >= 0 else MarketState(), g, t)
        out.append((t, tier0_rate * m / WAD / WAD * 100))
    return out


def describe_failure(exc: BaseException, rpc_url: str) -> str:
    """One line saying what failed: the node, a contract call, or something else."""
    if isinstance(exc, RpcUnavailable):
        return f"the node at {rpc_url} did not answer ({describe_unavailable(exc)})"
    text = " ".join(str(exc).split())
    if isinstance(exc, CallFailed):
        return text
    return f"{type(exc).__name__}: {text[:300]}"


class RiskReader:
    """Reads one snapshot of the system per call; keeps logs and block times between calls."""

    def __init__(
        self,
        registry: RegistryClient,
        engine: EngineClient,
        feeds: FeedClient,
        markets: Sequence[KeeperMarket],
        config: DashboardConfig,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.feeds = feeds
        self.w3 = registry.w3
        self.markets = tuple(markets)
        self.config = config
        self._events: list[dict[str, Any]] = []
        self._next_block = 0
        self._block_times: dict[int, int] = {}

    # -- logs ---------------------------------------------------------------------------------

    def block_time(self, number: int) -> int:
        if number not in self._block_times:
            block = rpc(lambda: self.w3.eth.get_block(number))
            self._block_times[number] = int(block["timestamp"])
        return self._block_times[number]

    def refresh_events(self, head: int) -> None:
        """Read the logs of the blocks not read yet (within the lookback), drop older ones."""
        first = max(self._next_block, head - self.config.lookback_blocks + 1, 0)
        if first <= head:
            new = [
                {**e, "kind": "RiskUpdated"} for e in self.registry.risk_updated_events(first, head)
            ]
            for name in ENGINE_EVENTS:
                new += [{**e, "kind": name} for e in self.engine.events(name, first, head)]
            new.sort(key=lambda e: e["block_number"])
            self._events += new
        self._next_block = head + 1
        floor = head - self.config.lookback_blocks + 1
        self._events = [e for e in self._events if e["block_number"] >= floor]
        self._block_times = {b: t for b, t in self._block_times.items() if b >= floor}

    def recent_events(self) -> list[dict[str, Any]]:
        """The newest ``max_events`` events, newest first, as display rows."""
        rows = []
        for e in reversed(self._events[-self.config.max_events :]):
            rows.append({**event_row(e), "time": self.block_time(e["block_number"])})
        return rows

    # -- markets ------------------------------------------------------------------------------

    def market_row(self, market: KeeperMarket, now: int) -> dict[str, Any]:
        mid = market.market_id
        row: dict[str, Any] = {"id": mid, "name": market.name or str(mid)}
        if not self.registry.is_configured(mid):
            return {**row, "configured": False}
        state = self.registry.market_state(mid)
        g = self.registry.guardrails(mid)
        multiplier = self.registry.multiplier(mid)
        funding = self.registry.funding_rate(mid)
        tier0 = self.registry.tier0_rate(mid)
        reading = self.feeds.latest(market.feed)
        stale = self.registry.is_stale(mid)
        ramp = None
        ramp_end = state.updated_at + g.increase_ramp
        if not stale and state.ramp_from < state.target and now < ramp_end:
            ramp = {
                "from": state.ramp_from / WAD,
                "to": state.target / WAD,
                "ends_at": ramp_end,
                "seconds_left": ramp_end - now,
            }
        updates = [
            (self.block_time(e["block_number"]), e)
            for e in self._events
            if e["kind"] == "RiskUpdated" and int(e["market_id"]) == mid
        ]
        start = updates[0][0] if updates else now - 3600
        if updates and state.updated_at and state.updated_at > updates[-1][0]:
            updates = []  # the window missed the last update: start from the chain's state
        if not updates and state.updated_at:
            start = state.updated_at
            updates = [(state.updated_at, _state_event(mid, state))]
        return {
            **row,
            "configured": True,
            "price": reading.price,
            "feed_age_seconds": now - reading.updated_at,
            "multiplier": multiplier / WAD,
            "multiplier_wei": str(multiplier),
            "target": state.target / WAD,
            "target_wei": str(state.target),
            "stale": stale,
            "last_update_age_seconds": now - state.updated_at if state.updated_at else None,
            "ramp": ramp,
            "funding_rate_per_second": funding / WAD,
            "funding_rate_wei": str(funding),
            "funding_8h_pct": funding / WAD * 8 * 3600 * 100,
            "maintenance_tier0_pct": tier0 * multiplier / WAD / WAD * 100,
            "margin_history": margin_series(updates, g, tier0, now, start),
            "update_points": [
                (at, tier0 * int(e["new_multiplier"]) / WAD / WAD * 100, int(e["new_multiplier"]))
                for at, e in updates
                if "old_multiplier" in e
            ],
        }

    # -- the snapshot -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, read now (raises on a failed read)."""
        block = latest_block(self.w3)
        self.refresh_events(block.number)
        markets = [self.market_row(m, block.timestamp) for m in self.markets]
        total = self.engine.count()
        read = min(total, self.config.max_accounts)
        health = self.engine.health(self.engine.accounts(0, read)) if read else []
        fund, bad_debt, deficit = (
            self.engine.insurance_fund(),
            self.engine.bad_debt(),
            self.engine.deficit(),
        )
        return {
            "block": block.number,
            "time": block.timestamp,
            "markets": markets,
            "accounts": {
                "with_positions": total,
                "read": read,
                "liquidatable": sum(h.liquidatable for h in health),
                "distribution": health_distribution(health),
                "nearest": nearest_liquidation(health, self.config.nearest),
            },
            "insurance_fund_usd": usd(fund),
            "insurance_fund_wei": str(fund),
            "bad_debt_usd": usd(bad_debt),
            "bad_debt_wei": str(bad_debt),
            "deficit_usd": usd(deficit),
            "deficit_wei": str(deficit),
            "events": self.recent_events(),
        }


def _state_event(market_id: int, state: MarketState) -> dict[str, Any]:
    """A ``RiskUpdated``-shaped record of the chain's current state (the chart's start when the
    last update is older than the lookback)."""
    return {
        "market_id": market_id,
        "new_multiplier": state.target,
        "new_funding_rate": state.funding_rate,
        "observed_at": state.observed_at,
        "model_hash": b"\x00" * 32,
    }


def _short(address: str) -> str:
    return f"{address[:6]}...{address[-4:]}"


def event_row(e: dict[str, Any]) -> dict[str, Any]:
    """A log as a display row: kind, block, market, account and one line of detail."""
    kind = e["kind"]
    row: dict[str, Any] = {"block": e["block_number"], "market": e.get("market_id")}
    if kind == "RiskUpdated":
        old, new = int(e["old_multiplier"]), int(e["new_multiplier"])
        return {
            **row,
            "kind": "keeper update",
            "account": None,
            "detail": f"multiplier {old / WAD:.4f} -> {new / WAD:.4f},"
            f" funding {int(e['new_funding_rate']) / WAD:.3e}/s",
        }
    account = f"{e['owner']}/{e['subaccount']}"
    if kind == "Liquidation":
        return {
            **row,
            "kind": "liquidation",
            "account": account,
            "detail": f"closed {abs(int(e['size'])) / WAD:,.6f} at {int(e['price']) / WAD:,.2f},"
            f" penalty {int(e['penalty']) / WAD:,.2f} USD to {_short(e['liquidator'])}",
        }
    if kind == "Backstop":
        return {
            **row,
            "kind": "backstop",
            "market": None,
            "account": account,
            "detail": f"equity {int(e['equity']) / WAD:,.2f} USD, fund covered"
            f" {int(e['covered']) / WAD:,.2f}, bad debt {int(e['bad_debt']) / WAD:,.2f}",
        }
    return {
        **row,
        "kind": "deleverage",
        "account": account,
        "detail": f"closed {abs(int(e['size'])) / WAD:,.6f} at {int(e['price']) / WAD:,.2f},"
        f" took {int(e['transfer']) / WAD:,.2f} USD, deficit after"
        f" {int(e['deficit_after']) / WAD:,.2f}",
    }


class SnapshotCache:
    """The last snapshot and the last error, refreshed at most every ``min_interval`` seconds
    however many pages ask; one read at a time."""

    def __init__(
        self,
        read: Callable[[], dict[str, Any]],
        rpc_url: str,
        min_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.rpc_url = rpc_url
        self.min_interval = min_interval
        self.clock = clock
        self.last_good: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_since: float | None = None
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        """``{"ok", "error", "error_since", "snapshot"}``; ``snapshot`` is the last good one."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.min_interval:
                self._read_at = now
                try:
                    self.last_good = {**self.read(), "read_at": time.time()}
                    self.error = self.error_since = None
                except Exception as exc:
                    self.error = describe_failure(exc, self.rpc_url)
                    if self.error_since is None:
                        self.error_since = time.time()
            return {
                "ok": self.error is None,
                "error": self.error,
                "error_since": self.error_since,
                "rpc": self.rpc_url,
                "snapshot": self.last_good,
            }


__all__ = [
    "HEALTH_BUCKETS",
    "DashboardConfig",
    "RiskReader",
    "SnapshotCache",
    "describe_failure",
    "event_row",
    "health_distribution",
    "margin_series",
    "nearest_liquidation",
    "ratio_bucket",
    "state_after",
]
