# pragma version ~=0.4.3
"""
@title Dynamic Margin scenario registry: keeper-signed joint stress scenarios
@custom:contract-name ScenarioRegistry
@license GNU Affero General Public License v3.0 only
@notice Portfolio margin for cross accounts: governance groups markets and
        bounds their scenarios; the keepers of the `RiskParameterRegistry`
        sign joint stress scenarios (K <= 16 price moves per market, in
        basis points) that anyone may relay, as EIP-712 batches checked here
        and pushed into the margin engine. The engine margins a cross account
        whose positions all lie in one group at
            min(tiered sum, max(worst scenario loss + residual x tiered sum,
                                floor x tiered sum))
        (`modules/engine_core.vy`). Stale or absent scenarios give no
        portfolio credit: the plain tiered sum applies.

        Guardrails per group: each market's |shock| <= its bound; while the
        previous scenarios are in force the count may not fall and each
        previous scenario moves by at most the market's step per update (a
        stale group starts afresh inside its bounds; a reconfiguration
        clears the scenarios); a heartbeat after which the group is stale,
        one update per group per block, `observed_at` strictly increasing
        and after the group's last configuration, a deadline. Keepers, the
        signer threshold and the pause are the risk registry's.

        EIP-712 domain: name "DynamicMarginScenarioRegistry", version "1".
        Signed type:
            ScenarioBatch(ScenarioUpdate[] updates)ScenarioUpdate(uint256 group_id,uint256 count,uint256[] shocks,uint256 observed_at,uint256 deadline,bytes32 model_hash)
        `shocks[i]` packs market i's 16 int16 moves (scenario k in bits
        16k..16k+15, two's complement; slots k >= count are zero).
@custom:kill The risk registry's `pause` stops scenario updates too; groups
        then go stale at their heartbeat and the tiered sums apply.
"""

from snekmate.auth import ownable
from snekmate.auth import ownable_2step
from snekmate.utils import eip712_domain_separator as eip712

from interfaces import IEngineSync
from interfaces import IRiskParameterRegistry
from interfaces import IScenarioRegistry
from modules import keeper_quorum

implements: IScenarioRegistry

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
MAX_GROUP_MARKETS: constant(uint256) = 8
MAX_SCENARIOS: constant(uint256) = 16
MAX_UPDATES: constant(uint256) = 8
MAX_SIGNATURES: constant(uint256) = 8
MAX_GROUP_ID: constant(uint256) = 255
MAX_SHOCK_BPS: constant(uint256) = 2**15 - 1
MAX_RATIO: constant(uint256) = 2**64 - 1
MAX_DURATION: constant(uint256) = 2**32 - 1
MASK_16: constant(uint256) = 2**16 - 1
MASK_64: constant(uint256) = 2**64 - 1

SCENARIO_UPDATE_TYPEHASH: constant(bytes32) = keccak256(
    "ScenarioUpdate(uint256 group_id,uint256 count,uint256[] shocks,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)
SCENARIO_BATCH_TYPEHASH: constant(bytes32) = keccak256(
    "ScenarioBatch(ScenarioUpdate[] updates)ScenarioUpdate(uint256 group_id,uint256 count,uint256[] shocks,uint256 observed_at,uint256 deadline,bytes32 model_hash)"
)


struct GroupConfig:
    markets: DynArray[uint256, MAX_GROUP_MARKETS]
    max_shocks: DynArray[uint256, MAX_GROUP_MARKETS]  # |shock| bound per market, basis points
    max_steps: DynArray[uint256, MAX_GROUP_MARKETS]  # largest move of a shock per update, per market
    heartbeat: uint256  # seconds after an update lands before the group is stale
    residual: uint256  # WAD: the fraction of the tiered sum charged on top of the worst loss
    floor: uint256  # WAD: the least fraction of the tiered sum a portfolio pays
    initial_ratio: uint256  # WAD: initial over maintenance for a portfolio


struct GroupState:
    count: uint256
    shocks: DynArray[uint256, MAX_GROUP_MARKETS]
    observed_at: uint256
    updated_at: uint256


# @dev The risk registry: keepers, signer threshold, pause, market listing.
RISK_REGISTRY: public(immutable(address))
# @dev The margin engine the scenarios are pushed into.
ENGINE: public(immutable(address))

# @dev Each group's configuration (no markets: not configured).
_config: HashMap[uint256, GroupConfig]
# @dev Each group's last accepted scenarios.
_state: HashMap[uint256, GroupState]
# @dev The group a market belongs to (0: none).
group_of: public(HashMap[uint256, uint256])


event GroupConfigured:
    group_id: indexed(uint256)
    config: GroupConfig
    removed: DynArray[uint256, MAX_GROUP_MARKETS]

event GroupRemoved:
    group_id: indexed(uint256)
    removed: DynArray[uint256, MAX_GROUP_MARKETS]

event ScenariosUpdated:
    group_id: indexed(uint256)
    count: uint256
    shocks: DynArray[uint256, MAX_GROUP_MARKETS]
    observed_at: uint256
    fresh_until: uint256
    model_hash: bytes32

event ScenarioBatchRelayed:
    relayer: indexed(address)
    digest: bytes32
    updates: uint256
    signers: uint256


@deploy
def __init__(risk_registry: address, engine: address):
    """
    @dev The deployer becomes the owner.
    @param risk_registry The `RiskParameterRegistry` (keepers, threshold, pause).
    @param engine The `MarginEngine` that margins with these scenarios.
    """
    ownable.__init__()
    ownable_2step.__init__()
    eip712.__init__("DynamicMarginScenarioRegistry", "1")
    assert risk_registry != empty(address) and engine != empty(address), "scenarios: zero address"
    RISK_REGISTRY = risk_registry
    ENGINE = engine


@external
def configure_group(group_id: uint256, config: GroupConfig):
    """
    @notice Creates or replaces a scenario group: its markets, the bound of
            each market's shocks, the step limit, the heartbeat and the
            portfolio parameters. The group has no scenarios in force until
            the keepers' next update, which must be observed after this
            block (so no batch signed for the old configuration can land).
    @dev Owner only. A market belongs to at most one group.
    @param group_id 1 to 255.
    @param config The group.
    """
    ownable._check_owner()
    assert group_id != 0 and group_id <= MAX_GROUP_ID, "scenarios: group id must be 1 to 255"
    n: uint256 = len(config.markets)
    assert n >= 2, "scenarios: a group needs two markets or more"
    assert len(config.max_shocks) == n and len(config.max_steps) == n, "scenarios: one shock bound and step per market"
    assert config.heartbeat != 0 and config.heartbeat <= MAX_DURATION, "scenarios: heartbeat out of range"
    assert config.residual <= WAD and config.floor <= WAD, "scenarios: residual and floor at most 100%"
    assert config.initial_ratio >= WAD and config.initial_ratio <= MAX_RATIO, "scenarios: initial ratio out of range"
    for i: uint256 in range(MAX_GROUP_MARKETS):
        if i >= n:
            break
        market_id: uint256 = config.markets[i]
        assert staticcall IRiskParameterRegistry(RISK_REGISTRY).is_configured(market_id), "scenarios: market not in the risk registry"
        assert config.max_shocks[i] != 0 and config.max_shocks[i] <= MAX_SHOCK_BPS, "scenarios: shock bound out of range"
        assert config.max_steps[i] != 0 and config.max_steps[i] <= 2 * MAX_SHOCK_BPS, "scenarios: step limit out of range"
        owner_group: uint256 = self.group_of[market_id]
        assert owner_group == 0 or owner_group == group_id, "scenarios: market in another group"
        for j: uint256 in range(MAX_GROUP_MARKETS):
            if j >= i:
                break
            assert config.markets[j] != market_id, "scenarios: market listed twice"
    removed: DynArray[uint256, MAX_GROUP_MARKETS] = []
    for market_id: uint256 in self._config[group_id].markets:
        if market_id not in config.markets:
            removed.append(market_id)
            self.group_of[market_id] = 0
    for market_id: uint256 in config.markets:
        self.group_of[market_id] = group_id
    self._config[group_id] = config
    # The scenarios in force go. The next update must be observed after this block: a batch
    # signed for the old markets (landed or still in flight) cannot land on the new ones, whose
    # words it would read by position.
    self._state[group_id] = GroupState(count=0, shocks=[], observed_at=max(self._state[group_id].observed_at, block.timestamp), updated_at=0)
    log GroupConfigured(group_id=group_id, config=config, removed=removed)
    extcall IEngineSync(ENGINE).sync_scenario_group(
        group_id,
        config.markets,
        removed,
        (config.residual << 45) | (config.floor << 109) | (config.initial_ratio << 173),
    )


@external
def remove_group(group_id: uint256):
    """
    @notice Dissolves a scenario group: its markets leave it and its
            accounts fall back to the tiered sums at once.
    @dev Owner only. The last observation time stays, so no batch signed
         for the group before now can land if it is configured again.
    @param group_id A configured group.
    """
    ownable._check_owner()
    removed: DynArray[uint256, MAX_GROUP_MARKETS] = self._config[group_id].markets
    assert len(removed) != 0, "scenarios: unknown group"
    for market_id: uint256 in removed:
        self.group_of[market_id] = 0
    self._config[group_id] = empty(GroupConfig)
    self._state[group_id] = GroupState(count=0, shocks=[], observed_at=max(self._state[group_id].observed_at, block.timestamp), updated_at=0)
    log GroupRemoved(group_id=group_id, removed=removed)
    extcall IEngineSync(ENGINE).sync_scenario_group(group_id, [], removed, 0)


@external
def submit_scenarios(updates: DynArray[IScenarioRegistry.ScenarioUpdate, MAX_UPDATES], signatures: DynArray[Bytes[65], MAX_SIGNATURES]):
    """
    @notice Applies a batch of keeper-signed scenario updates. Anyone may
            relay; the batch applies whole or reverts whole.
    @param updates The signed updates (one per group at most).
    @param signatures 65-byte `r || s || v` keeper signatures.
    """
    n: uint256 = len(updates)
    assert n > 0, "scenarios: empty batch"
    digest: bytes32 = self._batch_digest(updates)
    signers: uint256 = keeper_quorum._check_quorum(digest, signatures, RISK_REGISTRY)
    for u: IScenarioRegistry.ScenarioUpdate in updates:
        self._apply(u)
    log ScenarioBatchRelayed(relayer=msg.sender, digest=digest, updates=n, signers=signers)


@view
@external
def group(group_id: uint256) -> (GroupConfig, GroupState):
    """
    @notice A group's configuration and last accepted scenarios.
    @param group_id The group.
    @return GroupConfig The configuration (no markets: not configured).
    @return GroupState Scenario count, packed shocks per market, observed_at, updated_at.
    """
    return self._config[group_id], self._state[group_id]


@view
@external
def is_fresh(group_id: uint256) -> bool:
    """
    @notice Whether the group's scenarios are in force (portfolio credit applies).
    @param group_id The group.
    @return bool True while an update landed within the heartbeat.
    """
    updated_at: uint256 = self._state[group_id].updated_at
    return updated_at != 0 and block.timestamp <= updated_at + self._config[group_id].heartbeat


@view
@external
def batch_digest(updates: DynArray[IScenarioRegistry.ScenarioUpdate, MAX_UPDATES]) -> bytes32:
    """
    @notice The EIP-712 digest keepers sign for `updates`.
    @param updates The batch.
    @return bytes32 The digest.
    """
    return self._batch_digest(updates)


@view
@internal
def _batch_digest(updates: DynArray[IScenarioRegistry.ScenarioUpdate, MAX_UPDATES]) -> bytes32:
    hashes: bytes32[MAX_UPDATES] = empty(bytes32[MAX_UPDATES])
    i: uint256 = 0
    for u: IScenarioRegistry.ScenarioUpdate in updates:
        words: uint256[MAX_GROUP_MARKETS] = empty(uint256[MAX_GROUP_MARKETS])
        for j: uint256 in range(MAX_GROUP_MARKETS):
            if j >= len(u.shocks):
                break
            words[j] = u.shocks[j]
        # EIP-712 encodes an array as the keccak of its members, concatenated.
        shocks_hash: bytes32 = keccak256(slice(abi_encode(words), 0, 32 * len(u.shocks)))
        hashes[i] = keccak256(
            abi_encode(SCENARIO_UPDATE_TYPEHASH, u.group_id, u.count, shocks_hash, u.observed_at, u.deadline, u.model_hash)
        )
        i += 1
    array_hash: bytes32 = keccak256(slice(abi_encode(hashes), 0, 32 * len(updates)))
    return eip712._hash_typed_data_v4(keccak256(abi_encode(SCENARIO_BATCH_TYPEHASH, array_hash)))


@internal
def _apply(u: IScenarioRegistry.ScenarioUpdate):
    """
    @dev Checks one update against its group's guardrails, stores it and
         pushes it into the engine.
    """
    config: GroupConfig = self._config[u.group_id]
    n: uint256 = len(config.markets)
    assert n != 0, "scenarios: unknown group"
    assert block.timestamp <= u.deadline, "scenarios: update past its deadline"
    assert u.observed_at <= block.timestamp, "scenarios: observed_at in the future"
    state: GroupState = self._state[u.group_id]
    assert u.observed_at > state.observed_at, "scenarios: observed_at not after the last update"
    assert state.updated_at != block.timestamp, "scenarios: group already updated in this block"
    assert u.count >= 1 and u.count <= MAX_SCENARIOS, "scenarios: count must be 1 to 16"
    assert len(u.shocks) == n, "scenarios: one shock word per market"
    # While the previous scenarios are in force, the count may not fall (dropping
    # a scenario would shed its loss past the step limit) and each previous
    # scenario moves at most one step; scenarios beyond the previous count start
    # anywhere inside the bound (one more scenario can only raise a margin).
    # Stale scenarios are not in force: the group starts afresh inside its bounds.
    # A bound changes only through `configure_group`, which clears the scenarios.
    in_force: bool = state.updated_at != 0 and block.timestamp <= state.updated_at + config.heartbeat
    stepped: uint256 = 0
    if in_force:
        assert u.count >= state.count, "scenarios: count lowered while scenarios are in force"
        stepped = state.count
    for i: uint256 in range(MAX_GROUP_MARKETS):
        if i >= n:
            break
        word: uint256 = u.shocks[i]
        bound: int256 = convert(config.max_shocks[i], int256)
        step: int256 = convert(config.max_steps[i], int256)
        for k: uint256 in range(MAX_SCENARIOS):
            z: int256 = self._shock(word, k)
            if k >= u.count:
                assert z == 0, "scenarios: shock beyond the scenario count"
                continue
            assert z <= bound and z >= -bound, "scenarios: shock beyond its bound"
            if k < stepped:
                moved: int256 = z - self._shock(state.shocks[i], k)
                assert moved <= step and moved >= -step, "scenarios: shock moved beyond the step limit"
    fresh_until: uint256 = block.timestamp + config.heartbeat
    self._state[u.group_id] = GroupState(count=u.count, shocks=u.shocks, observed_at=u.observed_at, updated_at=block.timestamp)
    log ScenariosUpdated(
        group_id=u.group_id, count=u.count, shocks=u.shocks, observed_at=u.observed_at, fresh_until=fresh_until, model_hash=u.model_hash
    )
    extcall IEngineSync(ENGINE).sync_scenarios(u.group_id, u.count, fresh_until, config.markets, u.shocks)


@pure
@internal
def _shock(word: uint256, k: uint256) -> int256:
    """
    @dev Scenario k's move in `word`, int16 basis points.
    """
    z: int256 = convert((word >> (16 * k)) & MASK_16, int256)
    if z >= 2**15:
        z -= 2**16
    return z
