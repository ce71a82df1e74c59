"""EIP-712 encoding of the scenario and profile batches, held to a hand-built encoding.

The contracts' ``batch_digest`` views are compared in ``tests/scenarios`` and
``tests/profiles``; here the digest is rebuilt from the EIP-712 definition alone (type hashes,
``keccak`` of concatenated array members, the domain separator), so the two independent
encodings must agree byte for byte."""

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from offchain.protocol.signing import (
    PROFILE_BATCH_TYPEHASH,
    PROFILE_UPDATE_TYPEHASH,
    SCENARIO_BATCH_TYPEHASH,
    SCENARIO_UPDATE_TYPEHASH,
    ProfileUpdate,
    RiskUpdate,
    ScenarioUpdate,
    batch_digest,
    recover_signer,
    sign_batch,
    sign_batch_multi,
)

CHAIN_ID = 31337
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
HASH = b"\x42" * 32
KEYS = [Account.from_key(bytes([i + 1]) * 32) for i in range(3)]
DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


def domain_separator(name: str) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [DOMAIN_TYPEHASH, keccak(text=name), keccak(text="1"), CHAIN_ID, REGISTRY],
        )
    )


def digest(name: str, batch_typehash: bytes, hashes: list[bytes]) -> bytes:
    struct = keccak(encode(["bytes32", "bytes32"], [batch_typehash, keccak(b"".join(hashes))]))
    return keccak(b"\x19\x01" + domain_separator(name) + struct)


def scenario_hash(u: ScenarioUpdate) -> bytes:
    shocks = keccak(b"".join(w.to_bytes(32, "big") for w in u.shocks))
    return keccak(
        encode(
            ["bytes32", "uint256", "uint256", "bytes32", "uint256", "uint256", "bytes32"],
            [
                SCENARIO_UPDATE_TYPEHASH,
                u.group_id,
                u.count,
                shocks,
                u.observed_at,
                u.deadline,
                u.model_hash,
            ],
        )
    )


def profile_hash(u: ProfileUpdate) -> bytes:
    return keccak(
        encode(
            ["bytes32", "address", "uint256", "uint256", "uint256", "uint256", "bytes32"],
            [
                PROFILE_UPDATE_TYPEHASH,
                u.owner,
                u.subaccount,
                u.class_id,
                u.observed_at,
                u.deadline,
                u.model_hash,
            ],
        )
    )


SCENARIOS = [
    ScenarioUpdate(1, 3, (0xFFFF_0200_FC18, 2**256 - 1, 0), 1_000, 2_000, HASH),
    ScenarioUpdate(7, 16, (1,), 1_001, 2_001, HASH),
]
PROFILES = [
    ProfileUpdate(KEYS[0].address.lower(), 0, 3, 1_000, 2_000, HASH),
    ProfileUpdate(KEYS[1].address, 2**64, 0, 5, 6, HASH),
]


def test_batch_digest__scenarios_equal_the_hand_built_encoding():
    expected = digest(
        "DynamicMarginScenarioRegistry",
        SCENARIO_BATCH_TYPEHASH,
        [scenario_hash(u) for u in SCENARIOS],
    )
    assert batch_digest(SCENARIOS, CHAIN_ID, REGISTRY) == expected


def test_batch_digest__profiles_equal_the_hand_built_encoding():
    expected = digest(
        "DynamicMarginProfileRegistry", PROFILE_BATCH_TYPEHASH, [profile_hash(u) for u in PROFILES]
    )
    assert batch_digest(PROFILES, CHAIN_ID, REGISTRY) == expected


def test_batch_digest__domain_separates_the_registries():
    """The same fields under another registry's domain or address give another digest."""
    one = batch_digest(SCENARIOS[:1], CHAIN_ID, REGISTRY)
    assert one != batch_digest(SCENARIOS[:1], CHAIN_ID + 1, REGISTRY)
    assert one != batch_digest(SCENARIOS[:1], CHAIN_ID, "0x" + "11" * 20)
    # An empty shock list hashes as keccak of nothing, not as a missing field.
    empty = ScenarioUpdate(1, 1, (), 1, 2, HASH)
    assert batch_digest([empty], CHAIN_ID, REGISTRY) == digest(
        "DynamicMarginScenarioRegistry", SCENARIO_BATCH_TYPEHASH, [scenario_hash(empty)]
    )


@pytest.mark.parametrize("batch", [SCENARIOS, PROFILES], ids=["scenarios", "profiles"])
def test_sign_batch_multi__each_signature_recovers_its_keeper(batch):
    signatures = sign_batch_multi(batch, [k.key for k in KEYS], CHAIN_ID, REGISTRY)
    assert [recover_signer(batch, s, CHAIN_ID, REGISTRY) for s in signatures] == [
        k.address for k in KEYS
    ]
    for signature in signatures:
        assert len(signature) == 65 and signature[64] in (27, 28)
        assert int.from_bytes(signature[32:64], "big") <= 2**255  # low-s
    assert sign_batch(batch, KEYS[0].key, CHAIN_ID, REGISTRY) == signatures[0]


def test_profile_update__owner_is_checksummed_and_as_tuple_follows_the_abi():
    u = PROFILES[0]
    assert u.owner == KEYS[0].address
    assert u.as_tuple() == (KEYS[0].address, 0, 3, 1_000, 2_000, HASH)
    assert SCENARIOS[0].as_tuple()[2] == [0xFFFF_0200_FC18, 2**256 - 1, 0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScenarioUpdate(1, 1, (2**256,), 1, 2, HASH), "shock word must be a uint256"),
        (lambda: ScenarioUpdate(1, 1, (0,) * 9, 1, 2, HASH), "at most 8 shock words"),
        (lambda: ScenarioUpdate(-1, 1, (), 1, 2, HASH), "group_id must be a uint256"),
        (lambda: ScenarioUpdate(1, 1, (), 1, 2, b"\x00"), "model_hash must be 32 bytes"),
        (lambda: ProfileUpdate("0x1234", 0, 1, 1, 2, HASH), "owner must be an address"),
        (lambda: ProfileUpdate(KEYS[0].address, 0, True, 1, 2, HASH), "class_id must be"),
    ],
)
def test_updates__refuse_malformed_fields(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_batch_digest__refuses_an_empty_or_mixed_batch():
    with pytest.raises(ValueError, match="at least one update"):
        batch_digest([], CHAIN_ID, REGISTRY)
    risk = RiskUpdate(1, 10**18, 0, 1, 2, HASH)
    with pytest.raises(ValueError, match="one registry's kind"):
        batch_digest([risk, SCENARIOS[0]], CHAIN_ID, REGISTRY)
