"""The risk keeper: read each market's feed, run the risk model, clamp, sign, relay.

Per tick (one block, time taken from the block):

1. read every market's Chainlink-compatible feed and **validate** the reading: NaN or infinite,
   zero or negative, older than ``max_feed_age``, stamped in the future, or moving ``max_jump``
   times (10x) or more from the last accepted price in one reading is refused, and *nothing is
   signed for that market* (a log line says why). A jump is accepted once a second, later
   reading confirms it (within ``spike_confirm_tolerance``);
2. append new rounds to the market's price history (warmed up from a CSV file if given) and ask
   the risk model for a multiplier, and the market's funding source for a rate
   (:mod:`offchain.bots.keeper_funding`: the engine's premium or a reference feed, bounded by the
   market's ``max_funding_rate``);
3. **clamp** to the market's on-chain guardrails (``margin_math.clamp_multiplier``) and check the
   result with ``margin_math.apply_update`` exactly as the registry will;
4. **skip** when nothing new was observed, or the multiplier's change is inside the hysteresis
   band, the funding rate's inside its own (:func:`offchain.risk.funding.funding_needs_push`) and
   the last update is younger than ``refresh_fraction`` of the heartbeat; a funding move alone
   is pushed, observed at the block that read it;
5. with a scenario planner, each scenario group's joint shocks
   (:mod:`offchain.bots.keeper_scenarios`), and with a profile planner, on its own schedule, the
   accounts whose class changed (:mod:`offchain.bots.keeper_profiles`);
6. sign **one** EIP-712 batch per kind and land them (:mod:`offchain.bots.keeper_submit`): risk
   and scenario batches in one transaction through the ``KeeperRelay`` when one is configured,
   otherwise each alone, every transaction simulated first. A batch the chain already holds
   (same ``observed_at``) reverts in simulation and is dropped, which makes re-sending after a
   crash harmless.

No sender means dry run: the batches are signed (when a key is given) and printed with the
scenarios and the reference books' margins under them, nothing is sent.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from eth_account.signers.local import LocalAccount

from offchain import WAD
from offchain.bots.cosign import Cosigner, CosignSettings, make_transport, relayed_by
from offchain.bots.keeper_models import LiveRiskModel, Proposal
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import Block, FeedClient, FeedReading, RegistryClient, rpc
from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    UpdateRejected,
    apply_update,
    clamp_multiplier,
    with_funding_bound,
)
from offchain.protocol.signing import (
    ProfileUpdate,
    RiskUpdate,
    ScenarioUpdate,
    Update,
    batch_digest,
)
from offchain.protocol.tx_sender import SentTx, TxSender
from offchain.risk.funding import funding_needs_push

if TYPE_CHECKING:
    from offchain.bots.keeper_funding import FundingPlanner
    from offchain.bots.keeper_profiles import ProfileDecision, ProfilePlanner
    from offchain.bots.keeper_scenarios import ScenarioDecision, ScenarioPlanner
    from offchain.protocol.keeper_clients import RelayClient

log = logging.getLogger("dmm.keeper")

# The registry's reason for an update it already holds: a re-sent batch is dropped, not an error.
DUPLICATE_REASONS = ("observed_at not after the last update",)


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class KeeperMarket:
    """A market the keeper drives: registry id, its feed, a display name."""

    market_id: int
    feed: str
    name: str = ""

    @property
    def label(self) -> str:
        return f"{self.market_id}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class KeeperConfig:
    """The keeper's policy (see ``offchain/bots/keeper.example.yaml``)."""

    markets: tuple[KeeperMarket, ...]
    hysteresis: float = 0.05  # skip a multiplier change smaller than 5% of the target
    refresh_fraction: float = 0.5  # re-push once this fraction of the heartbeat has passed
    max_feed_age: int = 3600  # seconds; an older feed answer is stale
    max_jump: float = 10.0  # a reading this many times above/below the last one is a spike
    spike_confirm_tolerance: float = 0.1  # a second reading this close confirms a jump
    deadline_seconds: int = 600  # signed updates are valid this long
    history_size: int = 5000  # prices kept per market
    min_history: int = 2  # prices needed before the model runs
    # k-of-n: where the keepers publish their signatures of a batch (offchain/bots/cosign.py:
    # a shared folder, or a Redis server for keepers on several machines); the keeper that
    # completes the registry's threshold relays. None: this keeper signs and relays alone.
    cosign: CosignSettings | None = None
    cosign_dir: str | None = None  # shorthand for cosign: {transport: folder, dir: ...}
    # When co-signing, deadlines are rounded down to this many seconds so that keepers ticking
    # on neighbouring blocks sign the same bytes.
    cosign_granularity: int = 60

    def __post_init__(self) -> None:
        if not self.markets:
            raise ValueError("the keeper needs at least one market")
        ids = [m.market_id for m in self.markets]
        if len(set(ids)) != len(ids):
            raise ValueError("market ids must be distinct")
        if not 0 <= self.hysteresis < 1:
            raise ValueError("hysteresis must lie in [0, 1)")
        if not 0 < self.refresh_fraction <= 1:
            raise ValueError("refresh_fraction must lie in (0, 1]")
        if self.max_jump <= 1:
            raise ValueError("max_jump must be above 1")
        if self.max_feed_age <= 0 or self.deadline_seconds <= 0:
            raise ValueError("max_feed_age and deadline_seconds must be positive")
        if self.min_history < 2:
            raise ValueError("min_history must be at least 2 (one return)")
        if self.cosign_granularity < 1 or self.cosign_granularity >= self.deadline_seconds:
            raise ValueError("cosign_granularity must lie in [1, deadline_seconds)")
        if self.cosign_dir is not None:
            folder = CosignSettings(transport="folder", dir=self.cosign_dir)
            if self.cosign is not None and self.cosign != folder:
                raise ValueError("give cosign or cosign_dir, not both")
            object.__setattr__(self, "cosign", folder)


# ---------------------------------------------------------------------------------------------
# Price validation and history


def check_reading(
    price: float,
    updated_at: int,
    now: int,
    last_price: float | None,
    max_age: int,
    max_jump: float,
) -> str | None:
    """Why a feed reading must not be used, or ``None`` when it is usable."""
    if math.isnan(price) or math.isinf(price):
        return f"price is not a finite number ({price})"
    if price <= 0:
        return f"price is zero or negative ({price})"
    if updated_at > now:
        return f"feed timestamp {updated_at} is in the future (block time {now})"
    if now - updated_at > max_age:
        return f"feed is stale: last update {now - updated_at} s ago, more than {max_age} s"
    if last_price is not None and last_price > 0:
        ratio = price / last_price
        if ratio >= max_jump or ratio <= 1 / max_jump:
            return (
                f"price moved x{ratio:.4g} in one reading ({last_price:.6g} -> {price:.6g});"
                f" held until a second reading confirms it"
            )
    return None


@dataclass
class PriceHistory:
    """Accepted prices of one market, oldest first, with the last feed round seen."""

    size: int
    times: list[int] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    last_round_at: int = 0
    pending_jump: float | None = None
    pending_jump_at: int = 0

    def add(self, t: int, price: float) -> None:
        self.times.append(t)
        self.prices.append(price)
        if len(self.prices) > self.size:
            del self.times[: -self.size]
            del self.prices[: -self.size]

    @property
    def last_price(self) -> float | None:
        return self.prices[-1] if self.prices else None

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.times, dtype=np.int64), np.asarray(self.prices, dtype=np.float64)


def read_history_csv(path: str | Path) -> tuple[list[int], list[float]]:
    """Timestamps (seconds) and close prices of a candle CSV, oldest first.

    Reads a time column (``unix``, ``timestamp`` or ``time``; milliseconds are detected) and a
    ``close`` (or ``price``) column, as in the CryptoDataDownload layout; a first line that is
    not the header (a URL banner) is skipped. Rows with a missing, NaN or non-positive price are
    dropped with a log line.
    """
    with open(path, newline="") as handle:
        lines = handle.read().splitlines()
    if lines and "," not in lines[0]:
        lines = lines[1:]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None:
        raise ValueError(f"{path}: empty file")
    cols = {c.lower().strip(): c for c in reader.fieldnames}
    tcol = next((cols[c] for c in ("unix", "timestamp", "time", "t") if c in cols), None)
    pcol = next((cols[c] for c in ("close", "price", "answer") if c in cols), None)
    if tcol is None or pcol is None:
        raise ValueError(f"{path}: needs a unix/timestamp column and a close/price column")
    rows: list[tuple[int, float]] = []
    dropped = 0
    for row in reader:
        try:
            t = int(float(row[tcol]))
            p = float(row[pcol])
        except (TypeError, ValueError):
            dropped += 1
            continue
        if math.isnan(p) or math.isinf(p) or p <= 0:
            dropped += 1
            continue
        rows.append((t // 1000 if t > 10**11 else t, p))
    if dropped:
        log.warning("history %s: dropped %d row(s) with a missing or invalid price", path, dropped)
    rows.sort()
    return [t for t, _ in rows], [p for _, p in rows]


# ---------------------------------------------------------------------------------------------
# Decision (pure)


@dataclass(frozen=True)
class Decision:
    """What the keeper does for one market in one tick, and why."""

    market_id: int
    action: str  # "update", "skip" or "refuse"
    reason: str
    update: RiskUpdate | None = None
    current: int = 0
    proposed: int = 0


def batch_deadline(now: int, config: KeeperConfig) -> int:
    """``now + deadline_seconds``; rounded down to ``cosign_granularity`` when keepers co-sign,
    so that keepers whose clocks (blocks) differ by less than that sign identical batches."""
    if config.cosign is None:
        return now + config.deadline_seconds
    return now // config.cosign_granularity * config.cosign_granularity + config.deadline_seconds


def decide(
    market_id: int,
    proposal: Proposal,
    state: MarketState,
    guardrails: Guardrails,
    now: int,
    observed_at: int,
    config: KeeperConfig,
) -> Decision:
    """Clamp the proposal, apply hysteresis, and build the update the registry will accept."""
    clamped = clamp_multiplier(state, guardrails, proposal.multiplier, now)
    funding = with_funding_bound(proposal.funding_rate, guardrails)
    current = state.target
    refresh = ""
    if state.updated_at != 0:
        if observed_at <= state.observed_at:
            return Decision(
                market_id,
                "skip",
                f"nothing observed since the last update (observed_at {state.observed_at})",
                current=current,
                proposed=clamped,
            )
        change = abs(clamped - current) / current if current else math.inf
        age = now - state.updated_at
        due = age >= guardrails.heartbeat * config.refresh_fraction
        funding_moved = funding_needs_push(state.funding_rate, funding)
        if not due and not funding_moved and change < config.hysteresis:
            return Decision(
                market_id,
                "skip",
                f"inside hysteresis: {current / WAD:.4f} -> {clamped / WAD:.4f}"
                f" ({change:.2%} < {config.hysteresis:.2%}), last update {age} s ago",
                current=current,
                proposed=clamped,
            )
        if funding_moved and change < config.hysteresis:
            refresh = f" (funding {state.funding_rate} -> {funding})"
        elif change < config.hysteresis:
            refresh = f" (refresh: last update {age} s ago)"
    update = RiskUpdate(
        market_id=market_id,
        multiplier=clamped,
        funding_rate=funding,
        observed_at=observed_at,
        deadline=batch_deadline(now, config),
        model_hash=proposal.model_hash,
    )
    try:
        apply_update(state, guardrails, update, now)
    except UpdateRejected as exc:
        return Decision(market_id, "refuse", exc.reason, current=current, proposed=clamped)
    note = (
        "" if clamped == proposal.multiplier else f", clamped from {proposal.multiplier / WAD:.4f}"
    )
    return Decision(
        market_id,
        "update",
        f"multiplier {f'{current / WAD:.4f}' if state.updated_at else 'none'} ->"
        f" {clamped / WAD:.4f}{note}{refresh}; {proposal.detail}",
        update=update,
        current=current,
        proposed=clamped,
    )


# ---------------------------------------------------------------------------------------------
# The keeper


@dataclass
class TickResult:
    """What one tick did: per-market decisions and the relayed transaction, if any."""

    block: int
    now: int
    decisions: list[Decision]
    signatures: list[bytes] = field(default_factory=list)
    sent: SentTx | None = None  # the transaction that landed the risk batch (or the relay's)
    dropped: str | None = None
    scenarios: list[ScenarioDecision] = field(default_factory=list)
    profiles: list[ProfileDecision] = field(default_factory=list)
    transactions: list[SentTx] = field(default_factory=list)  # every transaction of the tick
    relayed: bool = False  # risk and scenario batches landed together through the relay

    @property
    def updates(self) -> list[RiskUpdate]:
        return [d.update for d in self.decisions if d.update is not None]

    @property
    def scenario_updates(self) -> list[ScenarioUpdate]:
        return [d.update for d in self.scenarios if d.update is not None]

    @property
    def profile_updates(self) -> list[ProfileUpdate]:
        return [d.update for d in self.profiles if d.update is not None]


class Keeper:
    """One keeper: its markets' histories, the model, the signing key and (unless dry run) the
    transaction sender that relays its batches; optionally the funding sources, the scenario
    and profile planners, the relay, and (dry run) the reference books' report."""

    def __init__(
        self,
        config: KeeperConfig,
        registry: RegistryClient,
        feeds: FeedClient,
        model: LiveRiskModel,
        signer: LocalAccount | None,
        sender: TxSender | None,
        chain_id: int | None,
        metrics: BotMetrics | None = None,
        echo: Callable[[str], Any] = print,
        *,
        funding: FundingPlanner | None = None,
        scenarios: ScenarioPlanner | None = None,
        profiles: ProfilePlanner | None = None,
        relay: RelayClient | None = None,
        reference: Callable[[ScenarioDecision, int], list[str]] | None = None,
        cosigner: Cosigner | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.feeds = feeds
        self.model = model
        self.signer = signer
        self.sender = sender
        self.chain_id = chain_id
        self.metrics = metrics or BotMetrics("keeper")
        self.echo = echo
        self.funding = funding
        self.scenarios = scenarios
        self.profiles = profiles
        self.relay_client = relay
        self.reference = reference
        self.market_names = {m.market_id: m.name or str(m.market_id) for m in config.markets}
        self.history = {m.market_id: PriceHistory(config.history_size) for m in config.markets}
        self._recovered = False
        if cosigner is None and config.cosign is not None:
            cosigner = Cosigner(
                make_transport(config.cosign),
                registry.is_keeper,
                registry.signer_threshold,
                config.cosign.where(),
            )
        self.cosigner = cosigner

    @property
    def dry_run(self) -> bool:
        return self.sender is None

    def warm_up(self, market_id: int, times: Sequence[int], prices: Sequence[float]) -> int:
        """Seed a market's history with past prices; returns how many were kept."""
        history = self.history[market_id]
        kept = 0
        for t, p in zip(times, prices, strict=True):
            last = history.last_price
            if check_reading(p, t, t, last, max_age=1, max_jump=self.config.max_jump) is None:
                history.add(int(t), float(p))
                kept += 1
        if history.times:
            history.last_round_at = max(history.last_round_at, history.times[-1])
        log.info("market %d: warmed up with %d of %d prices", market_id, kept, len(prices))
        return kept

    def observe(self, market: KeeperMarket, reading: FeedReading | Any, now: int) -> str | None:
        """Validate a reading and add it to the history; returns why it was refused, if it was."""
        history = self.history[market.market_id]
        price = float(reading.price)
        updated_at = int(reading.updated_at)
        reason = check_reading(
            price,
            updated_at,
            now,
            history.last_price,
            self.config.max_feed_age,
            self.config.max_jump,
        )
        if reason is not None and reason.startswith("price moved"):
            pending = history.pending_jump
            if (
                pending is not None
                and updated_at > history.pending_jump_at
                and abs(price / pending - 1) <= self.config.spike_confirm_tolerance
            ):
                log.warning(
                    "market %s: jump to %.6g confirmed by a second reading; accepted",
                    market.label,
                    price,
                )
                reason = None
            elif pending is None or updated_at > history.pending_jump_at:
                history.pending_jump, history.pending_jump_at = price, updated_at
        if reason is not None:
            return reason
        history.pending_jump = None
        if updated_at > history.last_round_at:
            history.add(updated_at, price)
            history.last_round_at = updated_at
        return None

    def decide_market(self, market: KeeperMarket, now: int, block: Block | None = None) -> Decision:
        """Everything for one market up to (not including) signing."""
        reading = self.feeds.latest(market.feed)
        reason = self.observe(market, reading, now)
        if reason is not None:
            return Decision(market.market_id, "refuse", f"bad price data: {reason}")
        history = self.history[market.market_id]
        if len(history.prices) < self.config.min_history:
            return Decision(
                market.market_id,
                "skip",
                f"warming up: {len(history.prices)} of {self.config.min_history} prices",
            )
        state = self.registry.market_state(market.market_id)
        guardrails = self.registry.guardrails(market.market_id)
        times, prices = history.as_arrays()
        try:
            proposal = self.model.propose(market.market_id, times, prices, state, now)
        except ValueError as exc:  # e.g. not enough history yet for the model
            return Decision(market.market_id, "skip", f"model: {exc}")
        if self.funding is not None:
            block = block or Block(0, now, 0)
            try:
                quote = self.funding.quote(market.market_id, block, guardrails.max_funding_rate)
            except ValueError as exc:
                return Decision(market.market_id, "refuse", f"funding: {exc}")
            if quote is not None:
                proposal = dataclasses.replace(
                    proposal,
                    funding_rate=quote.rate,
                    detail=f"{proposal.detail}; {quote.detail()}",
                )
        # The data behind the update: the model's last finished bar, else the latest feed round;
        # a refresh with nothing new, or a funding move alone, is observed at the block that
        # confirmed the price and read the funding.
        observed_at = proposal.observed_at or history.last_round_at
        funding_moved = state.updated_at != 0 and funding_needs_push(
            state.funding_rate, proposal.funding_rate
        )
        if observed_at <= state.observed_at and (
            now - state.updated_at >= guardrails.heartbeat * self.config.refresh_fraction
            or funding_moved
        ):
            observed_at = now
        return decide(market.market_id, proposal, state, guardrails, now, observed_at, self.config)

    def tick(self, block: Block) -> TickResult:
        """One pass over every market at ``block`` (its timestamp is the keeper's clock).

        After a failed tick the next one first waits for the key's in-flight transaction (if
        any) to settle, so a batch broadcast before an outage is never followed by a second.
        """
        try:
            return self._tick(block)
        except Exception:
            self._recovered = False
            raise

    def _tick(self, block: Block) -> TickResult:
        now = block.timestamp
        if self.chain_id is None:
            self.chain_id = int(rpc(lambda: self.registry.w3.eth.chain_id))
        if self.sender is not None and not self._recovered:
            self.sender.recover()
            self._recovered = True
        decisions: list[Decision] = []
        for market in self.config.markets:
            decision = self.decide_market(market, now, block)
            decisions.append(decision)
            if decision.action == "update":
                log.info("market %s: update: %s", market.label, decision.reason)
            elif decision.action == "refuse":
                log.warning("market %s: nothing signed: %s", market.label, decision.reason)
                self.metrics.updates_skipped.labels("refused").inc()
            else:
                log.debug("market %s: skip: %s", market.label, decision.reason)
                self.metrics.updates_skipped.labels("unchanged").inc()
        result = TickResult(block.number, now, decisions)
        deadline = batch_deadline(now, self.config)
        if self.scenarios is not None:
            result.scenarios = self.scenarios.tick(now, deadline)
        if self.profiles is not None:
            result.profiles = self.profiles.tick(block, deadline)
        if result.updates or result.scenario_updates or result.profile_updates:
            self.relay(result)
        return result

    def cosign(
        self, updates: Sequence[Update], own: bytes, verifying: str | None = None
    ) -> list[bytes] | None:
        """Publish this keeper's signature of the batch through the co-signing transport and
        return the signatures that meet the registry's threshold, or ``None`` while too few
        keepers signed (see ``offchain/bots/cosign.py``: what counts, and the transports).
        ``verifying`` is the registry whose domain the batch is signed under (default the risk
        registry; scenario and profile batches name theirs: same keepers, same threshold)."""
        assert self.chain_id is not None and self.cosigner is not None
        assert self.signer is not None
        digest = batch_digest(updates, self.chain_id, verifying or self.registry.address)
        return self.cosigner.cosign(digest, self.signer.address, own)

    def relay(self, result: TickResult) -> None:
        """Sign the tick's batches and land them, or print them in dry run
        (:func:`offchain.bots.keeper_submit.submit`)."""
        from offchain.bots.keeper_submit import submit

        submit(self, result)

    def relayed_elsewhere(self, updates: Sequence[Update], verifying: str) -> str | None:
        """Who relayed this batch if, while ours was in flight, the same batch landed from
        another keeper (co-signing keepers race to relay; the loser reverts on chain)."""
        if self.cosigner is None or self.chain_id is None:
            return None
        digest = batch_digest(updates, self.chain_id, verifying)
        since = max(0, int(rpc(lambda: self.registry.w3.eth.block_number)) - 256)
        return rpc(lambda: relayed_by(self.registry.w3, verifying, digest, since))


__all__ = [
    "DUPLICATE_REASONS",
    "Decision",
    "Keeper",
    "KeeperConfig",
    "KeeperMarket",
    "PriceHistory",
    "TickResult",
    "check_reading",
    "decide",
    "read_history_csv",
]
