"""EIP-712 typed data for the keepers' signed batches: one encoding for the keeper and the tests.

Three registries verify keeper batches, each under its own domain (name, version ``1``, chain id,
the registry's address)::

    RiskParameterRegistry   "DynamicMarginRiskRegistry"      RiskUpdateBatch(RiskUpdate[] updates)
    ScenarioRegistry        "DynamicMarginScenarioRegistry"  ScenarioBatch(ScenarioUpdate[] updates)
    ProfileRegistry         "DynamicMarginProfileRegistry"   ProfileBatch(ProfileUpdate[] updates)

:func:`typed_data`, :func:`batch_digest`, :func:`sign_batch`, :func:`sign_batch_multi` and
:func:`recover_signer` take a batch of any one kind and pick the domain and types from the kind of
its updates. Every signature produced here is low-s (eth-keys normalises s), 65 bytes
``r || s || v`` with ``v`` in {27, 28}.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_address, keccak, to_checksum_address

DOMAIN_NAME = "DynamicMarginRiskRegistry"
SCENARIO_DOMAIN_NAME = "DynamicMarginScenarioRegistry"
PROFILE_DOMAIN_NAME = "DynamicMarginProfileRegistry"
DOMAIN_VERSION = "1"

EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
RISK_UPDATE_FIELDS = [
    {"name": "market_id", "type": "uint256"},
    {"name": "multiplier", "type": "uint256"},
    {"name": "funding_rate", "type": "int256"},
    {"name": "observed_at", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
    {"name": "model_hash", "type": "bytes32"},
]
SCENARIO_UPDATE_FIELDS = [
    {"name": "group_id", "type": "uint256"},
    {"name": "count", "type": "uint256"},
    {"name": "shocks", "type": "uint256[]"},
    {"name": "observed_at", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
    {"name": "model_hash", "type": "bytes32"},
]
PROFILE_UPDATE_FIELDS = [
    {"name": "owner", "type": "address"},
    {"name": "subaccount", "type": "uint256"},
    {"name": "class_id", "type": "uint256"},
    {"name": "observed_at", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
    {"name": "model_hash", "type": "bytes32"},
]
TYPES = {
    "EIP712Domain": EIP712_DOMAIN_FIELDS,
    "RiskUpdateBatch": [{"name": "updates", "type": "RiskUpdate[]"}],
    "RiskUpdate": RISK_UPDATE_FIELDS,
}
SCENARIO_TYPES = {
    "EIP712Domain": EIP712_DOMAIN_FIELDS,
    "ScenarioBatch": [{"name": "updates", "type": "ScenarioUpdate[]"}],
    "ScenarioUpdate": SCENARIO_UPDATE_FIELDS,
}
PROFILE_TYPES = {
    "EIP712Domain": EIP712_DOMAIN_FIELDS,
    "ProfileBatch": [{"name": "updates", "type": "ProfileUpdate[]"}],
    "ProfileUpdate": PROFILE_UPDATE_FIELDS,
}
RISK_UPDATE_TYPEHASH = keccak(
    text="RiskUpdate(uint256 market_id,uint256 multiplier,int256 funding_rate,"
    "uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
BATCH_TYPEHASH = keccak(
    text="RiskUpdateBatch(RiskUpdate[] updates)RiskUpdate(uint256 market_id,uint256 multiplier,"
    "int256 funding_rate,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
SCENARIO_UPDATE_TYPEHASH = keccak(
    text="ScenarioUpdate(uint256 group_id,uint256 count,uint256[] shocks,uint256 observed_at,"
    "uint256 deadline,bytes32 model_hash)"
)
SCENARIO_BATCH_TYPEHASH = keccak(
    text="ScenarioBatch(ScenarioUpdate[] updates)ScenarioUpdate(uint256 group_id,uint256 count,"
    "uint256[] shocks,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
PROFILE_UPDATE_TYPEHASH = keccak(
    text="ProfileUpdate(address owner,uint256 subaccount,uint256 class_id,uint256 observed_at,"
    "uint256 deadline,bytes32 model_hash)"
)
PROFILE_BATCH_TYPEHASH = keccak(
    text="ProfileBatch(ProfileUpdate[] updates)ProfileUpdate(address owner,uint256 subaccount,"
    "uint256 class_id,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
# secp256k1 group order and the largest s the registries accept (EIP-2).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_LOW_S = SECP256K1_N // 2
# Markets per scenario group (one shock word each), as in the scenario registry.
MAX_GROUP_MARKETS = 8


def _check_uint(owner: object, names: Iterable[str]) -> None:
    for name in names:
        value = getattr(owner, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
            raise ValueError(f"{name} must be a uint256, got {value!r}")


def _check_hash(model_hash: bytes) -> None:
    if len(model_hash) != 32:
        raise ValueError(f"model_hash must be 32 bytes, got {len(model_hash)}")


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
        _check_hash(self.model_hash)
        _check_uint(self, ("market_id", "multiplier", "observed_at", "deadline"))
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


@dataclass(frozen=True)
class ScenarioUpdate:
    """One scenario group's signed joint shocks, field for field the ``ScenarioRegistry``'s
    ``ScenarioUpdate``.

    Parameters
    ----------
    group_id
        The group (1 to 255).
    count
        Scenarios in force, ``K`` (1 to 16).
    shocks
        One 256-bit word per market of the group, in the group's market order: scenario ``k``'s
        price move of that market as a two's-complement int16 in basis points in bits
        ``16k .. 16k + 15``; slots ``k >= count`` zero.
    observed_at, deadline
        Time of the data behind the update (strictly increasing per group) and the last second
        it may land.
    model_hash
        Provenance: model version and data window.
    """

    group_id: int
    count: int
    shocks: tuple[int, ...]
    observed_at: int
    deadline: int
    model_hash: bytes

    def __post_init__(self) -> None:
        _check_hash(self.model_hash)
        _check_uint(self, ("group_id", "count", "observed_at", "deadline"))
        object.__setattr__(self, "shocks", tuple(self.shocks))
        if len(self.shocks) > MAX_GROUP_MARKETS:
            raise ValueError(f"at most {MAX_GROUP_MARKETS} shock words, got {len(self.shocks)}")
        for word in self.shocks:
            if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < 2**256:
                raise ValueError(f"a shock word must be a uint256, got {word!r}")

    def as_tuple(self) -> tuple[int, int, list[int], int, int, bytes]:
        """The struct as a tuple, in the order the contract's ABI expects."""
        return (
            self.group_id,
            self.count,
            list(self.shocks),
            self.observed_at,
            self.deadline,
            self.model_hash,
        )


@dataclass(frozen=True)
class ProfileUpdate:
    """One subaccount's signed risk class, field for field the ``ProfileRegistry``'s
    ``ProfileUpdate`` (class 0 is the default class)."""

    owner: str
    subaccount: int
    class_id: int
    observed_at: int
    deadline: int
    model_hash: bytes

    def __post_init__(self) -> None:
        _check_hash(self.model_hash)
        if not is_address(self.owner):
            raise ValueError(f"owner must be an address, got {self.owner!r}")
        object.__setattr__(self, "owner", to_checksum_address(self.owner))
        _check_uint(self, ("subaccount", "class_id", "observed_at", "deadline"))

    def as_tuple(self) -> tuple[str, int, int, int, int, bytes]:
        """The struct as a tuple, in the order the contract's ABI expects."""
        return (
            self.owner,
            self.subaccount,
            self.class_id,
            self.observed_at,
            self.deadline,
            self.model_hash,
        )


Update = RiskUpdate | ScenarioUpdate | ProfileUpdate

# Per kind of update: the registry's domain name, the batch's primary type and the types.
_KINDS: dict[type, tuple[str, str, dict]] = {
    RiskUpdate: (DOMAIN_NAME, "RiskUpdateBatch", TYPES),
    ScenarioUpdate: (SCENARIO_DOMAIN_NAME, "ScenarioBatch", SCENARIO_TYPES),
    ProfileUpdate: (PROFILE_DOMAIN_NAME, "ProfileBatch", PROFILE_TYPES),
}


def _kind(updates: Sequence[Update]) -> tuple[str, str, dict]:
    if not updates:
        raise ValueError("a batch needs at least one update")
    kinds = {type(u) for u in updates}
    if len(kinds) != 1 or next(iter(kinds)) not in _KINDS:
        names = sorted(k.__name__ for k in kinds)
        raise ValueError(f"a batch holds updates of one registry's kind, got {names}")
    return _KINDS[next(iter(kinds))]


def domain(chain_id: int, registry: str, name: str = DOMAIN_NAME) -> dict:
    """A registry's EIP-712 domain for ``chain_id`` and the registry's address (the risk
    registry's unless ``name`` says otherwise)."""
    return {
        "name": name,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": registry,
    }


def typed_data(updates: Sequence[Update], chain_id: int, registry: str) -> dict:
    """The full EIP-712 message (as ``eth_signTypedData_v4`` takes it) for a batch of one kind,
    under the domain of the registry that verifies that kind."""
    name, primary, types = _kind(updates)
    return {
        "types": types,
        "primaryType": primary,
        "domain": domain(chain_id, registry, name),
        "message": {"updates": [_message(u) for u in updates]},
    }


def _message(update: Update) -> dict:
    fields = asdict(update)
    if isinstance(update, ScenarioUpdate):
        fields["shocks"] = list(update.shocks)
    return fields


def _signable(updates: Sequence[Update], chain_id: int, registry: str) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(updates, chain_id, registry))


def batch_digest(updates: Sequence[Update], chain_id: int, registry: str) -> bytes:
    """The 32-byte digest a keeper signs: ``keccak(0x1901 || domainSeparator || hashStruct)``;
    equal to the registry's ``batch_digest`` view."""
    signable = _signable(updates, chain_id, registry)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_batch(
    updates: Sequence[Update], private_key: bytes | str, chain_id: int, registry: str
) -> bytes:
    """Sign a batch with one keeper key; returns the 65-byte ``r || s || v`` signature."""
    signed = Account.sign_message(_signable(updates, chain_id, registry), private_key)
    return bytes(signed.signature)


def sign_batch_multi(
    updates: Sequence[Update],
    private_keys: Iterable[bytes | str],
    chain_id: int,
    registry: str,
) -> list[bytes]:
    """Sign a batch with several keeper keys (for a k-of-n threshold)."""
    return [sign_batch(updates, key, chain_id, registry) for key in private_keys]


def recover_signer(
    updates: Sequence[Update], signature: bytes, chain_id: int, registry: str
) -> str:
    """The address that produced ``signature`` over the batch (checksummed)."""
    return Account.recover_message(_signable(updates, chain_id, registry), signature=signature)


def to_high_s(signature: bytes) -> bytes:
    """The malleable twin of a low-s signature: same signer, ``s' = n - s``, flipped ``v``.

    Used by tests to show the registries refuse malleable signatures.
    """
    if len(signature) != 65:
        raise ValueError("expected a 65-byte signature")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    flipped_v = 27 if v == 28 else 28
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped_v])
