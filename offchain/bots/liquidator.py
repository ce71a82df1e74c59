"""The liquidation bot: scan every subaccount with positions, liquidate the unhealthy, worst first.

Per tick (one block):

1. **scan**: the engine's enumeration is read with ``users_to_liquidate(start, 100)`` pages, all
   pages in one JSON-RPC batch, then the liquidatable ones with ``health_batch``; they are ordered
   worst first (lowest equity / maintenance, underwater accounts before the rest);
2. **act**: an account with negative equity is sent to ``backstop``; otherwise each of its
   positions is liquidated (the engine closes what its partial-liquidation rule allows) until the
   account is healthy again. Every transaction is simulated first (``TxSender``);
3. a simulation that reverts because the account is healthy again or the position is gone means
   a rival (or the market) got there first: logged, not an error;
4. **deleverage**: while the engine reports a deficit (bad debt left by a backstop, or an
   insurance fund whose positions lost more than it holds), close the positions on the other
   side of the fund's, largest unrealised profit times leverage first
   (:mod:`offchain.bots.deleverager`), until the deficit is gone; first, while there is bad
   debt and the insurance fund has equity (fees it earned, a top-up), ``repay_bad_debt``;
5. an account whose liquidation keeps failing for another reason is **throttled**: skipped for
   ``throttle_blocks`` blocks, doubling at each further failure, so one bad account cannot eat
   every tick.

No sender means dry run: the plan is logged, nothing is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from offchain import WAD
from offchain.bots import deleverager
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import Block, EngineClient, Health, Subaccount
from offchain.protocol.tx_sender import SimulationReverted, TxFailed, TxSender

log = logging.getLogger("dmm.liquidator")

# Reverts meaning someone else already acted (or the price moved back): not a failure.
RIVAL_REASONS = (
    "engine: account healthy",
    "engine: no position",
    "engine: above backstop threshold",
)


@dataclass(frozen=True)
class LiquidatorConfig:
    """The liquidator's policy (see ``offchain/bots/keeper.example.yaml``)."""

    liquidator_subaccount: int = 1  # the bot's subaccount that takes positions over
    max_actions_per_tick: int = 50  # accounts handled per tick, worst first
    max_rounds_per_account: int = 6  # partial liquidations of one account in one tick
    throttle_after: int = 3  # failures in a row before an account is throttled
    throttle_blocks: int = 10  # first throttle, in blocks; doubles each further failure
    max_deleverages_per_tick: int = 20  # deleveraging calls per tick while there is a deficit

    def __post_init__(self) -> None:
        if self.max_actions_per_tick < 1 or self.max_rounds_per_account < 1:
            raise ValueError("max_actions_per_tick and max_rounds_per_account must be >= 1")
        if self.throttle_after < 1 or self.throttle_blocks < 1:
            raise ValueError("throttle_after and throttle_blocks must be >= 1")


@dataclass(frozen=True)
class ScanResult:
    """Every liquidatable subaccount, worst first, and how long the scan took."""

    scanned: int
    liquidatable: list[Health]
    seconds: float


def worst_first(health: Sequence[Health]) -> list[Health]:
    """Underwater accounts first, then by equity / maintenance ascending."""
    return sorted(health, key=lambda h: (h.equity >= 0, h.margin_ratio))


def scan(engine: EngineClient) -> ScanResult:
    """Find the liquidatable subaccounts among all with positions (two batched round trips)."""
    started = time.perf_counter()
    total = engine.count()
    candidates = engine.liquidatable_accounts(total)
    health = [h for h in engine.health(candidates) if h.liquidatable]
    return ScanResult(total, worst_first(health), time.perf_counter() - started)


@dataclass
class Throttle:
    """Consecutive failures of one account and the block until which it is skipped."""

    failures: int = 0
    until_block: int = 0


@dataclass
class LiquidatorResult:
    """What one tick did."""

    block: int
    scan: ScanResult
    liquidations: int = 0
    backstops: int = 0
    deleverages: int = 0
    repaid: int = 0  # repay_bad_debt calls
    rivals: int = 0
    failures: int = 0
    throttled: list[Subaccount] = field(default_factory=list)


class Liquidator:
    """The bot's state between ticks (throttles) around the engine client and the sender."""

    def __init__(
        self,
        engine: EngineClient,
        sender: TxSender | None,
        config: LiquidatorConfig | None = None,
        metrics: BotMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.config = config or LiquidatorConfig()
        self.metrics = metrics or BotMetrics("liquidator")
        self.throttles: dict[Subaccount, Throttle] = {}
        self._recovered = False

    @property
    def dry_run(self) -> bool:
        return self.sender is None

    def tick(self, block: Block) -> LiquidatorResult:
        """Scan, then act on the liquidatable accounts worst first.

        At start-up and after a failed tick, first wait for the key's in-flight transaction
        (nonce recovered from the chain)."""
        try:
            return self._tick(block)
        except Exception:
            self._recovered = False
            raise

    def _tick(self, block: Block) -> LiquidatorResult:
        if self.sender is not None and not self._recovered:
            self.sender.recover()
            self._recovered = True
        result = LiquidatorResult(block.number, scan(self.engine))
        self.metrics.scan_seconds.set(result.scan.seconds)
        self.metrics.liquidatable.set(len(result.scan.liquidatable))
        if result.scan.liquidatable:
            log.info(
                "block %d: %d of %d subaccounts liquidatable (scan %.3f s)",
                block.number,
                len(result.scan.liquidatable),
                result.scan.scanned,
                result.scan.seconds,
            )
        for health in result.scan.liquidatable[: self.config.max_actions_per_tick]:
            account = health.account
            throttle = self.throttles.get(account)
            if throttle is not None and block.number < throttle.until_block:
                result.throttled.append(account)
                continue
            try:
                self.resolve(health, result)
            except (SimulationReverted, TxFailed) as exc:
                result.failures += 1
                self.metrics.failure("liquidation")
                self._fail(account, block.number, str(exc))
                continue
            self.throttles.pop(account, None)
        self.deleverage(result)
        return result

    def repay(self, result: LiquidatorResult) -> None:
        """Let the insurance fund's equity repay recorded bad debt (cheaper for everyone than
        deleveraging it)."""
        if self.engine.bad_debt() == 0 or self.engine.insurance_fund() == 0:
            return
        log.info(
            "bad debt %.2f USD, insurance fund %.2f USD: repaying from the fund",
            self.engine.bad_debt() / WAD,
            self.engine.insurance_fund() / WAD,
        )
        if self._send(self.engine.encode_repay_bad_debt(), "repay bad debt"):
            result.repaid += 1

    def deleverage(self, result: LiquidatorResult) -> None:
        """Recover the engine's deficit, best-ranked account first, until it is gone."""
        self.repay(result)
        targets = deleverager.plan(self.engine)
        if not targets:
            return
        log.info(
            "deficit %.2f USD: %d account(s) on the other side of the insurance fund",
            self.engine.deficit() / WAD,
            len(targets),
        )
        for target in targets[: self.config.max_deleverages_per_tick]:
            who = f"{target.account.owner}/{target.account.subaccount}"
            log.info(
                "account %s: deleveraging market %d (size %.6f, profit %.2f USD, score %.4g)",
                who,
                target.market_id,
                target.size / WAD,
                target.pnl / WAD,
                target.score / WAD,
            )
            data = self.engine.encode_deleverage(
                target.account.owner, target.account.subaccount, target.market_id, abs(target.size)
            )
            try:
                done = self._send(data, f"deleverage {who} market {target.market_id}")
            except SimulationReverted as exc:
                if any(r in exc.reason for r in deleverager.DONE_REASONS):
                    log.info("deleverage %s: %s", who, exc.reason)
                    continue
                raise
            if done:
                result.deleverages += 1
                self.metrics.liquidations.labels("deleverage").inc()
            if self.dry_run or self.engine.deficit() == 0:
                return

    def _fail(self, account: Subaccount, block: int, reason: str) -> None:
        throttle = self.throttles.setdefault(account, Throttle())
        throttle.failures += 1
        log.error(
            "account %s/%d: liquidation failed (%d in a row): %s",
            account.owner,
            account.subaccount,
            throttle.failures,
            reason,
        )
        if throttle.failures >= self.config.throttle_after:
            wait = self.config.throttle_blocks * 2 ** (
                throttle.failures - self.config.throttle_after
            )
            throttle.until_block = block + wait
            log.warning(
                "account %s/%d throttled for %d blocks", account.owner, account.subaccount, wait
            )

    def _send(self, data: bytes, label: str) -> bool:
        """Send one engine call; False when a rival already did the work."""
        if self.sender is None:
            log.info("dry run: would send %s", label)
            return True
        try:
            sent = self.sender.send(self.engine.address, data, label=label)
        except SimulationReverted as exc:
            if any(r in exc.reason for r in RIVAL_REASONS):
                log.info("%s: nothing to do, already handled (%s)", label, exc.reason)
                return False
            raise
        self.metrics.gas(sent.cost_wei)
        return True

    def resolve(self, health: Health, result: LiquidatorResult) -> None:
        """Liquidate (or backstop) one account until it is healthy or gone."""
        account = health.account
        who = f"{account.owner}/{account.subaccount}"
        current = health
        for _ in range(self.config.max_rounds_per_account):
            if current.equity < 0:
                log.info(
                    "account %s: equity %.2f USD < 0 (maintenance %.2f): backstop",
                    who,
                    current.equity / WAD,
                    current.maintenance / WAD,
                )
                done = self._send(
                    self.engine.encode_backstop(account.owner, account.subaccount),
                    f"backstop {who}",
                )
                if done:
                    result.backstops += 1
                    self.metrics.liquidations.labels("backstop").inc()
                else:
                    result.rivals += 1
                return
            markets = self.engine.markets_of(account.owner, account.subaccount)
            if not markets:
                log.info("account %s: nothing to do, already handled (no positions left)", who)
                result.rivals += 1
                return
            for market_id in markets:
                size, _ = self.engine.position(account.owner, account.subaccount, market_id)
                if size == 0:
                    continue
                log.info(
                    "account %s: equity %.2f USD < maintenance %.2f: liquidating in market %d"
                    " (position %.6f; the engine closes what its partial rule allows)",
                    who,
                    current.equity / WAD,
                    current.maintenance / WAD,
                    market_id,
                    size / WAD,
                )
                done = self._send(
                    self.engine.encode_liquidate(
                        account.owner,
                        account.subaccount,
                        market_id,
                        abs(size),
                        self.config.liquidator_subaccount,
                    ),
                    f"liquidate {who} market {market_id}",
                )
                if not done:
                    result.rivals += 1
                    return
                result.liquidations += 1
                self.metrics.liquidations.labels("liquidate").inc()
                if not self.dry_run:
                    after, _ = self.engine.position(account.owner, account.subaccount, market_id)
                    log.info(
                        "account %s: liquidated %.6f of %.6f in market %d (position now %.6f)",
                        who,
                        (abs(size) - abs(after)) / WAD,
                        abs(size) / WAD,
                        market_id,
                        after / WAD,
                    )
                break
            if self.dry_run:
                return
            (current,) = self.engine.health([account])
            if not current.liquidatable:
                log.info("account %s: healthy again", who)
                return


__all__ = [
    "RIVAL_REASONS",
    "Liquidator",
    "LiquidatorConfig",
    "LiquidatorResult",
    "ScanResult",
    "scan",
    "worst_first",
]
