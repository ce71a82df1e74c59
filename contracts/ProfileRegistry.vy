# pragma version ~=0.4.3
"""
@title Dynamic Margin profile registry: account risk classes
@custom:contract-name ProfileRegistry
@license GNU Affero General Public License v3.0 only
@notice Governance defines up to seven account classes, each a maintenance
        multiplier inside governance bounds with on-chain eligibility rules
        (a minimum trailing 30-day volume of the owner and a minimum equity
        of the subaccount). The keepers of the `RiskParameterRegistry` assign
        a subaccount to a class with EIP-712 signed updates that anyone may
        relay; the registry refuses an account that does not meet the
        class's eligibility now, and the class expires after the heartbeat
        back to the default class (multiplier 1). The engine applies the
        class multiplier to each position's tiered maintenance, rounding up;
        a discount never takes a position below its tier rate times the
        market's minimum multiplier.

        EIP-712 domain: name "DynamicMarginProfileRegistry", version "1".
        Signed type:
            ProfileBatch(ProfileUpdate[] updates)ProfileUpdate(address owner,uint256 subaccount,uint256 class_id,uint256 observed_at,uint256 deadline,bytes32 model_hash)
@custom:kill The risk registry's `pause` stops profile updates; every class
        expires to the default at its heartbeat. The owner can retire a class
        (multiplier 0): its accounts fall back to 1x at once.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step
from snekmate.utils import eip712_domain_separator as eip712

from interfaces import IEngineSync
from interfaces import IMarginEngine
from modules import keeper_quorum

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: eip712

exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
    eip712.eip712Domain,
)


WAD: constant(uint256) = 10**18
MAX_CLASSES: constant(uint256) = 7
MAX_UPDATES: constant(uint256) = 32
MAX_SIGNATURES: constant(uint256) = 8
# Governance bounds on class multipliers may not leave [0.5x, 4x].
ABSOLUTE_MIN_MULTIPLIER: constant(uint256) = 5 * 10**17
ABSOLUTE_MAX_MULTIPLIER: constant(uint256) = 4 * 10**18
MAX_DURATION: constant(uint256) = 2**32 - 1

PROFILE_UPDATE_TYPEHASH: constant(bytes32) = keccak256(
    "ProfileUpdate(address owner,uint256 subaccount,uint256 class_id,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
PROFILE_BATCH_TYPEHASH: constant(bytes32) = keccak256(
    "ProfileBatch(ProfileUpdate[] updates)ProfileUpdate(address owner,uint256 subaccount,uint256 class_id,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)


struct AccountClass:
    multiplier: uint256  # WAD; 0: not defined
    min_volume: uint256  # USD WAD: the owner's trailing 30-day volume
    min_equity: uint256  # USD WAD: the subaccount's equity when assigned


struct ProfileUpdate:
    owner: address
    subaccount: uint256
    class_id: uint256
    observed_at: uint256
    deadline: uint256
    model_hash: bytes32


struct Profile:
    class_id: uint256
    observed_at: uint256
    expires_at: uint256


# @dev The risk registry: keepers, signer threshold, pause.
RISK_REGISTRY: public(immutable(address))
# @dev The margin engine the classes are pushed into.
ENGINE: public(immutable(address))

# @dev Governance bounds on class multipliers (WAD).
min_multiplier: public(uint256)
max_multiplier: public(uint256)
# @dev Seconds after an update lands before the account falls back to the default class.
heartbeat: public(uint256)
# @dev The classes, 1 to 7 (0 is the default: 1x, no rules).
_classes: HashMap[uint256, AccountClass]
# @dev Each subaccount's last accepted profile.
_profiles: HashMap[address, HashMap[uint256, Profile]]


event ClassBoundsSet:
    min_multiplier: uint256
    max_multiplier: uint256

event HeartbeatSet:
    old_heartbeat: uint256
    new_heartbeat: uint256

event ClassDefined:
    class_id: indexed(uint256)
    old_class: AccountClass
    new_class: AccountClass

event ProfileUpdated:
    owner: indexed(address)
    subaccount: indexed(uint256)
    old_class: uint256
    new_class: uint256
    observed_at: uint256
    expires_at: uint256
    model_hash: bytes32

event ProfileBatchRelayed:
    relayer: indexed(address)
    digest: bytes32
    updates: uint256
    signers: uint256


@deploy
def __init__(risk_registry: address, engine: address, heartbeat_: uint256):
    """
    @dev The deployer becomes the owner. Class bounds start at [1x, 1x]:
         governance widens them before defining a discount or a penalty.
    @param risk_registry The `RiskParameterRegistry` (keepers, threshold, pause).
    @param engine The `MarginEngine`.
    @param heartbeat_ Seconds a profile stays in force after it lands.
    """
    ownable.__init__()
    ownable_2step.__init__()
    eip712.__init__("DynamicMarginProfileRegistry", "1")
    assert risk_registry != empty(address) and engine != empty(address), "profiles: zero address"
    assert heartbeat_ != 0 and heartbeat_ <= MAX_DURATION, "profiles: heartbeat out of range"
    RISK_REGISTRY = risk_registry
    ENGINE = engine
    self.min_multiplier = WAD
    self.max_multiplier = WAD
    self.heartbeat = heartbeat_
    log ClassBoundsSet(min_multiplier=WAD, max_multiplier=WAD)
    log HeartbeatSet(old_heartbeat=0, new_heartbeat=heartbeat_)


@external
def set_class_bounds(min_multiplier_: uint256, max_multiplier_: uint256):
    """
    @notice Sets the band class multipliers must lie in (within [0.5x, 4x]);
            classes defined earlier keep their multiplier.
    @dev Owner only.
    @param min_multiplier_ Lowest class multiplier (WAD), at most 1x.
    @param max_multiplier_ Highest class multiplier (WAD), at least 1x.
    """
    ownable._check_owner()
    assert min_multiplier_ >= ABSOLUTE_MIN_MULTIPLIER and min_multiplier_ <= WAD, "profiles: min multiplier must be 0.5x to 1x"
    assert max_multiplier_ >= WAD and max_multiplier_ <= ABSOLUTE_MAX_MULTIPLIER, "profiles: max multiplier must be 1x to 4x"
    self.min_multiplier = min_multiplier_
    self.max_multiplier = max_multiplier_
    log ClassBoundsSet(min_multiplier=min_multiplier_, max_multiplier=max_multiplier_)


@external
def set_heartbeat(heartbeat_: uint256):
    """
    @notice Sets how long a profile stays in force (profiles already landed keep their expiry).
    @dev Owner only.
    @param heartbeat_ Seconds.
    """
    ownable._check_owner()
    assert heartbeat_ != 0 and heartbeat_ <= MAX_DURATION, "profiles: heartbeat out of range"
    log HeartbeatSet(old_heartbeat=self.heartbeat, new_heartbeat=heartbeat_)
    self.heartbeat = heartbeat_


@external
def define_class(class_id: uint256, account_class: AccountClass):
    """
    @notice Defines or changes a class; the engine applies its multiplier to
            every account in it at once. A multiplier of 0 retires the class
            (its accounts fall back to the default 1x).
    @dev Owner only.
    @param class_id 1 to 7.
    @param account_class Multiplier within the bounds, eligibility rules.
    """
    ownable._check_owner()
    assert class_id >= 1 and class_id <= MAX_CLASSES, "profiles: class id must be 1 to 7"
    m: uint256 = account_class.multiplier
    assert m == 0 or (m >= self.min_multiplier and m <= self.max_multiplier), "profiles: class multiplier outside the bounds"
    log ClassDefined(class_id=class_id, old_class=self._classes[class_id], new_class=account_class)
    self._classes[class_id] = account_class
    extcall IEngineSync(ENGINE).sync_class(class_id, m)


@external
def submit_profiles(updates: DynArray[ProfileUpdate, MAX_UPDATES], signatures: DynArray[Bytes[65], MAX_SIGNATURES]):
    """
    @notice Applies a batch of keeper-signed profile updates. Anyone may
            relay; the batch applies whole or reverts whole. Each account
            must meet its class's eligibility now.
    @param updates The signed updates.
    @param signatures 65-byte `r || s || v` keeper signatures.
    """
    n: uint256 = len(updates)
    assert n > 0, "profiles: empty batch"
    digest: bytes32 = self._batch_digest(updates)
    signers: uint256 = keeper_quorum._check_quorum(digest, signatures, RISK_REGISTRY)
    for u: ProfileUpdate in updates:
        self._apply(u)
    log ProfileBatchRelayed(relayer=msg.sender, digest=digest, updates=n, signers=signers)


@view
@external
def account_class(class_id: uint256) -> AccountClass:
    """
    @notice A class's multiplier and eligibility rules.
    @param class_id 1 to 7.
    @return AccountClass The class (multiplier 0: not defined).
    """
    return self._classes[class_id]


@view
@external
def profile(owner: address, subaccount: uint256) -> Profile:
    """
    @notice A subaccount's last accepted profile.
    @param owner The owner.
    @param subaccount The subaccount.
    @return Profile class, observed_at, expires_at.
    """
    return self._profiles[owner][subaccount]


@view
@external
def is_eligible(owner: address, subaccount: uint256, class_id: uint256) -> bool:
    """
    @notice Whether an account meets a class's eligibility now.
    @param owner The owner.
    @param subaccount The subaccount.
    @param class_id 0 to 7.
    @return bool True when an update to this class would be accepted on eligibility.
    """
    return self._eligible(owner, subaccount, class_id)


@view
@external
def batch_digest(updates: DynArray[ProfileUpdate, MAX_UPDATES]) -> bytes32:
    """
    @notice The EIP-712 digest keepers sign for `updates`.
    @param updates The batch.
    @return bytes32 The digest.
    """
    return self._batch_digest(updates)


@view
@internal
def _eligible(owner: address, subaccount: uint256, class_id: uint256) -> bool:
    if class_id == 0:
        return True
    c: AccountClass = self._classes[class_id]
    if c.multiplier == 0:
        return False
    if c.min_volume != 0 and staticcall IMarginEngine(ENGINE).trailing_volume(owner) < c.min_volume:
        return False
    if c.min_equity != 0:
        equity: int256 = 0
        maintenance: uint256 = 0
        initial: uint256 = 0
        equity, maintenance, initial = staticcall IMarginEngine(ENGINE).account_health(owner, subaccount)
        if equity < convert(c.min_equity, int256):
            return False
    return True


@view
@internal
def _batch_digest(updates: DynArray[ProfileUpdate, MAX_UPDATES]) -> bytes32:
    hashes: bytes32[MAX_UPDATES] = empty(bytes32[MAX_UPDATES])
    i: uint256 = 0
    for u: ProfileUpdate in updates:
        hashes[i] = keccak256(
            abi_encode(PROFILE_UPDATE_TYPEHASH, u.owner, u.subaccount, u.class_id, u.observed_at, u.deadline, u.model_hash)
        )
        i += 1
    array_hash: bytes32 = keccak256(slice(abi_encode(hashes), 0, 32 * len(updates)))
    return eip712._hash_typed_data_v4(keccak256(abi_encode(PROFILE_BATCH_TYPEHASH, array_hash)))


@internal
def _apply(u: ProfileUpdate):
    assert block.timestamp <= u.deadline, "profiles: update past its deadline"
    assert u.observed_at <= block.timestamp, "profiles: observed_at in the future"
    old: Profile = self._profiles[u.owner][u.subaccount]
    assert u.observed_at > old.observed_at, "profiles: observed_at not after the last update"
    assert u.class_id <= MAX_CLASSES, "profiles: class id must be 0 to 7"
    assert u.class_id == 0 or self._classes[u.class_id].multiplier != 0, "profiles: class not defined"
    assert self._eligible(u.owner, u.subaccount, u.class_id), "profiles: account not eligible for the class"
    expires_at: uint256 = block.timestamp + self.heartbeat
    self._profiles[u.owner][u.subaccount] = Profile(class_id=u.class_id, observed_at=u.observed_at, expires_at=expires_at)
    log ProfileUpdated(
        owner=u.owner,
        subaccount=u.subaccount,
        old_class=old.class_id,
        new_class=u.class_id,
        observed_at=u.observed_at,
        expires_at=expires_at,
        model_hash=u.model_hash,
    )
    extcall IEngineSync(ENGINE).sync_profile(u.owner, u.subaccount, u.class_id, expires_at)
