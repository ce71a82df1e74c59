"""The demo's ledger, read back from the chain: the engine's liquidation, backstop,
deleveraging and bad-debt logs of each step, and the reconciliation of its books against its
token balance (the engine's events replayed by :mod:`offchain.devnet.book_replay`, checked
subaccount by subaccount against the views, :func:`offchain.devnet.report.reconcile`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from offchain import WAD
from offchain.devnet.book_replay import ENGINE_LOGS, Books, Key, Log, ceil_div, replay
from offchain.devnet.report import (
    BackstopEvent,
    DeleverageEvent,
    Fill,
    LiquidationEvent,
    Reconciliation,
    RepayEvent,
    reconcile,
)
from offchain.devnet.scenario import TOKEN_SCALE
from offchain.devnet.system import System
from offchain.protocol.chain import EngineClient, Subaccount


def subaccount(owner: str, sub: int) -> Subaccount:
    """A subaccount key with a checksummed owner."""
    return Subaccount(to_checksum_address(owner), int(sub))


@dataclass
class StepEvents:
    """The engine's logs of one step that the summary reports."""

    liquidations: list[LiquidationEvent]
    backstops: list[BackstopEvent]
    deleverages: list[DeleverageEvent]
    repayments: list[RepayEvent]


def read_events(engine: Any, client: EngineClient, start: int, head: int, step: int) -> StepEvents:
    """The logs of blocks ``start..head`` (ape contract ``engine``), recorded as happening in
    demo step ``step``."""
    stop = head + 1
    liquidations = [
        LiquidationEvent(
            step,
            int(e.block_number),
            subaccount(e.owner, e.subaccount),
            subaccount(e.liquidator, e.liquidator_subaccount),
            int(e.market_id),
            int(e.size),
            int(e.price),
            int(e.penalty),
            int(e.liquidator_reward),
        )
        for e in engine.Liquidation.range(start, stop)
    ]
    rewards = {e.transaction_hash: int(e.amount) for e in engine.BackstopReward.range(start, stop)}
    backstops = [
        read_backstop(engine, client, step, e, rewards.get(e.transaction_hash, 0))
        for e in engine.Backstop.range(start, stop)
    ]
    deleverages = [
        DeleverageEvent(
            step,
            int(e.block_number),
            subaccount(e.owner, e.subaccount),
            int(e.market_id),
            int(e.size),
            int(e.price),
            int(e.transfer),
            int(e.deficit_after),
        )
        for e in engine.Deleveraged.range(start, stop)
    ]
    repayments = [
        RepayEvent(step, int(e.block_number), int(e.amount), int(e.bad_debt_after))
        for e in engine.BadDebtRepaid.range(start, stop)
    ]
    return StepEvents(liquidations, backstops, deleverages, repayments)


def read_backstop(
    engine: Any, client: EngineClient, step: int, e: Any, reward: int = 0
) -> BackstopEvent:
    """A ``Backstop`` log with the positions it moved (read at the block before) and the
    price of each move (the ``FundingAccrued`` log of the same transaction)."""
    block = int(e.block_number)
    account = subaccount(e.owner, e.subaccount)
    prices = {
        int(f.market_id): int(f.price)
        for f in engine.FundingAccrued.range(block, block + 1)
        if f.transaction_hash == e.transaction_hash
    }
    view = client.contract.functions
    owner, sub = account.owner, account.subaccount
    moves = []
    for market_id in view.markets_of(owner, sub).call(block_identifier=block - 1):
        size, _ = view.position(owner, sub, market_id).call(block_identifier=block - 1)
        moves.append((int(market_id), Fill(int(size), prices[int(market_id)])))
    return BackstopEvent(
        step,
        block,
        account,
        int(e.equity),
        int(e.covered),
        int(e.bad_debt),
        tuple(moves),
        reward,
    )


def engine_logs(engine: Any, start: int, stop: int) -> list[Log]:
    """Every log the replay needs, of blocks ``start .. stop - 1``, in chain order."""
    out = []
    for name in ENGINE_LOGS:
        for e in getattr(engine, name).range(start, stop):
            out.append(
                Log(
                    name,
                    int(e.block_number),
                    int(e.log_index),
                    str(e.transaction_hash),
                    dict(e.event_arguments),
                )
            )
    return sorted(out, key=lambda x: (x.block, x.index))


def compare(books: Books, system: System, client: EngineClient) -> tuple[int, list[str]]:
    """Each replayed subaccount against the chain's views: collateral, every position's size
    and open notional, every funding snapshot, and the bad debt. Returns (subaccounts checked,
    differences)."""
    engine = system.engine
    wrong: list[str] = []
    keys = set(books.collateral) | {k for k, _ in books.positions}
    for owner, sub in sorted(keys):
        got = client.collateral_of(owner, sub)
        if got != books.collateral[(owner, sub)]:
            wrong.append(
                f"{owner}/{sub} collateral: chain {got}, replay {books.collateral[(owner, sub)]}"
            )
    for ((owner, sub), market), pos in sorted(books.positions.items()):
        size, notional = client.position(owner, sub, market)
        if (size, notional) != (pos.size, pos.open_notional):
            wrong.append(
                f"{owner}/{sub} market {market}: chain ({size}, {notional}), replay"
                f" ({pos.size}, {pos.open_notional})"
            )
    for ((owner, sub), market), snap in sorted(books.snapshots.items()):
        got = int(engine.funding_snapshot(owner, sub, market))
        if got != snap:
            wrong.append(f"{owner}/{sub} market {market} snapshot: chain {got}, replay {snap}")
    if client.bad_debt() != books.bad_debt:
        wrong.append(f"bad debt: chain {client.bad_debt()}, replay {books.bad_debt}")
    return len(keys), wrong + books.mismatches


def unsettled_funding(books: Books, system: System, markets: Iterable[int]) -> dict[Key, int]:
    """The funding each subaccount still owes now (negative: is owed), as the engine's equity
    counts it: ``sum ceil(size * (index now - snapshot) / WAD)`` over its open positions."""
    index = {m: int(system.engine.funding_index(m)) for m in markets}
    out: dict[Key, int] = {}
    for (k, m), p in books.positions.items():
        if p.size:
            owed = ceil_div(p.size * (index[m] - books.snapshots.get((k, m), 0)), WAD)
            out[k] = out.get(k, 0) + owed
    return out


def books(
    system: System,
    client: EngineClient,
    first_block: int,
    market_ids: Iterable[int],
    backstop_reward: int | None = None,
) -> tuple[Reconciliation, Books, dict[Key, int]]:
    """The engine's events since ``first_block`` replayed, checked against the views and set
    next to the engine's token balance; with the funding each subaccount still owes."""
    head = client.w3.eth.block_number
    replayed = replay(
        engine_logs(system.engine, first_block, head + 1), client.address, TOKEN_SCALE
    )
    checked, wrong = compare(replayed, system, client)
    insurance = Subaccount(client.address, 0)
    collateral = {
        Subaccount(o, s): client.collateral_of(o, s)
        for o, s in set(replayed.collateral) | {k for k, _ in replayed.positions}
    }
    positions = {(k, m): client.position(k[0], k[1], m)[1] for (k, m) in replayed.positions}
    open_notional = sum(positions.values())
    fund_notional = sum(v for (k, _), v in positions.items() if Subaccount(*k) == insurance)
    balance = int(system.token.balanceOf(system.engine)) * TOKEN_SCALE
    owed = unsettled_funding(replayed, system, market_ids)
    reconciliation = reconcile(
        balance,
        collateral,
        insurance,
        open_notional,
        fund_notional,
        client.bad_debt(),
        (replayed.rounding, replayed.fills),
        (replayed.total_funding_settled, replayed.settlements, sum(owed.values())),
        checked,
        wrong,
    )
    return reconciliation, replayed, owed


__all__ = [
    "StepEvents",
    "books",
    "compare",
    "engine_logs",
    "read_backstop",
    "read_events",
    "subaccount",
    "unsettled_funding",
]
