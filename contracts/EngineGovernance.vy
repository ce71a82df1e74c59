# pragma version ~=0.4.3
"""
@title Dynamic Margin engine: governance and the registries' pushes
@custom:contract-name EngineGovernance
@license GNU Affero General Public License v3.0 only
@notice Listing and configuring markets, exchanges, the pause, the funding
        reserve, the backstop reward, and what the registries push into the
        engine (tiers and guardrails, scenario groups and scenarios, risk
        classes and account profiles). `MarginEngine` forwards these calls here by delegatecall, so
        they run in the engine's storage, with the engine's address and the
        caller's `msg.sender` (one contract cannot hold all of the engine:
        EIP-170). Called directly, every function refuses ("engine: call
        through the engine"). Storage is laid out by `engine_state`,
        identically in every part of the engine.
@custom:kill See `MarginEngine`.
"""

from ethereum.ercs import IERC20Detailed

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from interfaces import IMarginEngine
from interfaces import IRiskParameterRegistry
from modules import engine_state
from modules import engine_core

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: engine_state
initializes: engine_core[engine_state := engine_state]


WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
INSURANCE_SUBACCOUNT: constant(uint256) = 0
MAX_MARKET_ID: constant(uint256) = 2**24 - 1
MAX_PRICE_BAND: constant(uint256) = 2 * 10**17
MAX_LIQUIDATION_FEE: constant(uint256) = 2 * 10**17
MAX_PRICE_AGE: constant(uint256) = 2**32 - 1
# At most a day of expected funding in maintenance.
MAX_RESERVE_SECONDS: constant(uint256) = 86400
# At most 100 USD per backstop from the insurance fund.
MAX_BACKSTOP_REWARD: constant(uint256) = 100 * 10**18
LISTED_BIT: constant(uint256) = 1 << 255
SCENARIO_REGISTRY: constant(uint256) = 1
PROFILE_REGISTRY: constant(uint256) = 2
MASK_32: constant(uint256) = 2**32 - 1
MASK_128: constant(uint256) = 2**128 - 1
MASK_192: constant(uint256) = 2**192 - 1

# @dev This contract's own address: a call that is not a delegatecall runs here.
SELF: immutable(address)
# @dev The risk-parameter registry (the engine's).
REGISTRY: public(immutable(address))


@deploy
def __init__(registry: address):
    """
    @param registry The `RiskParameterRegistry` of the engine that will use this contract.
    """
    # This contract's own storage is never used: every function runs in the
    # engine's storage, governed by the engine's owner.
    ownable.__init__()
    ownable_2step.__init__()
    SELF = self
    assert registry != empty(address), "engine: zero registry"
    REGISTRY = registry

# Governance


@external
def add_market(market_id: uint256, config: IMarginEngine.MarketConfig):
    """
    @notice Lists a market configured in the registry, copying its tiers,
            guardrails and state (the registry pushes every later change).
    @param market_id Registry market id, 1 <= id < 2**24.
    @param config Feed, max price age, price band, liquidation fee,
           liquidator share, one-side open-interest cap (USD).
    """
    self._only_engine()
    ownable._check_owner()
    assert market_id != 0 and market_id <= MAX_MARKET_ID, "engine: bad market id"
    assert engine_state.oracle[market_id] & LISTED_BIT == 0, "engine: market listed"
    registry: IRiskParameterRegistry = IRiskParameterRegistry(REGISTRY)
    assert staticcall registry.is_configured(market_id), "engine: market not in registry"
    assert staticcall registry.engine() == self, "engine: registry does not push to this engine"
    self._copy_config(
        market_id, staticcall registry.tiers(market_id), staticcall registry.initial_ratio(market_id), staticcall registry.guardrails(market_id)
    )
    state: IRiskParameterRegistry.MarketState = staticcall registry.market_state(market_id)
    rw: uint256 = engine_state.risk[market_id]
    engine_state.risk[market_id] = engine_core._pack_risk(state.target, state.ramp_from, state.updated_at, state.funding_rate, rw >> 216)
    oracle: uint256 = self._check_config(market_id, config, engine_state.oracle[market_id])
    engine_state.oracle[market_id] = oracle
    engine_state.market_config[market_id] = config
    # Start the funding clock with the first price the feed gives, if any.
    price: uint256 = 0
    time: uint256 = 0
    status: uint256 = 0
    price, time, status = engine_core._read_feed(oracle)
    engine_state.funding[market_id] = engine_core._pack_funding(0, block.timestamp, price, time)
    log IMarginEngine.MarketListed(market_id=market_id, config=config)


@external
def update_market(market_id: uint256, config: IMarginEngine.MarketConfig):
    """
    @notice Replaces a listed market's configuration (e.g. a dead feed).
    @param market_id A listed market.
    @param config The new configuration.
    """
    self._only_engine()
    ownable._check_owner()
    oracle: uint256 = engine_core._listed(market_id)
    engine_core._accrue(market_id)
    engine_state.oracle[market_id] = self._check_config(market_id, config, oracle)
    engine_state.market_config[market_id] = config
    log IMarginEngine.MarketListed(market_id=market_id, config=config)


@external
def set_price_bounds(market_id: uint256, min_answer: int256, max_answer: int256):
    """
    @notice Copies a feed aggregator's `minAnswer` / `maxAnswer` into the
            engine: a price at or beyond a bound then blocks opening, growing
            and withdrawing; (0, 0) removes the bounds.
    @param market_id A listed market.
    @param min_answer The aggregator's minAnswer, in the feed's decimals.
    @param max_answer The aggregator's maxAnswer, in the feed's decimals.
    """
    self._only_engine()
    ownable._check_owner()
    oracle: uint256 = engine_core._listed(market_id)
    packed: uint256 = 0
    if min_answer != 0 or max_answer != 0:
        assert min_answer >= 0 and min_answer < max_answer, "engine: bad price bounds"
        scale: uint256 = pow_mod256(10, (oracle >> 192) & 31)
        low: uint256 = convert(min_answer, uint256) * scale
        high: uint256 = convert(max_answer, uint256) * scale
        assert high <= MASK_128, "engine: bad price bounds"
        packed = low | (high << 128)
    old: uint256 = engine_state.price_bounds[market_id]
    engine_state.price_bounds[market_id] = packed
    log IMarginEngine.PriceBoundsSet(
        market_id=market_id, old_min_price=old & MASK_128, old_max_price=old >> 128, min_price=packed & MASK_128, max_price=packed >> 128
    )


@external
def set_funding_reserve(market_id: uint256, reserve_seconds: uint256):
    """
    @notice Sets how many seconds of expected funding the paying side of a
            market carries in its maintenance requirement (0: none).
    @param market_id A listed market.
    @param reserve_seconds At most one day.
    """
    self._only_engine()
    ownable._check_owner()
    oracle: uint256 = engine_core._listed(market_id)
    assert reserve_seconds <= MAX_RESERVE_SECONDS, "engine: funding reserve above a day"
    old: uint256 = (oracle >> 205) & MASK_32
    engine_state.oracle[market_id] = (oracle & ~(MASK_32 << 205)) | (reserve_seconds << 205)
    log IMarginEngine.FundingReserveSet(market_id=market_id, old_seconds=old, new_seconds=reserve_seconds)


@external
def set_backstop_reward(amount: uint256):
    """
    @notice Sets what whoever backstops an account is paid from the
            insurance fund (a negative account pays no liquidation penalty).
    @param amount USD WAD, at most 100 USD.
    """
    self._only_engine()
    ownable._check_owner()
    assert amount <= MAX_BACKSTOP_REWARD, "engine: backstop reward above 100 USD"
    log IMarginEngine.BackstopRewardSet(old_amount=engine_state.backstop_reward, new_amount=amount)
    engine_state.backstop_reward = amount


@external
def set_push_registry(kind: uint256, registry: address):
    """
    @notice Names the scenario registry (kind 1) or the profile registry
            (kind 2) allowed to push into the engine. Set once each.
    @param kind 1: scenarios, 2: profiles.
    @param registry The registry.
    """
    self._only_engine()
    ownable._check_owner()
    assert registry != empty(address), "engine: zero registry"
    if kind == SCENARIO_REGISTRY:
        assert engine_state.scenario_registry == empty(address), "engine: scenario registry already set"
        engine_state.scenario_registry = registry
    else:
        assert kind == PROFILE_REGISTRY, "engine: unknown registry kind"
        assert engine_state.profile_registry == empty(address), "engine: profile registry already set"
        engine_state.profile_registry = registry
    log IMarginEngine.PushRegistrySet(kind=kind, registry=registry)


@external
def set_exchange(exchange: address, allowed: bool):
    """
    @notice Authorises or revokes an exchange (may call `settle_trade`).
    @param exchange The exchange contract.
    @param allowed True to authorise.
    """
    self._only_engine()
    ownable._check_owner()
    assert exchange != empty(address), "engine: zero exchange"
    engine_state.is_exchange[exchange] = allowed
    log IMarginEngine.ExchangeSet(exchange=exchange, allowed=allowed)


@external
def pause():
    """
    @notice Stops risk-growing trades (deposits, exits and liquidations go on).
    """
    self._only_engine()
    ownable._check_owner()
    engine_state.paused = True
    log IMarginEngine.PauseSet(paused=True)


@external
def unpause():
    """
    @notice Lifts the pause.
    """
    self._only_engine()
    ownable._check_owner()
    engine_state.paused = False
    log IMarginEngine.PauseSet(paused=False)


# Pushes from the registries


@external
def sync_market_config(
    market_id: uint256,
    tiers: DynArray[IRiskParameterRegistry.Tier, 8],
    initial_ratio: uint256,
    guardrails: IRiskParameterRegistry.Guardrails,
):
    """
    @notice The registry pushes a market's new tiers, initial ratio and
            guardrails (logged there as `MarketConfigured`).
    @dev Registry only. Funding is accrued first: the heartbeat sets when a
         rate starts to decay.
    @param market_id The market.
    @param tiers The tier schedule.
    @param initial_ratio Initial margin as a multiple of maintenance.
    @param guardrails The guardrails.
    """
    self._only_engine()
    assert msg.sender == REGISTRY, "engine: caller is not the registry"
    if engine_state.oracle[market_id] & LISTED_BIT != 0:
        engine_core._accrue(market_id)
    self._copy_config(market_id, tiers, initial_ratio, guardrails)


@external
def sync_scenario_group(group_id: uint256, markets: DynArray[uint256, 8], removed: DynArray[uint256, 8], params: uint256):
    """
    @notice The scenario registry pushes a group's markets and parameters
            (residual, floor, initial ratio); the group has no scenarios in
            force until its first update.
    @dev Scenario registry only; logged there.
    @param group_id 1 to 255.
    @param markets The group's markets.
    @param removed Markets that left the group.
    @param params residual 64 << 45 | floor 64 << 109 | initial ratio 64 << 173.
    """
    self._only_engine()
    assert msg.sender == engine_state.scenario_registry, "engine: caller is not the scenario registry"
    for market_id: uint256 in removed:
        if (engine_state.oracle[market_id] >> 197) & 255 == group_id:
            engine_state.oracle[market_id] &= ~(255 << 197)
        engine_state.shocks[market_id] = 0
    for market_id: uint256 in markets:
        engine_state.oracle[market_id] = (engine_state.oracle[market_id] & ~(255 << 197)) | (group_id << 197)
        engine_state.shocks[market_id] = 0
    engine_state.group[group_id] = params


@external
def sync_scenarios(group_id: uint256, count: uint256, fresh_until: uint256, markets: DynArray[uint256, 8], shocks: DynArray[uint256, 8]):
    """
    @notice The scenario registry pushes an accepted scenario update: each
            market's packed shocks, the scenario count and when they go stale.
    @dev Scenario registry only; logged there.
    @param group_id The group.
    @param count Scenarios in force (1 to 16).
    @param fresh_until Time after which the group gives no portfolio credit.
    @param markets The group's markets.
    @param shocks One word of 16 int16 basis-point shocks per market.
    """
    self._only_engine()
    assert msg.sender == engine_state.scenario_registry, "engine: caller is not the scenario registry"
    for i: uint256 in range(8):
        if i >= len(markets):
            break
        engine_state.shocks[markets[i]] = shocks[i]
    gw: uint256 = engine_state.group[group_id]
    engine_state.group[group_id] = (gw & ~(2**45 - 1)) | count | (fresh_until << 5)


@external
def sync_class(class_id: uint256, multiplier: uint256):
    """
    @notice The profile registry pushes a risk class's maintenance multiplier.
    @dev Profile registry only; logged there.
    @param class_id 1 to 7.
    @param multiplier WAD (0 retires the class: its accounts fall back to 1x).
    """
    self._only_engine()
    assert msg.sender == engine_state.profile_registry, "engine: caller is not the profile registry"
    engine_state.class_multiplier[class_id] = multiplier


@external
def sync_profile(owner: address, subaccount: uint256, class_id: uint256, expires_at: uint256):
    """
    @notice The profile registry pushes an account's risk class and when it
            expires back to the default class.
    @dev Profile registry only; logged there.
    @param owner The account's owner.
    @param subaccount Its subaccount.
    @param class_id 0 to 7.
    @param expires_at Time after which the default class applies.
    """
    self._only_engine()
    assert msg.sender == engine_state.profile_registry, "engine: caller is not the profile registry"
    word: uint256 = engine_state.account[owner][subaccount]
    engine_state.account[owner][subaccount] = (word & MASK_192) | (class_id << 192) | (expires_at << 195)



# Internal


@view
@internal
def _only_engine():
    """
    @dev Every function runs only by delegatecall from the engine (in its storage).
    """
    assert self != SELF, "engine: call through the engine"


@internal
def _copy_config(
    market_id: uint256,
    tiers: DynArray[IRiskParameterRegistry.Tier, 8],
    initial_ratio: uint256,
    g: IRiskParameterRegistry.Guardrails,
):
    """
    @dev The engine's copy of a market's tiers and guardrails (packing in
         `engine_state`).
    """
    n: uint256 = len(tiers)
    for i: uint256 in range(8):
        if i >= n:
            break
        next_floor: uint256 = MASK_128
        if i + 1 < n:
            next_floor = tiers[i + 1].notional_floor
        word: uint256 = next_floor | (tiers[i].maintenance_rate << 128)
        if i == 0:
            word |= g.increase_ramp << 192
        engine_state.tiers[market_id][i] = word
    engine_state.rules[market_id] = (
        g.stale_multiplier | (g.max_decrease << 64) | (g.min_decrease_interval << 128) | (g.min_multiplier << 160)
    )
    engine_state.initial_ratio[market_id] = initial_ratio
    rw: uint256 = engine_state.risk[market_id]
    engine_state.risk[market_id] = (rw & (2**216 - 1)) | (g.heartbeat << 216)


@view
@internal
def _check_config(market_id: uint256, config: IMarginEngine.MarketConfig, oracle: uint256) -> uint256:
    """
    @dev Validates a market configuration; returns the oracle word, keeping
         the scenario group and funding reserve bits of `oracle`.
    """
    assert config.feed != empty(address), "engine: zero feed"
    assert config.max_price_age != 0 and config.max_price_age <= MAX_PRICE_AGE, "engine: bad max price age"
    assert config.price_band <= MAX_PRICE_BAND, "engine: bad price band"
    assert config.liquidation_fee <= MAX_LIQUIDATION_FEE, "engine: bad liquidation fee"
    # A penalty at or above the lowest maintenance rate would push every
    # liquidated account into bad debt; it is also capped at the rate in
    # force at each liquidation (tiers can be lowered later).
    assert config.liquidation_fee < staticcall IRiskParameterRegistry(REGISTRY).min_maintenance_rate(market_id), "engine: liquidation fee not below maintenance"
    assert config.liquidator_share <= WAD, "engine: bad liquidator share"
    decimals: uint8 = staticcall IERC20Detailed(config.feed).decimals()
    assert decimals <= 18, "engine: feed decimals"
    return (
        convert(config.feed, uint256)
        | (config.max_price_age << 160)
        | (convert(18 - decimals, uint256) << 192)
        | (oracle & (((1 << 40) - 1) << 197))
        | LISTED_BIT
    )
