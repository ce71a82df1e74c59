"""The demo's ledger, read back from the chain: the engine's ``Liquidation`` and ``Backstop``
logs of each step, and the reconciliation of its books against its token balance
(:func:`offchain.devnet.report.reconcile`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from eth_utils import to_checksum_address

from offchain.devnet.report import BackstopEvent, Fill, LiquidationEvent, Reconciliation, reconcile
from offchain.devnet.scenario import TOKEN_SCALE
from offchain.devnet.system import System
from offchain.protocol.chain import EngineClient, Subaccount


def subaccount(owner: str, sub: int) -> Subaccount:
    """A subaccount key with a checksummed owner."""
    return Subaccount(to_checksum_address(owner), int(sub))


def read_events(
    engine: Any, client: EngineClient, start: int, head: int, step: int
) -> tuple[list[LiquidationEvent], list[BackstopEvent]]:
    """The ``Liquidation`` and ``Backstop`` logs of blocks ``start..head`` (ape contract
    ``engine``), recorded as happening in demo step ``step``."""
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
        for e in engine.Liquidation.range(start, head + 1)
    ]
    backstops = [
        read_backstop(engine, client, step, e) for e in engine.Backstop.range(start, head + 1)
    ]
    return liquidations, backstops


def read_backstop(engine: Any, client: EngineClient, step: int, e: Any) -> BackstopEvent:
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
        step, block, account, int(e.equity), int(e.covered), int(e.bad_debt), tuple(moves)
    )


def books(
    system: System,
    client: EngineClient,
    first_block: int,
    known: Iterable[Subaccount],
    liquidations: Sequence[LiquidationEvent],
    backstops: Sequence[BackstopEvent],
    market_ids: Sequence[int],
) -> Reconciliation:
    """Every subaccount that holds or held collateral (``known`` and every depositor since
    ``first_block``), every fill since then, against the engine's token balance."""
    engine = system.engine
    head = client.w3.eth.block_number + 1
    accounts = set(known) | {
        subaccount(d.owner, d.subaccount) for d in engine.Deposit.range(first_block, head)
    }
    fills = [Fill(int(t.size), int(t.price)) for t in engine.Trade.range(first_block, head)]
    fills += [Fill(e.size, e.price) for e in liquidations]
    fills += [fill for e in backstops for _, fill in e.moves]
    open_notional = sum(
        client.position(a.owner, a.subaccount, m)[1] for a in accounts for m in market_ids
    )
    collateral = {a: client.collateral_of(a.owner, a.subaccount) for a in accounts}
    balance = int(system.token.balanceOf(engine)) * TOKEN_SCALE
    insurance = Subaccount(client.address, 0)
    return reconcile(balance, collateral, insurance, open_notional, client.bad_debt(), fills)
