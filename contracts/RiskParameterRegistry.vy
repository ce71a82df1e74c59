# pragma version ~=0.4.3
"""
@title Dynamic Margin risk-parameter registry
@custom:contract-name RiskParameterRegistry
@license GNU Affero General Public License v3.0 only
@notice Stores each perpetual market's tiered maintenance-margin schedule
        and the guardrails within which keepers move its risk multiplier
        and funding rate. Keepers sign EIP-712 batches off-chain; anyone
        may relay them. Every batch is verified here and applies whole or
        reverts whole: nothing is clamped on-chain.

        Margin for a position of notional N (USD, WAD):
            S(N) = sum_i rate_i * clamp(N - floor_i, 0, floor_{i+1} - floor_i)
            maintenance = min(N, ceil(S(N) * multiplier / WAD**2))
            initial     = min(N, ceil(ceil(S(N) * max(multiplier, target) / WAD**2)
                                      * initial_ratio / WAD))
        `multiplier` is the one in force now: the target, except during an
        increase ramp; once the last update is older than the heartbeat,
        max(stale_multiplier, target decayed by max_decrease per
        min_decrease_interval since the heartbeat). The funding rate in
        force decays linearly to zero over the heartbeat after that.

        Packing: a market's moving state lives in one storage slot, its
        guardrails in two, so that an update costs one cold write. Hence
        multipliers are below 2**64 (about 18.4x), funding bounds below
        2**47 per second and times below 2**40 seconds.
@custom:kill The owner or the guardian calls `pause`: keeper updates stop,
        every view keeps working and markets fall back to their stale
        multiplier once their heartbeat passes. Ownership moves in two steps.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator as eip712

from interfaces import IEngineSync
from interfaces import IRiskParameterRegistry
from modules import fixed_point
from modules import margin_rules

implements: IRiskParameterRegistry

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: eip712

# `renounce_ownership` is deliberately not exported: a registry without an
# owner could never list a market or replace a compromised keeper.
exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
    eip712.eip712Domain,
)


# Constants

WAD: constant(uint256) = 10**18
MAX_TIERS: constant(uint256) = 8
MAX_UPDATES: constant(uint256) = 32
MAX_SIGNATURES: constant(uint256) = 8
MAX_MULTIPLIER: constant(uint256) = 2**64 - 1
MAX_FUNDING_RATE_BOUND: constant(uint256) = 2**47 - 1
MAX_SECONDS: constant(uint256) = 2**40 - 1
# Durations (heartbeat, ramp, decrease interval) are below 2**32 s (136 years):
# the engine packs them in 32 bits.
MAX_DURATION: constant(uint256) = 2**32 - 1
MAX_FLOOR: constant(uint256) = 2**128 - 1
MAX_INITIAL_RATIO: constant(uint256) = 2**120 - 1

MASK_40: constant(uint256) = 2**40 - 1
MASK_48: constant(uint256) = 2**48 - 1
MASK_64: constant(uint256) = 2**64 - 1
MASK_128: constant(uint256) = 2**128 - 1
SIGN_48: constant(uint256) = 2**47

# keccak256("RiskUpdate(uint256 market_id,uint256 multiplier,int256 funding_rate,uint256 observed_at,uint256 deadline,bytes32 model_hash)")
RISK_UPDATE_TYPEHASH: constant(bytes32) = keccak256(
    "RiskUpdate(uint256 market_id,uint256 multiplier,int256 funding_rate,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
# keccak256 of the batch type followed by the referenced struct type (EIP-712 `encodeType`).
RISK_UPDATE_BATCH_TYPEHASH: constant(bytes32) = keccak256(
    "RiskUpdateBatch(RiskUpdate[] updates)RiskUpdate(uint256 market_id,uint256 multiplier,int256 funding_rate,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)

# Bit 0 of `_control` is the pause flag; bits 8-15 hold the signer threshold.
PAUSED_BIT: constant(uint256) = 1
THRESHOLD_SHIFT: constant(uint256) = 8


# Structs

# Storage: governance

# Address that may pause and unpause besides the owner.
guardian: public(address)
# The margin engine that keeps a copy of each market's rules; every accepted
# change is pushed to it (set once; zero: none).
engine: public(address)
# Whether an address is an authorised keeper signer.
is_keeper: public(HashMap[address, bool])
# Number of authorised keeper signers.
keeper_count: public(uint256)
# Pause flag (bit 0) and signer threshold (bits 8-15), packed: read once per batch.
_control: uint256

# Storage: markets

# Tier count (bits 0-7) and initial ratio (bits 8-127); zero for an unknown market.
_market: HashMap[uint256, uint256]
# Tier i as notional_floor << 128 | maintenance_rate.
_tiers: HashMap[uint256, uint256[MAX_TIERS]]
# min_multiplier | max_multiplier << 64 | max_increase << 128 | max_decrease << 192.
_bounds: HashMap[uint256, uint256]
# stale_multiplier | max_funding_rate << 64 | heartbeat << 112 | increase_ramp << 152
# | min_decrease_interval << 192.
_timing: HashMap[uint256, uint256]
# target | ramp_from << 64 | funding_rate (int48) << 128 | updated_at << 176 | observed_at << 216.
_state: HashMap[uint256, uint256]
# Time of the last accepted decrease (written only by decreases).
_last_decrease_at: HashMap[uint256, uint256]


# Events

event MarketConfigured:
    market_id: indexed(uint256)
    tiers: DynArray[IRiskParameterRegistry.Tier, MAX_TIERS]
    initial_ratio: uint256
    guardrails: IRiskParameterRegistry.Guardrails
    old_initial_ratio: uint256
    old_guardrails: IRiskParameterRegistry.Guardrails

event KeeperAdded:
    keeper: indexed(address)
    keeper_count: uint256

event KeeperRemoved:
    keeper: indexed(address)
    keeper_count: uint256

event SignerThresholdSet:
    old_threshold: uint256
    new_threshold: uint256

event GuardianSet:
    old_guardian: indexed(address)
    new_guardian: indexed(address)

event EngineSet:
    engine: indexed(address)

event Paused:
    account: indexed(address)

event Unpaused:
    account: indexed(address)

event RiskUpdated:
    market_id: indexed(uint256)
    old_multiplier: uint256
    new_multiplier: uint256
    old_funding_rate: int256
    new_funding_rate: int256
    observed_at: uint256
    model_hash: bytes32

event RiskBatchRelayed:
    relayer: indexed(address)
    digest: bytes32
    updates: uint256
    signers: uint256


@deploy
def __init__(guardian_: address):
    """
    @dev The deployer becomes the owner; the signer threshold starts at 1.
    @param guardian_ Address that may pause and unpause besides the owner
           (the zero address for none).
    """
    ownable.__init__()
    ownable_2step.__init__()
    eip712.__init__("DynamicMarginRiskRegistry", "1")
    self.guardian = guardian_
    self._control = 1 << THRESHOLD_SHIFT
    log GuardianSet(old_guardian=empty(address), new_guardian=guardian_)
    log SignerThresholdSet(old_threshold=0, new_threshold=1)


# External: governance


@external
def configure_market(
    market_id: uint256,
    tiers: DynArray[IRiskParameterRegistry.Tier, MAX_TIERS],
    initial_ratio: uint256,
    guardrails: IRiskParameterRegistry.Guardrails,
):
    """
    @notice Lists a market or replaces its tier schedule, initial ratio and
            guardrails. A market's multiplier state is kept: the next keeper
            update must land inside the new guardrails.
    @dev Owner only. Floors strictly increase from 0; rates are non-decreasing,
         at most WAD, the first above zero; `initial_ratio >= WAD`.
    @param market_id Market identifier shared with the margin engine.
    @param tiers Notional brackets with marginal maintenance rates.
    @param initial_ratio Initial margin as a multiple of maintenance (WAD).
    @param guardrails Bounds on keeper updates and the stale fallback.
    """
    ownable._check_owner()
    n: uint256 = len(tiers)
    assert n > 0, "registry: tier count must be 1 to 8"
    assert tiers[0].notional_floor == 0, "registry: first tier floor must be 0"
    assert tiers[0].maintenance_rate > 0, "registry: first tier rate is zero"
    for i: uint256 in range(1, MAX_TIERS):
        if i >= n:
            break
        assert tiers[i].notional_floor > tiers[i - 1].notional_floor, "registry: tier floors not strictly increasing"
        assert tiers[i].maintenance_rate >= tiers[i - 1].maintenance_rate, "registry: tier rates decreasing"
    assert tiers[n - 1].maintenance_rate <= WAD, "registry: tier rate above 100%"
    assert tiers[n - 1].notional_floor <= MAX_FLOOR, "registry: tier floor too large"
    assert initial_ratio >= WAD, "registry: initial ratio below 1"
    assert initial_ratio <= MAX_INITIAL_RATIO, "registry: initial ratio too large"
    self._check_guardrails(guardrails)

    old_ratio: uint256 = self._market[market_id] >> 8
    old_guardrails: IRiskParameterRegistry.Guardrails = self._guardrails(market_id)

    packed_tiers: uint256[MAX_TIERS] = empty(uint256[MAX_TIERS])
    for i: uint256 in range(MAX_TIERS):
        if i >= n:
            break
        packed_tiers[i] = (tiers[i].notional_floor << 128) | tiers[i].maintenance_rate
    self._tiers[market_id] = packed_tiers
    self._market[market_id] = n | (initial_ratio << 8)
    self._bounds[market_id] = (
        guardrails.min_multiplier
        | (guardrails.max_multiplier << 64)
        | (guardrails.max_increase << 128)
        | (guardrails.max_decrease << 192)
    )
    self._timing[market_id] = (
        guardrails.stale_multiplier
        | (guardrails.max_funding_rate << 64)
        | (guardrails.heartbeat << 112)
        | (guardrails.increase_ramp << 152)
        | (guardrails.min_decrease_interval << 192)
    )
    log MarketConfigured(
        market_id=market_id,
        tiers=tiers,
        initial_ratio=initial_ratio,
        guardrails=guardrails,
        old_initial_ratio=old_ratio,
        old_guardrails=old_guardrails,
    )
    engine: address = self.engine
    if engine != empty(address):
        extcall IEngineSync(engine).sync_market_config(market_id, tiers, initial_ratio, guardrails)


@external
def add_keeper(signer: address):
    """
    @notice Authorises `signer` to sign risk-update batches.
    @dev Owner only.
    @param signer The keeper's signing address.
    """
    ownable._check_owner()
    assert signer != empty(address), "registry: keeper is the zero address"
    assert not self.is_keeper[signer], "registry: already a keeper"
    self.is_keeper[signer] = True
    self.keeper_count += 1
    log KeeperAdded(keeper=signer, keeper_count=self.keeper_count)


@external
def remove_keeper(signer: address):
    """
    @notice Revokes `signer`: batches it signs no longer count.
    @dev Owner only. The keepers left must still reach the signer threshold,
         unless none are left (the registry then simply takes no updates).
    @param signer The keeper's signing address.
    """
    ownable._check_owner()
    assert self.is_keeper[signer], "registry: not a keeper"
    count: uint256 = self.keeper_count - 1
    assert count == 0 or count >= self._threshold(), "registry: threshold above keeper count"
    self.is_keeper[signer] = False
    self.keeper_count = count
    log KeeperRemoved(keeper=signer, keeper_count=count)


@external
def set_signer_threshold(k: uint256):
    """
    @notice Sets how many distinct keeper signatures a batch needs.
    @dev Owner only. 1 <= k <= 8 and k no more than the keepers listed.
    @param k The new threshold.
    """
    ownable._check_owner()
    assert k >= 1 and k <= MAX_SIGNATURES, "registry: threshold must be 1 to 8"
    assert k <= self.keeper_count, "registry: threshold above keeper count"
    control: uint256 = self._control
    old: uint256 = (control >> THRESHOLD_SHIFT) & 255
    self._control = (control & PAUSED_BIT) | (k << THRESHOLD_SHIFT)
    log SignerThresholdSet(old_threshold=old, new_threshold=k)


@external
def set_guardian(new_guardian: address):
    """
    @notice Replaces the guardian (the zero address removes it).
    @dev Owner only.
    @param new_guardian Address that may pause and unpause.
    """
    ownable._check_owner()
    old: address = self.guardian
    self.guardian = new_guardian
    log GuardianSet(old_guardian=old, new_guardian=new_guardian)


@external
def set_engine(engine_: address):
    """
    @notice Names the margin engine that keeps a copy of each market's rules;
            from now on every `configure_market` and every accepted update is
            pushed to it in the same transaction. Set once: an engine that
            stopped receiving pushes would margin on stale rules.
    @dev Owner only. The engine pulls the markets configured before, when it
         lists them.
    @param engine_ The engine.
    """
    ownable._check_owner()
    assert self.engine == empty(address), "registry: engine already set"
    assert engine_ != empty(address), "registry: engine is the zero address"
    self.engine = engine_
    log EngineSet(engine=engine_)


@external
def pause():
    """
    @notice Stops keeper updates; every view keeps working.
    @dev Owner or guardian.
    """
    self._check_owner_or_guardian()
    control: uint256 = self._control
    assert control & PAUSED_BIT == 0, "registry: already paused"
    self._control = control | PAUSED_BIT
    log Paused(account=msg.sender)


@external
def unpause():
    """
    @notice Resumes keeper updates.
    @dev Owner or guardian.
    """
    self._check_owner_or_guardian()
    control: uint256 = self._control
    assert control & PAUSED_BIT != 0, "registry: not paused"
    self._control = control & ~PAUSED_BIT
    log Unpaused(account=msg.sender)


# External: keeper updates


@external
def submit_updates(updates: DynArray[IRiskParameterRegistry.RiskUpdate, MAX_UPDATES], signatures: DynArray[Bytes[65], MAX_SIGNATURES]):
    """
    @notice Applies a batch of keeper-signed risk updates. Anyone may relay.
    @dev The batch applies whole or reverts whole. It needs at least the
         threshold of distinct keeper signatures over the EIP-712 digest of
         `RiskUpdateBatch(RiskUpdate[] updates)`; each update must be for a
         listed market, before its deadline, observed after the market's
         last update and not in the future, within [min, max] and the step
         limits of the last accepted target, and a decrease must respect the
         minimum interval between decreases.
    @param updates The signed updates, at most 32.
    @param signatures 65-byte `r || s || v` signatures, at most 8.
    """
    control: uint256 = self._control
    assert control & PAUSED_BIT == 0, "registry: paused"
    n: uint256 = len(updates)
    assert n > 0, "registry: empty batch"

    # Effects are only written after every signature has been checked, and
    # every update below reverts the whole batch if it fails.
    digest: bytes32 = self._batch_digest(updates)
    signers: uint256 = self._check_signatures(digest, signatures, (control >> THRESHOLD_SHIFT) & 255)

    engine: address = self.engine
    for u: IRiskParameterRegistry.RiskUpdate in updates:
        self._apply(u, engine)

    log RiskBatchRelayed(relayer=msg.sender, digest=digest, updates=n, signers=signers)


# External: views


@view
@external
def paused() -> bool:
    """
    @notice Whether keeper updates are paused.
    @return bool True while paused.
    """
    return self._control & PAUSED_BIT != 0


@view
@external
def signer_threshold() -> uint256:
    """
    @notice Distinct keeper signatures a batch needs.
    @return uint256 The threshold k.
    """
    return self._threshold()


@view
@external
def is_configured(market_id: uint256) -> bool:
    """
    @notice Whether governance has listed `market_id`.
    @param market_id The market.
    @return bool True once configured.
    """
    return self._market[market_id] != 0


@view
@external
def multiplier(market_id: uint256) -> uint256:
    """
    @notice The maintenance multiplier in force now (WAD). Fresh: the
            target, except during an increase ramp. Stale (no update within
            the heartbeat): max(stale_multiplier, the last target decayed by
            max_decrease per min_decrease_interval since the heartbeat), so a
            silent keeper never lowers margin faster than a live one could;
            before any update: the stale multiplier.
    @param market_id The market.
    @return uint256 The multiplier.
    """
    bounds: uint256 = self._bounds[market_id]
    assert bounds != 0, "registry: unknown market"
    return self._multiplier_in_force(market_id, self._state[market_id], self._timing[market_id])


@view
@external
def target_multiplier(market_id: uint256) -> uint256:
    """
    @notice The last accepted target multiplier (0 before the first update).
    @param market_id The market.
    @return uint256 The target (WAD).
    """
    return self._state[market_id] & MASK_64


@view
@external
def maintenance_margin(market_id: uint256, notional: uint256) -> uint256:
    """
    @notice Maintenance margin for a position of `notional`:
            min(N, ceil(S(N) * multiplier / WAD**2)).
    @param market_id The market.
    @param notional Absolute position notional (USD, WAD).
    @return uint256 The requirement (USD, WAD), rounded up.
    """
    mm: uint256 = 0
    im: uint256 = 0
    mm, im = self._requirements(market_id, notional)
    return mm


@view
@external
def initial_margin(market_id: uint256, notional: uint256) -> uint256:
    """
    @notice Initial margin for a position of `notional`:
            min(N, ceil(ceil(S(N) * max(multiplier, target) / WAD**2) * initial_ratio / WAD)).
            An increase applies to initial margin at once, ramp or not.
    @param market_id The market.
    @param notional Absolute position notional (USD, WAD).
    @return uint256 The requirement (USD, WAD), rounded up.
    """
    mm: uint256 = 0
    im: uint256 = 0
    mm, im = self._requirements(market_id, notional)
    return im


@view
@external
def margin_requirements(market_id: uint256, notional: uint256) -> (uint256, uint256):
    """
    @notice Maintenance and initial margin in one call (the engine's hot path).
    @param market_id The market.
    @param notional Absolute position notional (USD, WAD).
    @return uint256 Maintenance margin (USD, WAD).
    @return uint256 Initial margin (USD, WAD).
    """
    return self._requirements(market_id, notional)


@view
@external
def funding_rate(market_id: uint256) -> int256:
    """
    @notice The funding rate in force, per second (WAD); positive: longs pay
            shorts. The last accepted rate while the market is fresh; once
            stale it decays linearly to zero over one more heartbeat, so a
            rate nobody re-signs stops accruing (also while paused).
    @param market_id The market.
    @return int256 The funding rate.
    """
    return self._funding_in_force(self._state[market_id], self._timing[market_id])


@view
@external
def is_stale(market_id: uint256) -> bool:
    """
    @notice Whether the market runs on its stale multiplier (no update within the heartbeat).
    @param market_id The market.
    @return bool True when stale.
    """
    return self._is_stale(self._state[market_id], self._timing[market_id])


@view
@external
def last_update(market_id: uint256) -> (uint256, uint256):
    """
    @notice When the data behind the last update was observed and when it landed.
    @param market_id The market.
    @return uint256 observed_at (seconds).
    @return uint256 updated_at (seconds, block time).
    """
    state: uint256 = self._state[market_id]
    return (state >> 216) & MASK_40, (state >> 176) & MASK_40


@view
@external
def market_state(market_id: uint256) -> IRiskParameterRegistry.MarketState:
    """
    @notice A market's stored update state, unpacked.
    @param market_id The market.
    @return MarketState target, ramp start, funding, times, last decrease.
    """
    state: uint256 = self._state[market_id]
    return IRiskParameterRegistry.MarketState(
        target=state & MASK_64,
        ramp_from=(state >> 64) & MASK_64,
        funding_rate=self._unpack_funding(state),
        updated_at=(state >> 176) & MASK_40,
        observed_at=(state >> 216) & MASK_40,
        last_decrease_at=self._last_decrease_at[market_id],
    )


@view
@external
def guardrails(market_id: uint256) -> IRiskParameterRegistry.Guardrails:
    """
    @notice A market's guardrails (all zero for an unknown market).
    @param market_id The market.
    @return Guardrails The guardrails.
    """
    return self._guardrails(market_id)


@view
@external
def tiers(market_id: uint256) -> DynArray[IRiskParameterRegistry.Tier, MAX_TIERS]:
    """
    @notice A market's tier schedule.
    @param market_id The market.
    @return DynArray The tiers, lowest floor first.
    """
    n: uint256 = self._market[market_id] & 255
    packed: uint256[MAX_TIERS] = self._tiers[market_id]
    result: DynArray[IRiskParameterRegistry.Tier, MAX_TIERS] = []
    for i: uint256 in range(MAX_TIERS):
        if i >= n:
            break
        result.append(IRiskParameterRegistry.Tier(notional_floor=packed[i] >> 128, maintenance_rate=packed[i] & MASK_128))
    return result


@view
@external
def min_maintenance_rate(market_id: uint256) -> uint256:
    """
    @notice The lowest maintenance rate the market can ever charge: the first
            tier's rate times the minimum multiplier, rounded down. The engine
            refuses a liquidation fee at or above it (every liquidation would
            end in bad debt).
    @param market_id The market.
    @return uint256 The rate (WAD; 0 for an unknown market).
    """
    # rate <= WAD and min_multiplier < 2**64: the product cannot overflow.
    return (self._tiers[market_id][0] & MASK_128) * (self._bounds[market_id] & MASK_64) // WAD


@view
@external
def initial_ratio(market_id: uint256) -> uint256:
    """
    @notice Initial margin as a multiple of maintenance (WAD).
    @param market_id The market.
    @return uint256 The ratio.
    """
    return self._market[market_id] >> 8


@view
@external
def batch_digest(updates: DynArray[IRiskParameterRegistry.RiskUpdate, MAX_UPDATES]) -> bytes32:
    """
    @notice The EIP-712 digest keepers sign for `updates` (for tooling and audits).
    @param updates The batch.
    @return bytes32 The digest.
    """
    return self._batch_digest(updates)


# Internal


@view
@internal
def _threshold() -> uint256:
    return (self._control >> THRESHOLD_SHIFT) & 255


@view
@internal
def _check_owner_or_guardian():
    assert msg.sender == ownable.owner or msg.sender == self.guardian, "registry: caller is not owner or guardian"


@pure
@internal
def _check_guardrails(g: IRiskParameterRegistry.Guardrails):
    assert g.min_multiplier > 0, "registry: min multiplier is zero"
    assert g.min_multiplier <= g.max_multiplier, "registry: min multiplier above max"
    assert g.max_multiplier <= MAX_MULTIPLIER, "registry: max multiplier too large"
    assert g.stale_multiplier >= g.min_multiplier and g.stale_multiplier <= g.max_multiplier, "registry: stale multiplier outside [min, max]"
    assert g.max_increase > 0 and g.max_increase <= MAX_MULTIPLIER, "registry: max increase out of range"
    assert g.max_decrease > 0 and g.max_decrease < WAD, "registry: max decrease out of range"
    assert g.heartbeat > 0 and g.heartbeat <= MAX_DURATION, "registry: heartbeat out of range"
    assert g.min_decrease_interval <= MAX_DURATION, "registry: decrease interval too large"
    assert g.increase_ramp <= g.heartbeat, "registry: increase ramp longer than heartbeat"
    assert g.max_funding_rate <= MAX_FUNDING_RATE_BOUND, "registry: funding bound too large"


@view
@internal
def _guardrails(market_id: uint256) -> IRiskParameterRegistry.Guardrails:
    bounds: uint256 = self._bounds[market_id]
    timing: uint256 = self._timing[market_id]
    return IRiskParameterRegistry.Guardrails(
        min_multiplier=bounds & MASK_64,
        max_multiplier=(bounds >> 64) & MASK_64,
        max_increase=(bounds >> 128) & MASK_64,
        max_decrease=bounds >> 192,
        min_decrease_interval=timing >> 192,
        heartbeat=(timing >> 112) & MASK_40,
        stale_multiplier=timing & MASK_64,
        increase_ramp=(timing >> 152) & MASK_40,
        max_funding_rate=(timing >> 64) & MASK_48,
    )


@pure
@internal
def _unpack_funding(state: uint256) -> int256:
    raw: uint256 = (state >> 128) & MASK_48
    if raw >= SIGN_48:
        # raw < 2**48, so the difference is in (-2**47, 0]: no overflow.
        return convert(raw, int256) - convert(MASK_48 + 1, int256)
    return convert(raw, int256)


@view
@internal
def _is_stale(state: uint256, timing: uint256) -> bool:
    updated_at: uint256 = (state >> 176) & MASK_40
    return updated_at == 0 or block.timestamp - updated_at > (timing >> 112) & MASK_40


@view
@internal
def _multiplier_in_force(market_id: uint256, state: uint256, timing: uint256) -> uint256:
    """
    @dev The maintenance multiplier at `block.timestamp` (`margin_rules`):
         fresh, the target or its increase ramp; stale, the decayed target
         floored at the stale multiplier.
    """
    updated_at: uint256 = (state >> 176) & MASK_40
    heartbeat: uint256 = (timing >> 112) & MASK_40
    target: uint256 = state & MASK_64
    if updated_at != 0 and block.timestamp - updated_at <= heartbeat:
        return margin_rules._fresh_multiplier(
            target, (state >> 64) & MASK_64, block.timestamp - updated_at, (timing >> 152) & MASK_40
        )
    since: uint256 = 0
    if updated_at != 0:
        since = block.timestamp - updated_at - heartbeat
    return margin_rules._stale_multiplier(
        target, timing & MASK_64, self._bounds[market_id] >> 192, timing >> 192, since
    )


@view
@internal
def _funding_in_force(state: uint256, timing: uint256) -> int256:
    return margin_rules._funding_in_force(
        self._unpack_funding(state), (state >> 176) & MASK_40, (timing >> 112) & MASK_40, block.timestamp
    )


@view
@internal
def _base_margin(market_id: uint256, notional: uint256) -> uint256:
    n: uint256 = self._market[market_id] & 255
    assert n != 0, "registry: unknown market"
    total: uint256 = 0
    packed: uint256 = self._tiers[market_id][0]
    for i: uint256 in range(MAX_TIERS):
        if i >= n:
            break
        tier_floor: uint256 = packed >> 128
        if notional <= tier_floor:
            break
        top: uint256 = notional
        if i + 1 < n:
            next_packed: uint256 = self._tiers[market_id][i + 1]
            top = min(notional, next_packed >> 128)
            total += (packed & MASK_128) * (top - tier_floor)
            packed = next_packed
        else:
            total += (packed & MASK_128) * (top - tier_floor)
    return total


@view
@internal
def _requirements(market_id: uint256, notional: uint256) -> (uint256, uint256):
    base: uint256 = self._base_margin(market_id, notional)
    state: uint256 = self._state[market_id]
    m: uint256 = self._multiplier_in_force(market_id, state, self._timing[market_id])
    maintenance: uint256 = min(notional, fixed_point._ceil_div(base * m, WAD * WAD))
    m_initial: uint256 = max(m, state & MASK_64)
    im_base: uint256 = fixed_point._ceil_div(base * m_initial, WAD * WAD)
    initial: uint256 = min(notional, fixed_point._ceil_div(im_base * (self._market[market_id] >> 8), WAD))
    return maintenance, initial


@view
@internal
def _batch_digest(updates: DynArray[IRiskParameterRegistry.RiskUpdate, MAX_UPDATES]) -> bytes32:
    hashes: bytes32[MAX_UPDATES] = empty(bytes32[MAX_UPDATES])
    i: uint256 = 0
    for u: IRiskParameterRegistry.RiskUpdate in updates:
        hashes[i] = keccak256(
            abi_encode(
                RISK_UPDATE_TYPEHASH,
                u.market_id,
                u.multiplier,
                u.funding_rate,
                u.observed_at,
                u.deadline,
                u.model_hash,
            )
        )
        i += 1
    # EIP-712 encodes an array as the keccak of its members' hashes, concatenated.
    array_hash: bytes32 = keccak256(slice(abi_encode(hashes), 0, 32 * len(updates)))
    return eip712._hash_typed_data_v4(keccak256(abi_encode(RISK_UPDATE_BATCH_TYPEHASH, array_hash)))


@view
@internal
def _check_signatures(digest: bytes32, signatures: DynArray[Bytes[65], MAX_SIGNATURES], threshold: uint256) -> uint256:
    assert len(signatures) >= threshold, "registry: not enough signatures"
    seen: DynArray[address, MAX_SIGNATURES] = []
    for signature: Bytes[65] in signatures:
        # Only the 65-byte form: the 64-byte EIP-2098 form is a second
        # encoding of the same signature.
        assert len(signature) == 65, "registry: signature must be 65 bytes"
        # Reverts on a high-s (malleable) signature and on the zero address.
        signer: address = ecdsa._recover_sig(digest, signature)
        assert self.is_keeper[signer], "registry: signer is not a keeper"
        assert signer not in seen, "registry: duplicate signer"
        seen.append(signer)
    return len(seen)


@internal
def _apply(u: IRiskParameterRegistry.RiskUpdate, engine: address):
    bounds: uint256 = self._bounds[u.market_id]
    assert bounds != 0, "registry: unknown market"
    assert block.timestamp <= u.deadline, "registry: update past its deadline"
    assert u.observed_at <= block.timestamp, "registry: observed_at in the future"

    state: uint256 = self._state[u.market_id]
    assert u.observed_at > (state >> 216) & MASK_40, "registry: observed_at not after the last update"
    # One update per market per block: step limits are per update, so several
    # updates of one market in a batch (or in one block) could chain them.
    assert (state >> 176) & MASK_40 != block.timestamp, "registry: market already updated in this block"
    assert u.multiplier >= bounds & MASK_64, "registry: multiplier below minimum"
    assert u.multiplier <= (bounds >> 64) & MASK_64, "registry: multiplier above maximum"

    timing: uint256 = self._timing[u.market_id]
    max_funding: int256 = convert((timing >> 64) & MASK_48, int256)
    assert u.funding_rate <= max_funding and u.funding_rate >= -max_funding, "registry: funding rate beyond its bound"

    target: uint256 = state & MASK_64
    # Step limits apply from the second update on, relative to the last target,
    # unless governance has since moved [min, max] past that target: the next
    # update then starts afresh inside the new band (otherwise no update could
    # ever land again).
    if (state >> 176) & MASK_40 != 0 and target >= bounds & MASK_64 and target <= (bounds >> 64) & MASK_64:
        # All factors are below 2**64 * 2**65, so the products cannot overflow.
        assert u.multiplier * WAD <= target * (WAD + ((bounds >> 128) & MASK_64)), "registry: update exceeds max increase"
        if u.multiplier < target:
            assert u.multiplier * WAD >= target * (WAD - (bounds >> 192)), "registry: update exceeds max decrease"
            last_decrease: uint256 = self._last_decrease_at[u.market_id]
            assert last_decrease == 0 or block.timestamp >= last_decrease + (timing >> 192), "registry: decrease inside min interval"
            self._last_decrease_at[u.market_id] = block.timestamp

    ramp_from: uint256 = u.multiplier
    if (timing >> 152) & MASK_40 != 0:
        in_force: uint256 = self._multiplier_in_force(u.market_id, state, timing)
        if in_force < u.multiplier:
            ramp_from = in_force

    # funding_rate is within +-(2**47 - 1): its low 48 bits hold it in two's complement.
    funding_bits: uint256 = convert(convert(u.funding_rate, bytes32), uint256) & MASK_48
    self._state[u.market_id] = (
        u.multiplier
        | (ramp_from << 64)
        | (funding_bits << 128)
        | (block.timestamp << 176)
        | (u.observed_at << 216)
    )
    if engine != empty(address):
        extcall IEngineSync(engine).sync_market_state(
            u.market_id, u.multiplier, ramp_from, u.funding_rate, block.timestamp
        )
    log RiskUpdated(
        market_id=u.market_id,
        old_multiplier=target,
        new_multiplier=u.multiplier,
        old_funding_rate=self._unpack_funding(state),
        new_funding_rate=u.funding_rate,
        observed_at=u.observed_at,
        model_hash=u.model_hash,
    )
