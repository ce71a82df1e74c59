"""The tick loop shared by the bots: one tick per new block, never two at once.

A tick that raises is a failure; the loop waits with exponential backoff and tries again (a node
that went away is retried until it returns). ``max_consecutive_failures`` failures in a row stop
the loop with ``TooManyFailures``, whose message says what kept failing: a bot that cannot work
must stop loudly rather than spin. Time comes from the block, so ticks are reproducible.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import Block, RpcUnavailable, latest_block

log = logging.getLogger("dmm.loop")


class TooManyFailures(RuntimeError):  # noqa: N818 - named for what happened
    """The bot failed ``max_consecutive_failures`` ticks in a row and stopped."""


@dataclass(frozen=True)
class LoopConfig:
    """Polling and failure policy of a bot's loop."""

    poll_interval: float = 0.5  # seconds between looks for a new block
    max_consecutive_failures: int = 5
    backoff_initial: float = 1.0  # seconds after the first failure; doubles each failure
    backoff_max: float = 30.0
    max_ticks: int | None = None  # stop after this many ticks (tests, one-shot runs)

    def __post_init__(self) -> None:
        if self.max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be at least 1")
        if self.poll_interval <= 0 or self.backoff_initial <= 0:
            raise ValueError("poll_interval and backoff_initial must be positive")


def run_loop(
    name: str,
    w3: Web3,
    tick: Callable[[Block], Any],
    config: LoopConfig,
    metrics: BotMetrics | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Call ``tick(block)`` once per new block until ``stop`` is set; returns the ticks run.

    Raises ``TooManyFailures`` after ``config.max_consecutive_failures`` failed ticks in a row.
    """
    stop = stop or threading.Event()
    last_number: int | None = None
    failures = 0
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
            failures += 1
            kind = "rpc" if isinstance(exc, RpcUnavailable) else type(exc).__name__
            if metrics is not None:
                metrics.failure(kind)
            if failures >= config.max_consecutive_failures:
                message = (
                    f"{name}: stopping after {failures} consecutive failed ticks;"
                    f" last error: {type(exc).__name__}: {exc}"
                )
                log.critical(message)
                raise TooManyFailures(message) from exc
            delay = min(config.backoff_initial * 2 ** (failures - 1), config.backoff_max)
            log.error(
                "%s tick failed (%d/%d in a row): %s: %s; retry in %.2f s",
                name,
                failures,
                config.max_consecutive_failures,
                type(exc).__name__,
                exc,
                delay,
            )
            if stop.wait(delay):
                break
            continue
        if failures:
            log.info("%s recovered after %d failed tick(s)", name, failures)
        failures = 0
        last_number = block.number
        ticks += 1
        if metrics is not None:
            metrics.tick_done()
    return ticks


__all__ = ["LoopConfig", "TooManyFailures", "run_loop"]
