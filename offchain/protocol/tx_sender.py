"""The transaction sender: one component that owns a hot key's nonce and gets transactions mined.

Rules it keeps, whatever the caller:

- **simulate first**: every transaction is ``eth_call``-ed against the latest block before it is
  signed; a revert raises ``SimulationReverted`` with the contract's reason and nothing is sent
  (this is what makes a re-sent keeper batch or a liquidation a rival already did harmless);
- **nonce from the chain**: the nonce is read from the node at each send (``pending`` count), never
  kept on disk; after a restart ``recover()`` waits for the key's in-flight transactions to settle;
- **RPC down**: every node interaction is retried with exponential backoff (``RpcUnavailable``
  after ``rpc_retries``); a transaction already broadcast is tracked by hash and never re-signed
  with a new nonce, so an outage cannot duplicate it; one the node no longer knows (its pool was
  emptied by a restart) is broadcast again, same bytes, same nonce;
- **stuck**: not mined after ``stuck_blocks`` new blocks, the transaction is replaced at the same
  nonce with both fees raised by at least 12.5% (and at least to what the current base fee needs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError

from offchain.protocol.chain import RpcUnavailable, revert_reason, rpc

log = logging.getLogger("dmm.tx")
T = TypeVar("T")
GWEI = 10**9
MIN_BUMP_EIGHTHS = 1  # a replacement raises each fee by at least 1/8 = 12.5%


class SimulationReverted(RuntimeError):  # noqa: N818 - named for what happened
    """``eth_call`` reverted: the transaction would fail, so it was not sent. ``reason`` is the
    contract's revert string; the message also names the call (its label) and the address."""

    def __init__(self, reason: str, label: str = "", to: str = "") -> None:
        where = f"{label or 'call'} to {to}: " if to else (f"{label}: " if label else "")
        super().__init__(f"{where}reverted in simulation: {reason}" if where else reason)
        self.reason = reason
        self.label = label
        self.to = to


class TxFailed(RuntimeError):  # noqa: N818 - named for what happened
    """The transaction was mined and reverted, or its nonce was used by another transaction."""


class TxTimeout(RuntimeError):  # noqa: N818 - named for what happened
    """The transaction was not mined within ``receipt_timeout`` despite replacements."""


@dataclass(frozen=True)
class SenderConfig:
    """Fee, replacement and retry policy of a ``TxSender``."""

    priority_fee: int = 1 * GWEI  # tip per gas
    base_fee_multiplier: int = 2  # max fee = base fee * this + tip: survives ~6 full blocks
    max_fee_cap: int = 500 * GWEI  # never bid more per gas than this
    stuck_blocks: int = 2  # replace when not mined after this many new blocks
    poll_interval: float = 0.25  # seconds between receipt polls
    receipt_timeout: float = 120.0  # give up (TxTimeout) after this long
    max_replacements: int = 8
    rpc_retries: int = 6  # attempts per node interaction before RpcUnavailable
    backoff_initial: float = 0.25  # seconds; doubles each retry
    backoff_max: float = 8.0
    gas_margin_percent: int = 25  # gas limit = estimate * (100 + this) / 100
    nonce_grace: float = 5.0  # seconds to find our receipt once the nonce is used

    def __post_init__(self) -> None:
        if self.stuck_blocks < 1:
            raise ValueError("stuck_blocks must be at least 1")
        if self.rpc_retries < 1:
            raise ValueError("rpc_retries must be at least 1")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff needs 0 < backoff_initial <= backoff_max")


@dataclass
class SentTx:
    """A mined transaction: which hash made it, at what nonce and price, and what it cost."""

    label: str
    tx_hash: str
    nonce: int
    block_number: int
    gas_used: int
    effective_gas_price: int
    max_fee: int
    priority_fee: int
    replacements: list[str] = field(default_factory=list)
    first_max_fee: int = 0  # fees of the first broadcast (before any replacement)
    first_priority_fee: int = 0

    @property
    def cost_wei(self) -> int:
        return self.gas_used * self.effective_gas_price


def bump_fee(fee: int) -> int:
    """``fee`` raised by at least 12.5% (and at least 1 wei): ``fee + ceil(fee / 8)``."""
    return fee + max(-(-fee * MIN_BUMP_EIGHTHS // 8), 1)


def backoff_delays(config: SenderConfig) -> list[float]:
    """The waits between attempts: ``initial * 2**i``, capped at ``backoff_max``."""
    return [
        min(config.backoff_initial * 2**i, config.backoff_max)
        for i in range(config.rpc_retries - 1)
    ]


class TxSender:
    """Simulates, signs, sends, watches and replaces transactions for one local key."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        config: SenderConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.config = config or SenderConfig()
        self._sleep = sleep
        self._clock = clock
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        return self.account.address

    # -- node access with retries ---------------------------------------------------------

    def retry(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()`` with exponential backoff while the node is unreachable."""
        delays = backoff_delays(self.config)
        for attempt in range(self.config.rpc_retries):
            try:
                return rpc(fn)
            except RpcUnavailable as exc:
                if attempt == len(delays):
                    raise RpcUnavailable(
                        f"{what}: node unreachable after {self.config.rpc_retries} attempts ({exc})"
                    ) from exc
                log.warning(
                    "RPC unavailable during %s (%s); retry %d/%d in %.2f s",
                    what,
                    exc,
                    attempt + 1,
                    len(delays),
                    delays[attempt],
                )
                self._sleep(delays[attempt])
        raise AssertionError("unreachable")

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.retry("chain id", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def nonces(self) -> tuple[int, int]:
        """``(mined, pending)`` transaction counts of the key, from the node."""
        mined = self.retry(
            "nonce", lambda: self.w3.eth.get_transaction_count(self.address, "latest")
        )
        pending = self.retry(
            "nonce", lambda: self.w3.eth.get_transaction_count(self.address, "pending")
        )
        return int(mined), int(pending)

    def recover(self, timeout: float = 60.0) -> int:
        """Wait until the key has nothing in flight; returns the next nonce (from the chain).

        Run at start-up: a transaction a previous process broadcast before it died is either
        mined or dropped before this process signs anything, so nothing is sent twice.
        """
        deadline = self._clock() + timeout
        mined, pending = self.nonces()
        if pending > mined:
            log.info(
                "recovering: %d transaction(s) of %s in flight (nonce %d..%d); waiting",
                pending - mined,
                self.address,
                mined,
                pending - 1,
            )
        while pending > mined:
            if self._clock() > deadline:
                log.warning(
                    "recovering: %d transaction(s) still in flight after %.0f s; continuing at"
                    " nonce %d",
                    pending - mined,
                    timeout,
                    pending,
                )
                return pending
            self._sleep(self.config.poll_interval)
            mined, pending = self.nonces()
        log.info("nonce recovered from chain: next nonce %d for %s", mined, self.address)
        return mined

    # -- simulation ---------------------------------------------------------------------

    def simulate(self, to: str, data: bytes, label: str = "") -> int:
        """``eth_call`` then ``eth_estimateGas``; returns the gas estimate.

        Raises ``SimulationReverted`` (with the revert reason, the label and the address) when
        the call would revert.
        """
        tx: Any = {"from": self.address, "to": to, "data": data}
        try:
            self.retry("simulation", lambda: self.w3.eth.call(tx, "latest"))
            return int(self.retry("gas estimate", lambda: self.w3.eth.estimate_gas(tx)))
        except (ContractLogicError, Web3RPCError) as exc:
            raise SimulationReverted(
                revert_reason(exc), label, Web3.to_checksum_address(to)
            ) from exc

    # -- fees ---------------------------------------------------------------------------

    def _base_fee(self) -> int:
        block = self.retry("base fee", lambda: self.w3.eth.get_block("latest"))
        return int(block.get("baseFeePerGas", 0))

    def initial_fees(self) -> tuple[int, int]:
        """``(max_fee, priority_fee)`` for a new transaction."""
        tip = self.config.priority_fee
        max_fee = self._base_fee() * self.config.base_fee_multiplier + tip
        return min(max_fee, self.config.max_fee_cap), tip

    def replacement_fees(self, max_fee: int, tip: int) -> tuple[int, int]:
        """Fees of a replacement: each at least 12.5% above the last, and enough for today's
        base fee. Raises ``TxTimeout`` when the cap forbids a valid bump."""
        new_tip = bump_fee(tip)
        new_max = max(
            bump_fee(max_fee), self._base_fee() * self.config.base_fee_multiplier + new_tip
        )
        if new_max > self.config.max_fee_cap:
            raise TxTimeout(
                f"replacement would bid {new_max / GWEI:.2f} gwei, above the cap of"
                f" {self.config.max_fee_cap / GWEI:.2f} gwei"
            )
        return new_max, new_tip

    # -- sending ------------------------------------------------------------------------

    def _sign(self, tx: dict) -> tuple[str, bytes]:
        signed = self.account.sign_transaction(tx)
        return "0x" + bytes(signed.hash).hex(), bytes(signed.raw_transaction)

    def _broadcast(self, raw: bytes, tx_hash: str) -> bool:
        """Send signed bytes; False when the node refuses them as priced too low."""
        try:
            self.retry("broadcast", lambda: self.w3.eth.send_raw_transaction(raw))
        except Web3RPCError as exc:
            text = str(exc).lower()
            if "already" in text or "known" in text:
                log.info("transaction %s already known to the node", tx_hash)
                return True
            if "nonce too low" in text:
                log.info("nonce of %s already used; checking receipts", tx_hash)
                return True
            if "underpriced" in text or "fee" in text:
                log.warning("%s refused as priced too low (%s); will bump", tx_hash, exc)
                return False
            raise
        return True

    def _receipt(self, tx_hash: str) -> Any | None:
        try:
            return self.retry("receipt", lambda: self.w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return None

    def _known(self, tx_hash: str) -> bool:
        try:
            self.retry("transaction lookup", lambda: self.w3.eth.get_transaction(tx_hash))
        except TransactionNotFound:
            return False
        return True

    def send(self, to: str, data: bytes, label: str = "tx", value: int = 0) -> SentTx:
        """Simulate, sign, broadcast and wait; replaces the transaction while it is stuck.

        Returns the mined transaction. Raises ``SimulationReverted`` (nothing sent),
        ``TxFailed`` (mined and reverted, or nonce taken), ``TxTimeout`` or ``RpcUnavailable``.
        """
        gas = self.simulate(to, data, label)
        gas_limit = gas * (100 + self.config.gas_margin_percent) // 100
        _, nonce = self.nonces()
        max_fee, tip = self.initial_fees()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id(),
            "from": self.address,
            "to": Web3.to_checksum_address(to),
            "data": data,
            "value": value,
            "nonce": nonce,
            "gas": gas_limit,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        tx_hash, raw = self._sign(tx)
        hashes = [tx_hash]
        fees = {tx_hash: (max_fee, tip)}
        raws = {tx_hash: raw}
        priced_out = not self._broadcast(raw, tx_hash)
        log.info(
            "%s sent: %s nonce %d gas limit %d max fee %.3f gwei tip %.3f gwei",
            label,
            tx_hash,
            nonce,
            gas_limit,
            max_fee / GWEI,
            tip / GWEI,
        )
        started = self._clock()
        sent_block = int(self.retry("block number", lambda: self.w3.eth.block_number))
        while True:
            for h in hashes:
                receipt = self._receipt(h)
                if receipt is not None:
                    return self._finish(label, receipt, h, nonce, fees[h], hashes, fees[hashes[0]])
            mined, _ = self.nonces()
            if mined > nonce:
                # The nonce is used: one of ours was mined (nodes may index the receipt a moment
                # after the nonce moves) or another transaction took it.
                grace = self._clock() + self.config.nonce_grace
                while True:
                    for h in hashes:
                        receipt = self._receipt(h)
                        if receipt is not None:
                            return self._finish(
                                label, receipt, h, nonce, fees[h], hashes, fees[hashes[0]]
                            )
                    if self._clock() > grace:
                        raise TxFailed(
                            f"{label} to {tx['to']}: nonce {nonce} was used by another transaction"
                        )
                    self._sleep(self.config.poll_interval)
            if self._clock() - started > self.config.receipt_timeout:
                raise TxTimeout(
                    f"{label}: nonce {nonce} not mined after {self.config.receipt_timeout:.0f} s"
                    f" and {len(hashes) - 1} replacement(s)"
                )
            if not self._known(hashes[-1]):
                # Dropped from the pool (a node restart empties it): same bytes, same nonce.
                log.warning(
                    "%s: %s unknown to the node (dropped or node restarted); broadcasting again",
                    label,
                    hashes[-1],
                )
                priced_out = not self._broadcast(raws[hashes[-1]], hashes[-1])
            block = int(self.retry("block number", lambda: self.w3.eth.block_number))
            if priced_out or block - sent_block >= self.config.stuck_blocks:
                if len(hashes) > self.config.max_replacements:
                    raise TxTimeout(f"{label}: nonce {nonce} still stuck after replacements")
                old_max, old_tip = tx["maxFeePerGas"], tx["maxPriorityFeePerGas"]
                new_max, new_tip = self.replacement_fees(old_max, old_tip)
                tx = {**tx, "maxFeePerGas": new_max, "maxPriorityFeePerGas": new_tip}
                tx_hash, raw = self._sign(tx)
                hashes.append(tx_hash)
                fees[tx_hash] = (new_max, new_tip)
                raws[tx_hash] = raw
                why = "priced out" if priced_out else f"stuck for {block - sent_block} blocks"
                priced_out = not self._broadcast(raw, tx_hash)
                log.warning(
                    "%s %s at nonce %d: replaced by %s, max fee %.3f -> %.3f"
                    " gwei (+%.1f%%), tip %.3f -> %.3f gwei",
                    label,
                    why,
                    nonce,
                    tx_hash,
                    old_max / GWEI,
                    new_max / GWEI,
                    (new_max / old_max - 1) * 100,
                    old_tip / GWEI,
                    new_tip / GWEI,
                )
                sent_block = block
            self._sleep(self.config.poll_interval)

    def _finish(
        self,
        label: str,
        receipt: Any,
        tx_hash: str,
        nonce: int,
        fees: tuple[int, int],
        hashes: list[str],
        first: tuple[int, int],
    ) -> SentTx:
        sent = SentTx(
            label=label,
            tx_hash=tx_hash,
            nonce=nonce,
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
            max_fee=fees[0],
            priority_fee=fees[1],
            replacements=[h for h in hashes if h != hashes[0]],
            first_max_fee=first[0],
            first_priority_fee=first[1],
        )
        if int(receipt["status"]) != 1:
            raise TxFailed(
                f"{label} to {receipt.get('to') or '?'}: {tx_hash} reverted on-chain in block"
                f" {sent.block_number}"
            )
        log.info(
            "%s mined: %s block %d gas %d cost %.6f ETH%s",
            label,
            tx_hash,
            sent.block_number,
            sent.gas_used,
            sent.cost_wei / 10**18,
            f" after {len(sent.replacements)} replacement(s)" if sent.replacements else "",
        )
        return sent


__all__ = [
    "SenderConfig",
    "SentTx",
    "SimulationReverted",
    "TxFailed",
    "TxSender",
    "TxTimeout",
    "backoff_delays",
    "bump_fee",
]
