"""EIP-712 typed data for risk-update batches: one encoding for the keeper and the tests.

The registry verifies ``RiskUpdateBatch(RiskUpdate[] updates)`` signatures under the domain
``DynamicMarginRiskRegistry`` / ``1`` / chain id / registry address. Every signature produced
here is low-s (eth-keys normalises s), 65 bytes ``r || s || v`` with ``v`` in {27, 28}.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

DOMAIN_NAME = "DynamicMarginRiskRegistry"
DOMAIN_VERSION = "1"

RISK_UPDATE_FIELDS = [
    {"name": "market_id", "type": "uint256"},
    {"name": "multiplier", "type": "uint256"},
    {"name": "funding_rate", "type": "int256"},
    {"name": "observed_at", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
    {"name": "model_hash", "type": "bytes32"},
]
TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "RiskUpdateBatch": [{"name": "updates", "type": "RiskUpdate[]"}],
    "RiskUpdate": RISK_UPDATE_FIELDS,
}
RISK_UPDATE_TYPEHASH = keccak(
    text="RiskUpdate(uint256 market_id,uint256 multiplier,int256 funding_rate,"
    "uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
BATCH_TYPEHASH = keccak(
    text="RiskUpdateBatch(RiskUpdate[] updates)RiskUpdate(uint256 market_id,uint256 multiplier,"
    "int256 funding_rate,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
# secp256k1 group order and the largest s the registry accepts (EIP-2).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_LOW_S = SECP256K1_N // 2


@dataclass(frozen=True)
class RiskUpdate:
    """One market's signed risk parameters, field for field the registry's ``RiskUpdate``."""

    market_id: int
    multiplier: int
    funding_rate: int
    observed_at: int
    deadline: int
    model_hash: bytes

    def __post_init__(self) -> None:
        if len(self.model_hash) != 32:
            raise ValueError(f"model_hash must be 32 bytes, got {len(self.model_hash)}")
        for name in ("market_id", "multiplier", "observed_at", "deadline"):
            value = getattr(self, name)
            if not 0 <= value < 2**256:
                raise ValueError(f"{name} must be a uint256, got {value}")
        if not -(2**255) <= self.funding_rate < 2**255:
            raise ValueError(f"funding_rate must be an int256, got {self.funding_rate}")

    def as_tuple(self) -> tuple[int, int, int, int, int, bytes]:
        """The struct as a tuple, in the order the contract's ABI expects."""
        return (
            self.market_id,
            self.multiplier,
            self.funding_rate,
            self.observed_at,
            self.deadline,
            self.model_hash,
        )


def domain(chain_id: int, registry: str) -> dict:
    """The registry's EIP-712 domain for ``chain_id`` and the registry's address."""
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": registry,
    }


def typed_data(updates: Sequence[RiskUpdate], chain_id: int, registry: str) -> dict:
    """The full EIP-712 message (as ``eth_signTypedData_v4`` takes it) for a batch."""
    if not updates:
        raise ValueError("a batch needs at least one update")
    return {
        "types": TYPES,
        "primaryType": "RiskUpdateBatch",
        "domain": domain(chain_id, registry),
        "message": {"updates": [asdict(u) for u in updates]},
    }


def batch_digest(updates: Sequence[RiskUpdate], chain_id: int, registry: str) -> bytes:
    """The 32-byte digest a keeper signs: ``keccak(0x1901 || domainSeparator || hashStruct)``."""
    signable = encode_typed_data(full_message=typed_data(updates, chain_id, registry))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_batch(
    updates: Sequence[RiskUpdate], private_key: bytes | str, chain_id: int, registry: str
) -> bytes:
    """Sign a batch with one keeper key; returns the 65-byte ``r || s || v`` signature."""
    signable = encode_typed_data(full_message=typed_data(updates, chain_id, registry))
    signed = Account.sign_message(signable, private_key)
    return bytes(signed.signature)


def sign_batch_multi(
    updates: Sequence[RiskUpdate],
    private_keys: Iterable[bytes | str],
    chain_id: int,
    registry: str,
) -> list[bytes]:
    """Sign a batch with several keeper keys (for a k-of-n threshold)."""
    return [sign_batch(updates, key, chain_id, registry) for key in private_keys]


def recover_signer(
    updates: Sequence[RiskUpdate], signature: bytes, chain_id: int, registry: str
) -> str:
    """The address that produced ``signature`` over the batch (checksummed)."""
    signable = encode_typed_data(full_message=typed_data(updates, chain_id, registry))
    return Account.recover_message(signable, signature=signature)


def to_high_s(signature: bytes) -> bytes:
    """The malleable twin of a low-s signature: same signer, ``s' = n - s``, flipped ``v``.

    Used by tests to show the registry refuses malleable signatures.
    """
    if len(signature) != 65:
        raise ValueError("expected a 65-byte signature")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    flipped_v = 27 if v == 28 else 28
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped_v])
