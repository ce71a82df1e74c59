"""Auto-deleveraging, the bot's side: whom to deleverage first when the engine has a deficit.

When a backstop leaves bad debt (or the insurance fund's positions lose more than it holds), the
engine's ``deleverage`` closes positions on the other side of the fund's against it, each
account paying its share of the deficit. The engine checks eligibility; the order is the
caller's. This module ranks the candidates the way dYdX, Hyperliquid and Binance do: largest
unrealised profit times leverage first::

    pnl      = floor(s * p / WAD) - open_notional          (the position's unrealised profit)
    leverage = N / equity,  N = ceil(|s| * p / WAD)
    score    = max(pnl, 0) * N / equity                    (0 for an account without profit)

Accounts with no profit come last (score 0, largest position first): they are deleveraged only
when the profitable ones are exhausted. Before deleveraging anyone, the liquidation bot lets the
insurance fund's equity repay bad debt (``repay_bad_debt``).
"""

from __future__ import annotations

from dataclasses import dataclass

from offchain import WAD
from offchain.protocol.chain import EngineClient, Subaccount

# A deleverage that reverts for one of these means there is nothing left to do there.
DONE_REASONS = (
    "engine: no deficit to recover",
    "engine: insurance fund holds no position in the market",
    "engine: no position",
    "engine: position on the insurance fund's side",
    "engine: no equity to deleverage",
)


@dataclass(frozen=True)
class Candidate:
    """An account on the other side of the insurance fund in one market."""

    account: Subaccount
    market_id: int
    size: int
    pnl: int
    notional: int
    equity: int

    @property
    def score(self) -> int:
        """Unrealised profit times leverage (USD WAD), 0 without profit or equity."""
        if self.pnl <= 0 or self.equity <= 0:
            return 0
        return self.pnl * self.notional // self.equity


def candidate(
    account: Subaccount, market_id: int, size: int, open_notional: int, price: int, equity: int
) -> Candidate:
    """The ranking figures of one position at the mark price ``price``."""
    return Candidate(
        account=account,
        market_id=market_id,
        size=size,
        pnl=size * price // WAD - open_notional,
        notional=-(-abs(size) * price // WAD),
        equity=equity,
    )


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Largest score first; among equal scores the largest position."""
    return sorted(candidates, key=lambda c: (c.score, c.notional), reverse=True)


def plan(engine: EngineClient) -> list[Candidate]:
    """Every account that could be deleveraged now, ranked; empty without a deficit."""
    if engine.deficit() == 0:
        return []
    fund = Subaccount(engine.address, 0)
    fund_markets = engine.markets_of(fund.owner, fund.subaccount)
    if not fund_markets:
        return []
    accounts = engine.accounts()
    equity = {h.account: h.equity for h in engine.health(accounts)}
    out: list[Candidate] = []
    for market_id in fund_markets:
        fund_size, _ = engine.position(fund.owner, fund.subaccount, market_id)
        if fund_size == 0:
            continue
        price, _ = engine.mark_price(market_id)
        for account, (size, notional) in zip(
            accounts, engine.positions(accounts, market_id), strict=True
        ):
            if size != 0 and (size > 0) != (fund_size > 0) and equity[account] > 1:
                out.append(candidate(account, market_id, size, notional, price, equity[account]))
    return rank(out)


__all__ = ["DONE_REASONS", "Candidate", "candidate", "plan", "rank"]
