"""Chain clients: typed reads of the registry, the engine and Chainlink feeds over JSON-RPC.

Every call goes through one ``Web3`` HTTP provider with a request timeout, so a dead or hung node
surfaces as ``RpcUnavailable`` within seconds instead of blocking a bot forever. Only the
functions the bots need are in the ABIs below (the contracts' full ABIs live in ``.build``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address
from web3 import HTTPProvider, Web3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

from offchain.protocol.abis import ENGINE_ABI, FEED_ABI, REGISTRY_ABI
from offchain.protocol.margin_math import Guardrails, MarketState
from offchain.protocol.signing import RiskUpdate

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0  # seconds per JSON-RPC request


class RpcUnavailable(ConnectionError):  # noqa: N818 - named for what happened
    """The node did not answer (refused, reset, timed out, or a 5xx)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means "the node is unreachable, try again later"."""
    if isinstance(exc, (RpcUnavailable, *TRANSIENT_ERRORS)):
        return True
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return False


def describe_unavailable(exc: BaseException) -> str:
    """The short reason a node did not answer ("connection refused", "timed out"), not the
    transport library's paragraph."""
    text = str(exc)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("No route to host", "no route to host"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection aborted"),
        ("RemoteDisconnected", "connection closed by the node"),
    ):
        if needle in text:
            return short
    return " ".join(text.split())[:200]


def rpc(fn: Callable[[], T]) -> T:
    """Run one RPC interaction, mapping transport failures to ``RpcUnavailable``."""
    try:
        return fn()
    except RpcUnavailable:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise RpcUnavailable(f"{type(exc).__name__}: {exc}") from exc
        raise


class TrackedHTTPProvider(HTTPProvider):
    """An HTTP provider that notes when the node last answered (any call, even an error reply),
    so that a bot measures an outage from the last answer, not from its last good tick."""

    last_answer: float | None = None

    def make_request(self, method: Any, params: Any) -> Any:
        response = super().make_request(method, params)
        self.last_answer = time.monotonic()
        return response

    def make_batch_request(self, requests: Any) -> Any:
        response = super().make_batch_request(requests)
        self.last_answer = time.monotonic()
        return response


def connect(url: str, timeout: float = DEFAULT_TIMEOUT) -> Web3:
    """A ``Web3`` on an HTTP endpoint with a per-request timeout (no retries inside web3)."""
    provider = TrackedHTTPProvider(url, request_kwargs={"timeout": timeout})
    provider.exception_retry_configuration = None
    return Web3(provider)


def last_answer(w3: Any) -> float | None:
    """``time.monotonic()`` of the node's last answer through ``w3`` (``None``: never, or not
    a provider from :func:`connect`)."""
    return getattr(getattr(w3, "provider", None), "last_answer", None)


class CallFailed(RuntimeError):  # noqa: N818 - named for what happened
    """A view call reverted, or the address does not hold the contract the call expects; the
    message names the call and the address."""


def _args_text(args: Sequence[Any]) -> str:
    text = ", ".join(str(a) for a in args)
    return text if len(text) <= 80 else text[:77] + "..."


def call_view(contract: Any, kind: str, address: str, name: str, *args: Any) -> Any:
    """``contract.functions.name(*args).call()`` through :func:`rpc`; a revert or an address
    without that contract raises :class:`CallFailed` naming ``kind.name(args)`` and the address."""
    try:
        return rpc(lambda: getattr(contract.functions, name)(*args).call())
    except ContractLogicError as exc:
        raise CallFailed(
            f"{kind}.{name}({_args_text(args)}) at {address} reverted: {revert_reason(exc)}"
        ) from exc
    except BadFunctionCallOutput as exc:
        raise CallFailed(
            f"{kind}.{name}({_args_text(args)}) at {address}: no answer (no {kind} contract"
            " at that address on this chain?)"
        ) from exc


def revert_reason(exc: BaseException) -> str:
    """The revert string of a failed call, or the exception's text."""
    text = exc.message if isinstance(exc, ContractLogicError) and exc.message else str(exc)
    marker = "execution reverted: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.strip()


# ---------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True)
class FeedReading:
    """One ``latestRoundData`` answer of a Chainlink-compatible feed."""

    feed: str
    round_id: int
    answer: int
    decimals: int
    updated_at: int

    @property
    def price(self) -> float:
        """The answer in USD (may be zero or negative: check before use)."""
        return self.answer / 10**self.decimals


@dataclass(frozen=True)
class Subaccount:
    """A subaccount ``(owner, id)`` as the engine enumerates it."""

    owner: str
    subaccount: int


@dataclass(frozen=True)
class Health:
    """A subaccount's health (USD WAD) as the engine's batch view returns it."""

    account: Subaccount
    equity: int
    maintenance: int
    initial: int
    liquidatable: bool

    @property
    def margin_ratio(self) -> float:
        """Equity over maintenance: below 1 is liquidatable, below 0 is underwater."""
        if self.maintenance == 0:
            return math.inf if self.equity >= 0 else -math.inf
        return self.equity / self.maintenance


@dataclass(frozen=True)
class Block:
    """The few fields of a block the bots need."""

    number: int
    timestamp: int
    base_fee: int


def latest_block(w3: Web3) -> Block:
    """The latest block (number, timestamp, base fee)."""
    block = rpc(lambda: w3.eth.get_block("latest"))
    return Block(int(block["number"]), int(block["timestamp"]), int(block.get("baseFeePerGas", 0)))


# ---------------------------------------------------------------------------------------------
# Clients


class FeedClient:
    """Reads Chainlink ``AggregatorV3Interface`` feeds; caches each feed's decimals."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self._decimals: dict[str, int] = {}

    def _contract(self, feed: str) -> Any:
        return self.w3.eth.contract(address=to_checksum_address(feed), abi=FEED_ABI)

    def decimals(self, feed: str) -> int:
        key = to_checksum_address(feed)
        if key not in self._decimals:
            self._decimals[key] = int(call_view(self._contract(key), "feed", key, "decimals"))
        return self._decimals[key]

    def latest(self, feed: str) -> FeedReading:
        """The feed's latest round."""
        decimals = self.decimals(feed)
        round_id, answer, _, updated_at, _ = call_view(
            self._contract(feed), "feed", to_checksum_address(feed), "latestRoundData"
        )
        return FeedReading(
            feed=to_checksum_address(feed),
            round_id=int(round_id),
            answer=int(answer),
            decimals=decimals,
            updated_at=int(updated_at),
        )

    def encode_set_answer(self, feed: str, answer: int) -> bytes:
        """Calldata of a mock feed's ``set_answer`` (devnet replay)."""
        return bytes.fromhex(
            self._contract(feed).encode_abi("set_answer", args=[answer]).removeprefix("0x")
        )


class RegistryClient:
    """Reads the ``RiskParameterRegistry`` and encodes ``submit_updates``."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=REGISTRY_ABI)

    def _call(self, name: str, *args: Any) -> Any:
        return call_view(self.contract, "registry", self.address, name, *args)

    def market_state(self, market_id: int) -> MarketState:
        return MarketState(*self._call("market_state", market_id))

    def guardrails(self, market_id: int) -> Guardrails:
        return Guardrails(*self._call("guardrails", market_id))

    def multiplier(self, market_id: int) -> int:
        return int(self._call("multiplier", market_id))

    def tier0_rate(self, market_id: int) -> int:
        """The first tier's maintenance rate (WAD); the calibrated model scales it."""
        tiers = self._call("tiers", market_id)
        if not tiers:
            raise ValueError(f"market {market_id} is not configured in the registry")
        return int(tiers[0][1])

    def funding_rate(self, market_id: int) -> int:
        return int(self._call("funding_rate", market_id))

    def is_stale(self, market_id: int) -> bool:
        return bool(self._call("is_stale", market_id))

    def is_configured(self, market_id: int) -> bool:
        return bool(self._call("is_configured", market_id))

    def paused(self) -> bool:
        return bool(self._call("paused"))

    def signer_threshold(self) -> int:
        return int(self._call("signer_threshold"))

    def domain_name(self) -> str:
        """The EIP-712 domain name (``DynamicMarginRiskRegistry`` for a registry)."""
        return str(self._call("eip712Domain")[1])

    def is_keeper(self, signer: str) -> bool:
        return bool(self._call("is_keeper", to_checksum_address(signer)))

    def encode_submit(self, updates: Sequence[RiskUpdate], signatures: Sequence[bytes]) -> bytes:
        """Calldata of ``submit_updates(updates, signatures)``."""
        data = self.contract.encode_abi(
            "submit_updates", args=[[u.as_tuple() for u in updates], list(signatures)]
        )
        return bytes.fromhex(data.removeprefix("0x"))

    def risk_updated_events(self, from_block: int, to_block: int | str = "latest") -> list[dict]:
        """``RiskUpdated`` logs in a block range, oldest first, as plain dicts."""
        if isinstance(to_block, str) and from_block > int(rpc(lambda: self.w3.eth.block_number)):
            return []
        logs = rpc(
            lambda: self.contract.events.RiskUpdated().get_logs(
                from_block=from_block, to_block=to_block
            )
        )
        return [{**dict(log["args"]), "block_number": int(log["blockNumber"])} for log in logs]


class EngineClient:
    """Reads the ``MarginEngine`` (enumeration, batch health) and encodes liquidations."""

    PAGE = 100  # the engine's batch bound

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=ENGINE_ABI)

    def _call(self, name: str, *args: Any) -> Any:
        return call_view(self.contract, "engine", self.address, name, *args)

    def count(self) -> int:
        return int(self._call("accounts_with_positions_count"))

    def registry_address(self) -> str:
        return to_checksum_address(self._call("REGISTRY"))

    def _batch_call(self, name: str, arg_lists: Sequence[tuple], out_types: list[str]) -> list:
        """Many ``eth_call``s of one view in one JSON-RPC batch; decoded results in order."""
        if not arg_lists:
            return []

        def run() -> list:
            with self.w3.batch_requests() as batch:
                for args in arg_lists:
                    data = self.contract.encode_abi(name, args=list(args))
                    batch.add(self.w3.eth.call({"to": self.address, "data": data}))
                raw = batch.execute()
            return [abi_decode(out_types, bytes(r)) for r in raw]

        return rpc(run)

    def accounts(self, start: int = 0, count: int | None = None) -> list[Subaccount]:
        """Every subaccount with open positions (one batched round trip)."""
        total = self.count() if count is None else count
        pages = [(s, self.PAGE) for s in range(start, total, self.PAGE)]
        out: list[Subaccount] = []
        for (entries,) in self._batch_call(
            "accounts_with_positions", pages, ["(address,uint256)[]"]
        ):
            out.extend(Subaccount(to_checksum_address(o), int(s)) for o, s in entries)
        return out

    def liquidatable_accounts(self, total: int | None = None) -> list[Subaccount]:
        """The liquidatable subaccounts, scanning the enumeration in pages of 100, one batch."""
        total = self.count() if total is None else total
        pages = [(s, self.PAGE) for s in range(0, total, self.PAGE)]
        out: list[Subaccount] = []
        for (entries,) in self._batch_call("users_to_liquidate", pages, ["(address,uint256)[]"]):
            out.extend(Subaccount(to_checksum_address(o), int(s)) for o, s in entries)
        return out

    def health(self, accounts: Sequence[Subaccount]) -> list[Health]:
        """Health of many subaccounts through ``health_batch``, 100 per call, one batch."""
        chunks = [accounts[i : i + self.PAGE] for i in range(0, len(accounts), self.PAGE)]
        args = [([a.owner for a in c], [a.subaccount for a in c]) for c in chunks]
        out: list[Health] = []
        for chunk, (rows,) in zip(
            chunks,
            self._batch_call("health_batch", args, ["(int256,uint256,uint256,bool)[]"]),
            strict=True,
        ):
            out.extend(
                Health(a, int(e), int(m), int(i), bool(liq))
                for a, (e, m, i, liq) in zip(chunk, rows, strict=True)
            )
        return out

    def markets_of(self, owner: str, subaccount: int) -> list[int]:
        return [int(m) for m in self._call("markets_of", owner, subaccount)]

    def position(self, owner: str, subaccount: int, market_id: int) -> tuple[int, int]:
        size, notional = self._call("position", owner, subaccount, market_id)
        return int(size), int(notional)

    def collateral_of(self, owner: str, subaccount: int) -> int:
        return int(self._call("collateral_of", owner, subaccount))

    def insurance_fund(self) -> int:
        return int(self._call("insurance_fund"))

    def bad_debt(self) -> int:
        return int(self._call("bad_debt"))

    def deficit(self) -> int:
        """Bad debt plus the insurance fund's negative equity: what deleveraging recovers."""
        return int(self._call("deficit"))

    def mark_price(self, market_id: int) -> tuple[int, bool]:
        price, fresh = self._call("mark_price", market_id)
        return int(price), bool(fresh)

    def trailing_volume(self, owner: str) -> int:
        return int(self._call("trailing_volume", owner))

    def premium_accumulator(self, market_id: int) -> tuple[int, int]:
        """(cumulative notional x premium, cumulative notional), USD WAD."""
        weighted, notional = self._call("premium_accumulator", market_id)
        return int(weighted), int(notional)

    def positions(self, accounts: Sequence[Subaccount], market_id: int) -> list[tuple[int, int]]:
        """(size, open notional) of many subaccounts in one market, one batched round trip."""
        rows = self._batch_call(
            "position",
            [(a.owner, a.subaccount, market_id) for a in accounts],
            ["int256", "int256"],
        )
        return [(int(size), int(notional)) for size, notional in rows]

    def market_feed(self, market_id: int) -> str:
        return to_checksum_address(self._call("market_config", market_id)[0])

    def max_price_age(self, market_id: int) -> int:
        return int(self._call("market_config", market_id)[1])

    def encode_liquidate(
        self, owner: str, subaccount: int, market_id: int, size: int, liquidator_subaccount: int
    ) -> bytes:
        data = self.contract.encode_abi(
            "liquidate", args=[owner, subaccount, market_id, size, liquidator_subaccount]
        )
        return bytes.fromhex(data.removeprefix("0x"))

    def events(self, name: str, from_block: int, to_block: int | str = "latest") -> list[dict]:
        """``Liquidation`` or ``Backstop`` logs in a block range, oldest first, as dicts."""
        logs = rpc(
            lambda: getattr(self.contract.events, name)().get_logs(
                from_block=from_block, to_block=to_block
            )
        )
        return [{**dict(log["args"]), "block_number": int(log["blockNumber"])} for log in logs]

    def encode_backstop(self, owner: str, subaccount: int) -> bytes:
        data = self.contract.encode_abi("backstop", args=[owner, subaccount])
        return bytes.fromhex(data.removeprefix("0x"))

    def encode_deleverage(self, owner: str, subaccount: int, market_id: int, size: int) -> bytes:
        data = self.contract.encode_abi("deleverage", args=[owner, subaccount, market_id, size])
        return bytes.fromhex(data.removeprefix("0x"))

    def encode_repay_bad_debt(self) -> bytes:
        data = self.contract.encode_abi("repay_bad_debt", args=[])
        return bytes.fromhex(data.removeprefix("0x"))


__all__ = [
    "DEFAULT_TIMEOUT",
    "ENGINE_ABI",
    "FEED_ABI",
    "REGISTRY_ABI",
    "Block",
    "CallFailed",
    "EngineClient",
    "FeedClient",
    "FeedReading",
    "Health",
    "RegistryClient",
    "RpcUnavailable",
    "Subaccount",
    "call_view",
    "connect",
    "describe_unavailable",
    "is_transient",
    "last_answer",
    "latest_block",
    "revert_reason",
    "rpc",
]
