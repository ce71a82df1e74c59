"""Reads what the funding and profile models need from the chain, over JSON-RPC.

* :meth:`EngineRecords.premium_reading`: ``premium_accumulator(market)`` pinned to a block and
  stamped with its timestamp (:class:`offchain.risk.funding.AccumulatorReading`);
* :func:`reference_reading`: a reference feed's answer as
  :class:`offchain.risk.funding.ReferenceReading`;
* :class:`AccountEventLog`: the engine's ``Trade``, ``Liquidation`` and ``Backstop`` logs kept
  for 90 days and extended block range by block range, folded into account histories
  (:func:`offchain.risk.profiles.fold_events`);
* :meth:`EngineRecords.record`: an account's record (trailing volume, equity, positions with
  their markets' open interest) for :func:`offchain.risk.profiles.derive`;
* :meth:`EngineRecords.current_profiles`: the profile registry's profiles in force.

Only the views and events used here are in the ABIs below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from web3 import Web3

from offchain import WAD
from offchain.protocol.chain import Block, FeedReading, rpc
from offchain.risk.funding import AccumulatorReading, ReferenceReading
from offchain.risk.profiles import (
    DAY_S,
    AccountHistory,
    AccountRecord,
    BackstopEvent,
    Key,
    LiquidationEvent,
    PositionView,
    TradeEvent,
    fold_events,
)


def _fn(name: str, inputs: Sequence[str], outputs: Sequence[str]) -> dict:
    return {
        "type": "function",
        "name": name,
        "stateMutability": "view",
        "inputs": [{"name": f"a{i}", "type": t} for i, t in enumerate(inputs)],
        "outputs": [{"name": "", "type": t} for t in outputs],
    }


def _event(name: str, fields: Sequence[tuple[str, str, bool]]) -> dict:
    return {
        "type": "event",
        "name": name,
        "anonymous": False,
        "inputs": [{"name": n, "type": t, "indexed": i} for n, t, i in fields],
    }


ENGINE_RECORDS_ABI = [
    _fn("premium_accumulator", ["uint256"], ["int256", "uint256"]),
    _fn("trailing_volume", ["address"], ["uint256"]),
    _fn("account_health", ["address", "uint256"], ["int256", "uint256", "uint256"]),
    _fn("markets_of", ["address", "uint256"], ["uint256[]"]),
    _fn("position", ["address", "uint256", "uint256"], ["int256", "int256"]),
    _fn("mark_price", ["uint256"], ["uint256", "bool"]),
    _fn("open_interest", ["uint256"], ["uint256"]),
    _event(
        "Trade",
        [
            ("market_id", "uint256", True),
            ("maker_owner", "address", True),
            ("maker_subaccount", "uint256", False),
            ("taker_owner", "address", True),
            ("taker_subaccount", "uint256", False),
            ("size", "int256", False),
            ("price", "uint256", False),
        ],
    ),
    _event(
        "Liquidation",
        [
            ("market_id", "uint256", True),
            ("owner", "address", True),
            ("subaccount", "uint256", False),
            ("liquidator", "address", True),
            ("liquidator_subaccount", "uint256", False),
            ("size", "int256", False),
            ("price", "uint256", False),
            ("penalty", "uint256", False),
            ("liquidator_reward", "uint256", False),
        ],
    ),
    _event(
        "Backstop",
        [
            ("owner", "address", True),
            ("subaccount", "uint256", True),
            ("equity", "int256", False),
            ("covered", "uint256", False),
            ("bad_debt", "uint256", False),
        ],
    ),
]
PROFILE_REGISTRY_ABI = [
    {
        "type": "function",
        "name": "profile",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "subaccount", "type": "uint256"}],
        "outputs": [
            {
                "name": "",
                "type": "tuple",
                "components": [
                    {"name": "class_id", "type": "uint256"},
                    {"name": "observed_at", "type": "uint256"},
                    {"name": "expires_at", "type": "uint256"},
                ],
            }
        ],
    },
    _fn("heartbeat", [], ["uint256"]),
]


def reference_reading(feed: FeedReading) -> ReferenceReading:
    """A reference feed's ``latestRoundData`` as the reference model's input."""
    return ReferenceReading(feed.answer, feed.updated_at, feed.decimals)


class EngineRecords:
    """Typed reads of the engine (and the profile registry) for funding and profiles."""

    def __init__(self, w3: Web3, engine: str, profile_registry: str | None = None) -> None:
        self.w3 = w3
        self.address = to_checksum_address(engine)
        self.contract = w3.eth.contract(address=self.address, abi=ENGINE_RECORDS_ABI)
        self.profiles = (
            w3.eth.contract(address=to_checksum_address(profile_registry), abi=PROFILE_REGISTRY_ABI)
            if profile_registry
            else None
        )
        self._block_times: dict[int, int] = {}

    def _call(self, name: str, *args: Any, block: int | str = "latest") -> Any:
        fn = getattr(self.contract.functions, name)(*args)
        return rpc(lambda: fn.call(block_identifier=block))

    def premium_reading(self, market_id: int, block: Block) -> AccumulatorReading:
        """``premium_accumulator(market_id)`` at ``block``, stamped with its timestamp."""
        weighted, notional = self._call("premium_accumulator", market_id, block=block.number)
        return AccumulatorReading(block.timestamp, int(weighted), int(notional))

    def block_time(self, number: int) -> int:
        """A block's timestamp (cached)."""
        if number not in self._block_times:
            block = rpc(lambda: self.w3.eth.get_block(number))
            self._block_times[number] = int(block["timestamp"])
        return self._block_times[number]

    def _logs(self, event: str, from_block: int, to_block: int) -> list[tuple[int, dict]]:
        logs = rpc(
            lambda: getattr(self.contract.events, event)().get_logs(
                from_block=from_block, to_block=to_block
            )
        )
        return [(self.block_time(int(log["blockNumber"])), dict(log["args"])) for log in logs]

    def trades(self, from_block: int, to_block: int) -> list[TradeEvent]:
        return [
            TradeEvent(
                at,
                int(a["market_id"]),
                a["maker_owner"],
                int(a["maker_subaccount"]),
                a["taker_owner"],
                int(a["taker_subaccount"]),
                int(a["size"]),
                int(a["price"]),
            )
            for at, a in self._logs("Trade", from_block, to_block)
        ]

    def liquidations(self, from_block: int, to_block: int) -> list[LiquidationEvent]:
        return [
            LiquidationEvent(at, int(a["market_id"]), a["owner"], int(a["subaccount"]))
            for at, a in self._logs("Liquidation", from_block, to_block)
        ]

    def backstops(self, from_block: int, to_block: int) -> list[BackstopEvent]:
        return [
            BackstopEvent(at, a["owner"], int(a["subaccount"]))
            for at, a in self._logs("Backstop", from_block, to_block)
        ]

    def record(self, owner: str, subaccount: int, history: AccountHistory) -> AccountRecord:
        """The account's record now: the owner's trailing volume, the subaccount's equity and
        its positions with their markets' open interest, both at the mark."""
        owner = to_checksum_address(owner)
        equity = int(self._call("account_health", owner, subaccount)[0])
        positions = []
        for market_id in self._call("markets_of", owner, subaccount):
            size, _ = self._call("position", owner, subaccount, int(market_id))
            if size == 0:
                continue
            price, _ = self._call("mark_price", int(market_id))
            oi = int(self._call("open_interest", int(market_id)))
            positions.append(
                PositionView(int(market_id), abs(int(size)) * price // WAD, oi * price // WAD)
            )
        return AccountRecord(
            owner=owner,
            subaccount=subaccount,
            trailing_volume=int(self._call("trailing_volume", owner)),
            equity=equity,
            history=history,
            positions=tuple(positions),
        )

    def current_profiles(self, keys: Iterable[Key]) -> dict[Key, tuple[int, int]]:
        """``(class_id, expires_at)`` of each account's last accepted profile."""
        if self.profiles is None:
            raise ValueError("no profile registry configured")
        out: dict[Key, tuple[int, int]] = {}
        for owner, sub in keys:
            fn = self.profiles.functions.profile(to_checksum_address(owner), sub)
            class_id, _, expires_at = rpc(fn.call)
            out[(owner, sub)] = (int(class_id), int(expires_at))
        return out


@dataclass
class AccountEventLog:
    """The engine's account events of the last ``keep_s`` seconds, extended incrementally.

    ``extend(records, to_block, now)`` reads blocks ``next_block .. to_block`` in chunks of
    ``chunk`` blocks and drops what is older than ``now - keep_s``.
    """

    next_block: int = 0
    keep_s: int = 90 * DAY_S
    chunk: int = 5_000
    trades: list[TradeEvent] = field(default_factory=list)
    liquidations: list[LiquidationEvent] = field(default_factory=list)
    backstops: list[BackstopEvent] = field(default_factory=list)

    def extend(self, records: EngineRecords, to_block: int, now: int) -> int:
        """Read up to ``to_block``; returns the number of events read."""
        added = 0
        start = self.next_block
        while start <= to_block:
            stop = min(start + self.chunk - 1, to_block)
            trades = records.trades(start, stop)
            liquidations = records.liquidations(start, stop)
            backstops = records.backstops(start, stop)
            # A failed read above leaves the log as it was: the range is read again next time.
            self.trades += trades
            self.liquidations += liquidations
            self.backstops += backstops
            added += len(trades) + len(liquidations) + len(backstops)
            start = stop + 1
            self.next_block = start
        oldest = now - self.keep_s
        self.trades = [e for e in self.trades if e.at > oldest]
        self.liquidations = [e for e in self.liquidations if e.at > oldest]
        self.backstops = [e for e in self.backstops if e.at > oldest]
        return added

    def histories(self, engine: str | None = None) -> dict[Key, AccountHistory]:
        """Per account, its fills, liquidations and backstops (the engine's own left out)."""
        return fold_events(self.trades, self.liquidations, self.backstops, engine)


__all__ = [
    "ENGINE_RECORDS_ABI",
    "PROFILE_REGISTRY_ABI",
    "AccountEventLog",
    "EngineRecords",
    "reference_reading",
]
