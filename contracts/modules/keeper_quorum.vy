# pragma version ~=0.4.3
"""
@title k-of-n keeper signatures, checked against the risk registry's keepers
@custom:contract-name keeper_quorum
@license GNU Affero General Public License v3.0 only
@notice The scenario and profile registries accept the same keepers as the
        `RiskParameterRegistry` (one keeper set and one signer threshold,
        governed in one place) and stop while it is paused.
"""

from snekmate.utils import ecdsa

from ..interfaces import IRiskParameterRegistry

MAX_SIGNATURES: constant(uint256) = 8


@view
@internal
def _check_quorum(digest: bytes32, signatures: DynArray[Bytes[65], MAX_SIGNATURES], registry: address) -> uint256:
    """
    @dev Reverts unless the registry is unpaused and at least its signer
         threshold of distinct current keepers signed `digest` (65-byte
         signatures only; high-s and zero-address recoveries revert in
         snekmate's `ecdsa`). Returns the number of signers.
    """
    risk: IRiskParameterRegistry = IRiskParameterRegistry(registry)
    assert not staticcall risk.paused(), "quorum: keeper updates paused"
    assert len(signatures) >= staticcall risk.signer_threshold(), "quorum: not enough signatures"
    seen: DynArray[address, MAX_SIGNATURES] = []
    for signature: Bytes[65] in signatures:
        assert len(signature) == 65, "quorum: signature must be 65 bytes"
        signer: address = ecdsa._recover_sig(digest, signature)
        assert staticcall risk.is_keeper(signer), "quorum: signer is not a keeper"
        assert signer not in seen, "quorum: duplicate signer"
        seen.append(signer)
    return len(seen)
