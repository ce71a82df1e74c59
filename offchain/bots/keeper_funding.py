"""The funding rate the keeper signs, per market: the same models the funding study replays.

Each market of the bot config may name a funding source (``markets[].funding``, see
``offchain/bots/keeper.example.yaml``):

- ``premium``: :class:`offchain.risk.funding.PremiumFundingModel` fed every tick with the engine's
  premium accumulators read at the tick's block (:meth:`offchain.bots.engine_records.
  EngineRecords.premium_reading`): the fills' notional-weighted premium over the funding window
  plus Binance's clamped interest term, per second;
- ``reference``: :class:`offchain.risk.funding.ReferenceFundingModel` on a reference feed (a
  larger venue's published 8-hour rate), exactly as :func:`offchain.risk.funding_history.
  replay_reference` replays it over the settled history in ``make funding-study``;
- ``zero`` (or no section): the keeper signs 0.

Either quote is clamped to the market's on-chain ``max_funding_rate`` (read from the registry
each tick). Whether a new rate is worth an update on its own is
:func:`offchain.risk.funding.funding_needs_push` (sign flip, or a move beyond 10% and 0.001% per
8 hours): the premium moves with every fill and every second of a decay, and without that
hysteresis the keeper would push every block.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from offchain.bots.engine_records import EngineRecords, reference_reading
from offchain.protocol.chain import Block, FeedClient
from offchain.risk.funding import (
    FundingModel,
    FundingQuote,
    PremiumFundingModel,
    ReferenceFundingModel,
)

log = logging.getLogger("dmm.keeper")


@dataclass(frozen=True)
class MarketFunding:
    """A market's funding source: its model and, in reference mode, the feed it mirrors."""

    market_id: int
    model: FundingModel | None
    feed: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model, ReferenceFundingModel) and not self.feed:
            raise ValueError(f"market {self.market_id}: reference funding needs a feed")

    @property
    def mode(self) -> str:
        if isinstance(self.model, PremiumFundingModel):
            return "premium"
        if isinstance(self.model, ReferenceFundingModel):
            return "reference"
        return "zero"


class FundingPlanner:
    """Per-market funding quotes for the keeper (module docstring)."""

    def __init__(
        self,
        markets: Mapping[int, MarketFunding],
        records: EngineRecords | None,
        feeds: FeedClient,
    ) -> None:
        if records is None and any(m.mode == "premium" for m in markets.values()):
            raise ValueError("premium funding reads the engine: give the engine's address")
        self.markets = dict(markets)
        self.records = records
        self.feeds = feeds

    def mode(self, market_id: int) -> str:
        m = self.markets.get(market_id)
        return m.mode if m is not None else "zero"

    def quote(self, market_id: int, block: Block, max_funding_rate: int) -> FundingQuote | None:
        """The rate to sign for ``market_id`` at ``block`` (``None``: the market signs 0)."""
        m = self.markets.get(market_id)
        if m is None or m.model is None:
            return None
        if isinstance(m.model, PremiumFundingModel):
            assert self.records is not None
            last = m.model.readings[-1].at if m.model.readings else None
            if last is None or block.timestamp > last:
                m.model.observe(self.records.premium_reading(market_id, block))
            return m.model.quote(block.timestamp, max_funding_rate)
        assert m.feed is not None
        reading = reference_reading(self.feeds.latest(m.feed))
        return m.model.quote(reading, block.timestamp, max_funding_rate)


__all__ = ["FundingPlanner", "MarketFunding"]
