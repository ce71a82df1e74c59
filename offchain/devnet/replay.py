"""Replay prices into devnet ``MockPriceFeed``s: a CSV history or a seeded crash scenario.

``crash_scenario`` is reproducible from its seed: a quiet random walk, then a crash of
``crash_pct`` spread over ``crash_steps`` readings, then a partial rebound. ``replay`` sends one
``set_answer`` per market per step through the ``TxSender`` and waits ``interval`` seconds
between steps (``0`` replays as fast as blocks are mined).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from offchain.protocol.chain import FeedClient
from offchain.protocol.tx_sender import SentTx, TxSender

log = logging.getLogger("dmm.replay")


@dataclass(frozen=True)
class CrashScenario:
    """Parameters of a generated crash (prices in USD)."""

    start_price: float = 60_000.0
    calm_steps: int = 5
    calm_vol: float = 0.002  # per step
    crash_pct: float = 0.30  # total fall
    crash_steps: int = 3
    rebound_pct: float = 0.05
    rebound_steps: int = 2
    seed: int = 7

    def __post_init__(self) -> None:
        if self.start_price <= 0:
            raise ValueError("start_price must be positive")
        if not 0 < self.crash_pct < 1:
            raise ValueError("crash_pct must lie in (0, 1)")
        if self.crash_steps < 1 or self.calm_steps < 0 or self.rebound_steps < 0:
            raise ValueError("step counts must be non-negative (crash_steps >= 1)")


def crash_scenario(s: CrashScenario) -> list[float]:
    """The scenario's prices, one per step (the start price is not repeated)."""
    rng = np.random.default_rng(s.seed)
    prices: list[float] = []
    p = s.start_price
    for _ in range(s.calm_steps):
        p *= float(np.exp(rng.normal(0.0, s.calm_vol)))
        prices.append(p)
    step = (1 - s.crash_pct) ** (1 / s.crash_steps)
    for _ in range(s.crash_steps):
        p *= step
        prices.append(p)
    if s.rebound_steps:
        up = (1 + s.rebound_pct) ** (1 / s.rebound_steps)
        for _ in range(s.rebound_steps):
            p *= up
            prices.append(p)
    return prices


def to_answer(price: float, decimals: int) -> int:
    """A USD price as a feed answer with ``decimals`` decimals."""
    return round(price * 10**decimals)


def scaled_paths(
    feeds: FeedClient, targets: Sequence[str], prices: Sequence[float], base: float | None
) -> dict[str, list[float]]:
    """The path each feed replays: ``prices`` as they are (``base`` None), or as moves relative
    to ``base`` applied to each feed's current price (so BTC and ETH feeds can replay one path
    without a 20x jump that a keeper would refuse as a spike)."""
    if base is None:
        return {feed: [float(p) for p in prices] for feed in targets}
    if not base > 0:
        raise ValueError(f"cannot scale a path from a base price of {base}")
    out = {}
    for feed in targets:
        current = feeds.latest(feed).price
        if not current > 0:
            raise ValueError(f"feed {feed} answers {current}: no price to replay moves from")
        out[feed] = [current * float(p) / base for p in prices]
    return out


def replay(
    sender: TxSender,
    feeds: FeedClient,
    paths: Mapping[str, Sequence[float]],
    interval: float = 1.0,
    on_step: Callable[[int, dict[str, SentTx]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    before_step: Callable[[int], None] | None = None,
) -> list[dict[str, SentTx]]:
    """Push ``paths[feed][i]`` into each feed at step ``i``; returns the mined transactions.

    ``before_step(i)`` runs before each step (the devnet moves its clock there)."""
    steps = {len(p) for p in paths.values()}
    if len(steps) != 1:
        raise ValueError("every feed needs the same number of prices")
    (n,) = steps
    out: list[dict[str, SentTx]] = []
    for i in range(n):
        if before_step is not None:
            before_step(i)
        mined: dict[str, SentTx] = {}
        for feed, path in paths.items():
            answer = to_answer(path[i], feeds.decimals(feed))
            mined[feed] = sender.send(
                feed, feeds.encode_set_answer(feed, answer), label=f"replay {feed[:10]} step {i}"
            )
            log.info(
                "replay step %d/%d: feed %s -> %.2f (block %d)",
                i + 1,
                n,
                feed,
                path[i],
                mined[feed].block_number,
            )
        out.append(mined)
        if on_step is not None:
            on_step(i, mined)
        if interval > 0 and i + 1 < n:
            sleep(interval)
    return out


__all__ = ["CrashScenario", "crash_scenario", "replay", "scaled_paths", "to_answer"]
