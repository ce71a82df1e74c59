"""The tick loop shared by the bots: one tick per new block, never two at once.

A tick that raises is a failure; the loop waits with exponential backoff and tries again. Two
kinds of failure, two limits, each stopping the loop with ``TooManyFailures`` whose message says
what kept failing (a bot that cannot work must stop loudly rather than spin):

- **the node unreachable** (``RpcUnavailable``): tolerated for ``outage_tolerance_seconds`` since
  the last JSON-RPC call that got an answer, any call (``chain.last_answer``): a node that answers
  now and then is not an outage, a node that has been silent for longer than that is;
- **a tick failing while the node answers** (a reverted simulation, a bad contract answer):
  ``max_consecutive_failures`` ticks in a row.

Time comes from the block, so ticks are reproducible.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import (
    Block,
    RpcUnavailable,
    describe_unavailable,
    last_answer,
    latest_block,
)

log = logging.getLogger("dmm.loop")


class TooManyFailures(RuntimeError):  # noqa: N818 - named for what happened
    """The bot kept failing (node silent too long, or too many failed ticks) and stopped."""


@dataclass(frozen=True)
class LoopConfig:
    """Polling and failure policy of a bot's loop."""

    poll_interval: float = 0.5  # seconds between looks for a new block
    max_consecutive_failures: int = 5  # failed ticks in a row while the node answers
    outage_tolerance_seconds: float = 300.0  # node unreachable this long (since any answer)
    backoff_initial: float = 1.0  # seconds after the first failure; doubles each failure
    backoff_max: float = 30.0
    max_ticks: int | None = None  # stop after this many ticks (tests, one-shot runs)

    def __post_init__(self) -> None:
        if self.max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be at least 1")
        if self.poll_interval <= 0 or self.backoff_initial <= 0:
            raise ValueError("poll_interval and backoff_initial must be positive")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        if self.outage_tolerance_seconds < 0:
            raise ValueError("outage_tolerance_seconds must not be negative")


def run_loop(
    name: str,
    w3: Web3,
    tick: Callable[[Block], Any],
    config: LoopConfig,
    metrics: BotMetrics | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Call ``tick(block)`` once per new block until ``stop`` is set; returns the ticks run.

    Raises ``TooManyFailures`` once the node has not answered any call for
    ``config.outage_tolerance_seconds``, or after ``config.max_consecutive_failures`` failed
    ticks in a row while it answers.
    """
    stop = stop or threading.Event()
    last_number: int | None = None
    failures = 0  # ticks failed in a row while the node answered
    attempts = 0  # failures of any kind since the last good tick (for the backoff)
    started = clock()
    ticks = 0
    while not stop.is_set():
        if config.max_ticks is not None and ticks >= config.max_ticks:
            break
        try:
            block = latest_block(w3)
            if block.number == last_number:
                stop.wait(config.poll_interval)
                continue
            tick(block)
        except Exception as exc:
            attempts += 1
            delay = min(config.backoff_initial * 2 ** (attempts - 1), config.backoff_max)
            error = f"{type(exc).__name__}: {exc}"
            if metrics is not None:
                metrics.failure("rpc" if isinstance(exc, RpcUnavailable) else type(exc).__name__)
            if isinstance(exc, RpcUnavailable):
                error = f"RpcUnavailable: {describe_unavailable(exc)}"
                answered = last_answer(w3)
                since = max(started, answered) if answered is not None else started
                silent = clock() - since
                if silent >= config.outage_tolerance_seconds:
                    message = (
                        f"{name}: stopping: the node has not answered for {silent:.0f} s"
                        f" (tolerance {config.outage_tolerance_seconds:g} s); last error: {error}"
                    )
                    log.critical(message)
                    raise TooManyFailures(message) from exc
                log.error(
                    "%s tick failed: node unreachable for %.1f s of %g s tolerated (%s);"
                    " retry in %.2f s",
                    name,
                    silent,
                    config.outage_tolerance_seconds,
                    error,
                    delay,
                )
            else:
                failures += 1
                if failures >= config.max_consecutive_failures:
                    message = (
                        f"{name}: stopping after {failures} consecutive failed ticks;"
                        f" last error: {error}"
                    )
                    log.critical(message)
                    raise TooManyFailures(message) from exc
                log.error(
                    "%s tick failed (%d/%d in a row): %s; retry in %.2f s",
                    name,
                    failures,
                    config.max_consecutive_failures,
                    error,
                    delay,
                )
            if stop.wait(delay):
                break
            continue
        if attempts:
            log.info("%s recovered after %d failed attempt(s)", name, attempts)
        failures = attempts = 0
        last_number = block.number
        ticks += 1
        if metrics is not None:
            metrics.tick_done()
    return ticks


__all__ = ["LoopConfig", "TooManyFailures", "run_loop"]
