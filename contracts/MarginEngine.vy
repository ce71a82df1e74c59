# pragma version ~=0.4.3
"""
@title Dynamic Margin engine
@custom:contract-name MarginEngine
@license GNU Affero General Public License v3.0 only
@notice Zero-sum perpetual positions in subaccounts `(owner, subaccount)`,
        margined in one collateral token against the tiered maintenance
        schedule of the `RiskParameterRegistry`, with portfolio credit from
        keeper-signed joint stress scenarios (`ScenarioRegistry`), account
        risk classes (`ProfileRegistry`) and the expected funding of the
        paying side. The account maths is in `modules/engine_core.vy`; the
        other paths run by delegatecall in this contract's storage:
        `EngineTrades` (trades, withdrawals), `EngineLiquidations`
        (liquidation, backstop, deleveraging) and `EngineGovernance`
        (configuration and the registries' pushes); together they are larger
        than one contract may be (EIP-170).

        Units: USD amounts, prices and sizes are WAD. Token amounts are
        converted at the edge (`amount * 10**(18 - decimals)`, exact, so a
        deposit credits and a withdrawal debits the same WAD value).

        The registries push every accepted change into the engine (its own
        copy of each market's tiers, guardrails and last update, and of the
        scenarios and classes), so a health check reads a few slots of this
        contract per position and one price feed.

        Trades: a side whose position grows (or flips) needs fresh prices,
        no pause and equity >= initial margin afterwards; a reducing side
        needs equity >= maintenance afterwards, or, when it stays below,
        non-negative equity and an equity / maintenance ratio no lower than
        before (an unhealthy account can always cut risk step by step).
        Each fill between two owners adds to the market's premium
        accumulators (notional and notional x (fill - mark) / mark) and to
        both owners' trailing 30-day volume; a fill between one owner's
        subaccounts adds to neither.

        Funding: the index grows by the integral of the registry's rate in
        force (which decays to zero once the market is stale) times the last
        good price; positive rate: longs pay shorts. Unpaid funding counts
        in equity and settles into collateral when the position is touched.

        Oracle policy. A feed's answer is fresh when the call succeeds, the
        answer is positive, its time is not in the future and not older than
        the market's max age. Opening, growing and withdrawing need fresh
        prices inside the feed's bounds in every market of the account.
        Everything else uses the mark price: the fresh answer, otherwise the
        fresher (by feed time) of the feed's stale answer and the last good
        price stored at the market's last touch; so closing, liquidation and
        backstop never wait on a dead feed.

        Pause (owner): every risk-growing trade side reverts; deposits,
        withdrawals, reducing trades, liquidations, backstops, deleveraging,
        insurance funding and `poke` keep working.
@custom:kill The owner calls `pause`: no new risk; deposits, exits,
        liquidations, backstops and deleveraging keep working. Ownership
        moves in two steps and cannot be renounced.
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from interfaces import IMarginEngine
from interfaces import IEngineParts
from interfaces import IEngineSync
from interfaces import IRiskParameterRegistry
from modules import engine_state
from modules import engine_core
from modules import fixed_point

implements: IMarginEngine
implements: IEngineSync

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: engine_state
initializes: engine_core[engine_state := engine_state]

# `renounce_ownership` is deliberately not exported: an engine without an
# owner could never list a market, unpause or unwind the insurance fund.
exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
    engine_state.market_config,
    engine_state.isolated_market,
    engine_state.is_exchange,
    engine_state.bad_debt,
    engine_state.paused,
    engine_state.backstop_reward,
    engine_state.scenario_registry,
    engine_state.profile_registry,
)


WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
MAX_POSITIONS: constant(uint256) = 8
MAX_BATCH: constant(uint256) = 100
INSURANCE_SUBACCOUNT: constant(uint256) = 0
LISTED_BIT: constant(uint256) = 1 << 255
MASK_24: constant(uint256) = 2**24 - 1
MASK_32: constant(uint256) = 2**32 - 1
MASK_40: constant(uint256) = 2**40 - 1
MASK_64: constant(uint256) = 2**64 - 1
MASK_96: constant(uint256) = 2**96 - 1
MASK_128: constant(uint256) = 2**128 - 1
MASK_192: constant(uint256) = 2**192 - 1
BIAS_127: constant(int256) = 2**127
PRICE_OK: constant(uint256) = 0


# @dev The collateral token.
COLLATERAL: public(immutable(address))
# @dev The risk-parameter registry.
REGISTRY: public(immutable(address))
# @dev 10**(18 - collateral decimals): token units to WAD.
TOKEN_SCALE: public(immutable(uint256))
# @dev The parts of the engine that run by delegatecall in its storage.
TRADES: public(immutable(address))
LIQUIDATIONS: public(immutable(address))
GOVERNANCE: public(immutable(address))


@deploy
def __init__(collateral: address, registry: address, trades: address, liquidations: address, governance: address):
    """
    @dev The deployer becomes the owner.
    @param collateral The collateral token (at most 18 decimals).
    @param registry The `RiskParameterRegistry`.
    @param trades `EngineTrades`, deployed for `collateral`.
    @param liquidations `EngineLiquidations`.
    @param governance `EngineGovernance`, deployed for `registry`.
    """
    ownable.__init__()
    ownable_2step.__init__()
    assert collateral != empty(address), "engine: zero collateral"
    assert registry != empty(address), "engine: zero registry"
    decimals: uint8 = staticcall IERC20Detailed(collateral).decimals()
    assert decimals <= 18, "engine: collateral decimals"
    scale: uint256 = 10 ** convert(18 - decimals, uint256)
    assert staticcall IEngineParts(trades).COLLATERAL() == collateral, "engine: trades built for another collateral"
    assert staticcall IEngineParts(trades).TOKEN_SCALE() == scale, "engine: trades built for another collateral"
    assert staticcall IEngineParts(governance).REGISTRY() == registry, "engine: governance built for another registry"
    assert liquidations.is_contract, "engine: no liquidations contract"
    COLLATERAL = collateral
    REGISTRY = registry
    TOKEN_SCALE = scale
    TRADES = trades
    LIQUIDATIONS = liquidations
    GOVERNANCE = governance
    if False:
        # Never runs: the engine's parts log these in this contract's storage
        # context; naming them here puts them in the engine's ABI.
        log IMarginEngine.Trade(market_id=0, maker_owner=empty(address), maker_subaccount=0, taker_owner=empty(address), taker_subaccount=0, size=0, price=0)
        log IMarginEngine.Withdraw(owner=empty(address), subaccount=0, amount=0)
        log IMarginEngine.Liquidation(market_id=0, owner=empty(address), subaccount=0, liquidator=empty(address), liquidator_subaccount=0, size=0, price=0, penalty=0, liquidator_reward=0)
        log IMarginEngine.Backstop(owner=empty(address), subaccount=0, equity=0, covered=0, bad_debt=0)
        log IMarginEngine.BackstopReward(caller=empty(address), amount=0)
        log IMarginEngine.Deleveraged(market_id=0, owner=empty(address), subaccount=0, caller=empty(address), size=0, price=0, transfer=0, unrealised_pnl=0, equity=0, deficit_after=0)
        log IMarginEngine.MarketListed(market_id=0, config=empty(IMarginEngine.MarketConfig))
        log IMarginEngine.ExchangeSet(exchange=empty(address), allowed=False)
        log IMarginEngine.PauseSet(paused=False)
        log IMarginEngine.PriceBoundsSet(market_id=0, old_min_price=0, old_max_price=0, min_price=0, max_price=0)
        log IMarginEngine.FundingReserveSet(market_id=0, old_seconds=0, new_seconds=0)
        log IMarginEngine.BackstopRewardSet(old_amount=0, new_amount=0)
        log IMarginEngine.PushRegistrySet(kind=0, registry=empty(address))


# Collateral


@external
@nonreentrant
def deposit(subaccount: uint256, amount: uint256):
    """
    @notice Deposits `amount` collateral tokens into the caller's subaccount.
            Works while paused: an account must always be able to add margin.
    @param subaccount The caller's subaccount id.
    @param amount Token units.
    """
    assert amount != 0, "engine: zero amount"
    # Pull first, credit after: no view ever sees collateral that has not arrived.
    assert extcall IERC20(COLLATERAL).transferFrom(msg.sender, self, amount, default_return_value=True), "engine: transfer failed"
    engine_state.collateral[msg.sender][subaccount] += convert(amount * TOKEN_SCALE, int256)
    log IMarginEngine.Deposit(owner=msg.sender, subaccount=subaccount, amount=amount)


@external
@nonreentrant
def withdraw(subaccount: uint256, amount: uint256):
    """
    @notice Withdraws `amount` collateral tokens from the caller's subaccount
            (`EngineTrades.withdraw`): settled cash must stay >= 0 and, with
            positions open, equity >= initial margin at fresh prices.
    @param subaccount The caller's subaccount id.
    @param amount Token units.
    """
    self._forward(TRADES)


@external
@nonreentrant
def fund_insurance(amount: uint256):
    """
    @notice Adds `amount` collateral tokens to the insurance fund (anyone).
    @param amount Token units.
    """
    assert amount != 0, "engine: zero amount"
    # Pull first, credit after.
    assert extcall IERC20(COLLATERAL).transferFrom(msg.sender, self, amount, default_return_value=True), "engine: transfer failed"
    engine_state.collateral[self][INSURANCE_SUBACCOUNT] += convert(amount * TOKEN_SCALE, int256)
    log IMarginEngine.InsuranceFunded(funder=msg.sender, amount=amount)
    self._repay_bad_debt()


@external
@nonreentrant
def repay_bad_debt() -> uint256:
    """
    @notice Repays recorded bad debt from the insurance fund's positive
            equity (liquidation fees it earned, top-ups), as far as that
            equity goes. Anyone may call; `fund_insurance` does it too.
            What the fund cannot repay is left to deleveraging.
    @return Bad debt repaid (USD, WAD).
    """
    return self._repay_bad_debt()


@external
@nonreentrant
def set_isolated(subaccount: uint256, market_id: uint256):
    """
    @notice Restricts the caller's subaccount to one market (0: back to
            cross margin). Only while the subaccount has no positions.
    @param subaccount The caller's subaccount id.
    @param market_id A listed market, or 0.
    """
    assert engine_state.account[msg.sender][subaccount] & MASK_192 == 0, "engine: open positions"
    assert market_id == 0 or engine_state.oracle[market_id] & LISTED_BIT != 0, "engine: unknown market"
    engine_state.isolated_market[msg.sender][subaccount] = market_id
    log IMarginEngine.IsolationSet(owner=msg.sender, subaccount=subaccount, market_id=market_id)


# Trading


@external
@nonreentrant
def settle_trade(
    market_id: uint256,
    maker_owner: address,
    maker_sub: uint256,
    taker_owner: address,
    taker_sub: uint256,
    size: int256,
    price: uint256,
):
    """
    @notice Settles a matched trade: `size` moves from maker to taker (the
            taker buys when size > 0) at `price`, within the market's band
            around the mark price (`EngineTrades.settle_trade`: the margin
            rules of each side).
    @param market_id A listed market.
    @param maker_owner Maker's owner.
    @param maker_sub Maker's subaccount.
    @param taker_owner Taker's owner.
    @param taker_sub Taker's subaccount.
    @param size Signed base units (WAD); positive: the taker buys.
    @param price USD per base unit (WAD).
    """
    self._forward(TRADES)


@external
@nonreentrant
def poke(market_id: uint256):
    """
    @notice Accrues a market's funding and stores its mark price as the last
            good price. Anyone; no reward (the actors who need fresh marks,
            keepers, bots and integrators, poke as part of their work, and a
            reward would be farmed every block).
    @param market_id A listed market.
    """
    assert engine_state.oracle[market_id] & LISTED_BIT != 0, "engine: unknown market"
    engine_core._accrue(market_id)


@external
def sync_market_state(market_id: uint256, target: uint256, ramp_from: uint256, funding_rate: int256, updated_at: uint256):
    """
    @notice The registry pushes an accepted update (logged there as
            `RiskUpdated`). Funding is accrued under the previous update
            first when the rate changes or the market was stale.
    @dev Registry only.
    @param market_id The market.
    @param target The new target multiplier.
    @param ramp_from Where an increase ramp starts.
    @param funding_rate The new funding rate, per second.
    @param updated_at When the update landed.
    """
    assert msg.sender == REGISTRY, "engine: caller is not the registry"
    rw: uint256 = engine_state.risk[market_id]
    heartbeat: uint256 = rw >> 216
    last: uint256 = (rw >> 128) & MASK_40
    if last == 0 or block.timestamp - last > heartbeat or engine_core._rate_of(rw) != funding_rate:
        # A listed market's funding word is never zero (its clock starts at listing).
        fw: uint256 = engine_state.funding[market_id]
        if fw != 0:
            engine_state.funding[market_id] = engine_core._pack_funding(
                engine_core._index_now(fw, rw), block.timestamp, (fw >> 128) & MASK_96, fw >> 224
            )
    engine_state.risk[market_id] = engine_core._pack_risk(target, ramp_from, updated_at, funding_rate, heartbeat)


# Forwarded to the parts (delegatecall, this contract's storage)


@external
@nonreentrant
def liquidate(owner: address, subaccount: uint256, market_id: uint256, size: uint256, liquidator_subaccount: uint256) -> uint256:
    """
    @notice Takes over up to `size` of a liquidatable account's position into
            the caller's subaccount at the mark price, as far as the
            partial-liquidation rule allows (`EngineLiquidations.liquidate`).
    @param owner Owner of the liquidatable subaccount.
    @param subaccount Its subaccount id.
    @param market_id The market of the position to close.
    @param size Most base units (WAD) to take over.
    @param liquidator_subaccount The caller's subaccount receiving the position.
    @return Base units taken over.
    """
    return convert(self._forward(LIQUIDATIONS), uint256)


@external
@nonreentrant
def backstop(owner: address, subaccount: uint256):
    """
    @notice Moves a negative account's positions to the insurance fund
            (`EngineLiquidations.backstop`).
    @param owner Owner of the subaccount.
    @param subaccount Its subaccount id.
    """
    self._forward(LIQUIDATIONS)


@external
@nonreentrant
def deleverage(owner: address, subaccount: uint256, market_id: uint256, size: uint256) -> uint256:
    """
    @notice Auto-deleveraging against the insurance fund's position while
            there is a deficit (`EngineLiquidations.deleverage`).
    @param owner Owner of the account to deleverage.
    @param subaccount Its subaccount.
    @param market_id The market.
    @param size Most base units (WAD) to close.
    @return Base units closed.
    """
    return convert(self._forward(LIQUIDATIONS), uint256)


@external
def add_market(market_id: uint256, config: IMarginEngine.MarketConfig):
    """
    @notice Lists a market configured in the registry (`EngineGovernance.add_market`).
    @param market_id Registry market id, 1 <= id < 2**24.
    @param config The market's configuration.
    """
    self._forward(GOVERNANCE)


@external
def update_market(market_id: uint256, config: IMarginEngine.MarketConfig):
    """
    @notice Replaces a listed market's configuration (`EngineGovernance.update_market`).
    @param market_id A listed market.
    @param config The new configuration.
    """
    self._forward(GOVERNANCE)


@external
def set_price_bounds(market_id: uint256, min_answer: int256, max_answer: int256):
    """
    @notice Copies a feed aggregator's min/max answer (`EngineGovernance.set_price_bounds`).
    @param market_id A listed market.
    @param min_answer The aggregator's minAnswer, in the feed's decimals.
    @param max_answer The aggregator's maxAnswer, in the feed's decimals.
    """
    self._forward(GOVERNANCE)


@external
def set_funding_reserve(market_id: uint256, reserve_seconds: uint256):
    """
    @notice Seconds of expected funding the paying side carries in
            maintenance (`EngineGovernance.set_funding_reserve`).
    @param market_id A listed market.
    @param reserve_seconds At most one day.
    """
    self._forward(GOVERNANCE)


@external
def set_backstop_reward(amount: uint256):
    """
    @notice What a backstop pays its caller from the insurance fund
            (`EngineGovernance.set_backstop_reward`).
    @param amount USD WAD, at most 100 USD.
    """
    self._forward(GOVERNANCE)


@external
def set_push_registry(kind: uint256, registry: address):
    """
    @notice Names the scenario (1) or profile (2) registry
            (`EngineGovernance.set_push_registry`).
    @param kind 1: scenarios, 2: profiles.
    @param registry The registry.
    """
    self._forward(GOVERNANCE)


@external
def set_exchange(exchange: address, allowed: bool):
    """
    @notice Authorises or revokes an exchange (`EngineGovernance.set_exchange`).
    @param exchange The exchange contract.
    @param allowed True to authorise.
    """
    self._forward(GOVERNANCE)


@external
def pause():
    """
    @notice Stops risk-growing trades (`EngineGovernance.pause`).
    """
    self._forward(GOVERNANCE)


@external
def unpause():
    """
    @notice Lifts the pause (`EngineGovernance.unpause`).
    """
    self._forward(GOVERNANCE)


@external
def sync_market_config(
    market_id: uint256,
    tiers: DynArray[IRiskParameterRegistry.Tier, 8],
    initial_ratio: uint256,
    guardrails: IRiskParameterRegistry.Guardrails,
):
    """
    @notice The registry pushes a market's configuration (`EngineGovernance.sync_market_config`).
    @param market_id The market.
    @param tiers The tier schedule.
    @param initial_ratio Initial margin as a multiple of maintenance.
    @param guardrails The guardrails.
    """
    self._forward(GOVERNANCE)


@external
def sync_scenario_group(group_id: uint256, markets: DynArray[uint256, 8], removed: DynArray[uint256, 8], params: uint256):
    """
    @notice The scenario registry pushes a group (`EngineGovernance.sync_scenario_group`).
    @param group_id 1 to 255.
    @param markets The group's markets.
    @param removed Markets that left the group.
    @param params Packed residual, floor and initial ratio.
    """
    self._forward(GOVERNANCE)


@external
def sync_scenarios(group_id: uint256, count: uint256, fresh_until: uint256, markets: DynArray[uint256, 8], shocks: DynArray[uint256, 8]):
    """
    @notice The scenario registry pushes scenarios (`EngineGovernance.sync_scenarios`).
    @param group_id The group.
    @param count Scenarios in force.
    @param fresh_until Time after which the group gives no portfolio credit.
    @param markets The group's markets.
    @param shocks One word of 16 int16 basis-point shocks per market.
    """
    self._forward(GOVERNANCE)


@external
def sync_class(class_id: uint256, multiplier: uint256):
    """
    @notice The profile registry pushes a class (`EngineGovernance.sync_class`).
    @param class_id 1 to 7.
    @param multiplier WAD.
    """
    self._forward(GOVERNANCE)


@external
def sync_profile(owner: address, subaccount: uint256, class_id: uint256, expires_at: uint256):
    """
    @notice The profile registry pushes an account's class (`EngineGovernance.sync_profile`).
    @param owner The account's owner.
    @param subaccount Its subaccount.
    @param class_id 0 to 7.
    @param expires_at When the default class applies again.
    """
    self._forward(GOVERNANCE)


# Views


@view
@external
def account_health(owner: address, subaccount: uint256) -> (int256, uint256, uint256):
    """
    @notice Equity (collateral + unrealised PnL - unpaid funding, rounded
            down) and the maintenance and initial margins (rounded up) at
            mark prices.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return equity, maintenance, initial (USD WAD).
    """
    acct: engine_core.Account = engine_core._load(owner, subaccount, False, True)
    return acct.equity, acct.maintenance, acct.initial


@view
@external
def is_liquidatable(owner: address, subaccount: uint256) -> bool:
    """
    @notice True when equity < maintenance (strictly), at mark prices.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return Whether `liquidate` (or, below zero equity, `backstop`) would accept the account.
    """
    if owner == self:
        return False
    acct: engine_core.Account = engine_core._load(owner, subaccount, False, False)
    return acct.equity < convert(acct.maintenance, int256)


@view
@external
def account_details(owner: address, subaccount: uint256) -> IMarginEngine.AccountDetails:
    """
    @notice For integrators and dashboards: an account's equity, its
            requirements and what makes them up.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return Equity, maintenance, initial, the tiered maintenance before
            portfolio credit, the funding reserve inside maintenance, unpaid
            funding, the portfolio group in force (0: none), the risk class
            (id, multiplier, expiry) and the owner's trailing 30-day volume.
    """
    acct: engine_core.Account = engine_core._load(owner, subaccount, False, True)
    reserve: uint256 = 0
    for leg: engine_core.Leg in acct.legs:
        reserve += leg.reserve
    word: uint256 = engine_state.account[owner][subaccount]
    group: uint256 = 0
    if engine_core._fresh_group(acct.group) != 0:
        group = acct.group
    return IMarginEngine.AccountDetails(
        equity=acct.equity,
        maintenance=acct.maintenance,
        initial=acct.initial,
        tiered_maintenance=acct.tiered,
        funding_reserve=reserve,
        funding_owed=engine_state.collateral[owner][subaccount] - acct.cash,
        portfolio_group=group,
        class_id=(word >> 192) & 7,
        class_multiplier=engine_core._class_multiplier(word),
        class_expires_at=(word >> 195) & MASK_40,
        trailing_volume=engine_core._trailing_volume(engine_state.volume[owner]),
    )


@view
@external
def health_batch(owners: DynArray[address, MAX_BATCH], subaccounts: DynArray[uint256, MAX_BATCH]) -> DynArray[IMarginEngine.Health, MAX_BATCH]:
    """
    @notice Health of many subaccounts in one call, for liquidation bots.
    @param owners Owners, one per subaccount.
    @param subaccounts Subaccount ids, same length.
    @return One (equity, maintenance, initial, liquidatable) per subaccount.
    """
    assert len(owners) == len(subaccounts), "engine: length mismatch"
    out: DynArray[IMarginEngine.Health, MAX_BATCH] = []
    for i: uint256 in range(len(owners), bound=MAX_BATCH):
        acct: engine_core.Account = engine_core._load(owners[i], subaccounts[i], False, True)
        out.append(
            IMarginEngine.Health(
                equity=acct.equity,
                maintenance=acct.maintenance,
                initial=acct.initial,
                liquidatable=owners[i] != self and acct.equity < convert(acct.maintenance, int256),
            )
        )
    return out


@view
@external
def users_to_liquidate(start: uint256, limit: uint256) -> DynArray[IMarginEngine.Subaccount, MAX_BATCH]:
    """
    @notice For the convenience of liquidation bots: the liquidatable
            subaccounts among entries [start, start + limit) of the list of
            subaccounts with open positions.
    @param start First index into `accounts_with_positions`.
    @param limit How many entries to scan (at most 100).
    @return The liquidatable ones.
    """
    out: DynArray[IMarginEngine.Subaccount, MAX_BATCH] = []
    count: uint256 = engine_state.active_count
    for i: uint256 in range(min(limit, MAX_BATCH), bound=MAX_BATCH):
        if start + i >= count:
            break
        entry: IMarginEngine.Subaccount = engine_state.active[start + i]
        acct: engine_core.Account = engine_core._load(entry.owner, entry.subaccount, False, False)
        if acct.equity < convert(acct.maintenance, int256):
            out.append(entry)
    return out


@view
@external
def accounts_with_positions(start: uint256, limit: uint256) -> DynArray[IMarginEngine.Subaccount, MAX_BATCH]:
    """
    @notice Entries [start, start + limit) of the subaccounts with open
            positions (unordered; swap-and-pop on removal).
    @param start First index.
    @param limit How many (at most 100).
    @return The subaccounts.
    """
    out: DynArray[IMarginEngine.Subaccount, MAX_BATCH] = []
    count: uint256 = engine_state.active_count
    for i: uint256 in range(min(limit, MAX_BATCH), bound=MAX_BATCH):
        if start + i >= count:
            break
        out.append(engine_state.active[start + i])
    return out


@view
@external
def accounts_with_positions_count() -> uint256:
    """
    @notice Number of subaccounts with open positions.
    @return The count.
    """
    return engine_state.active_count


@view
@external
def position(owner: address, subaccount: uint256, market_id: uint256) -> (int256, int256):
    """
    @notice A position: signed size (base units, WAD) and signed open
            notional (USD WAD; cost basis, negative for shorts).
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @param market_id The market.
    @return size, open_notional.
    """
    packed: uint256 = engine_state.positions[owner][subaccount][market_id]
    return engine_core._unpack_size(packed), engine_core._unpack_notional(packed)


@view
@external
def funding_snapshot(owner: address, subaccount: uint256, market_id: uint256) -> int256:
    """
    @notice The funding index at which a position's funding was last settled;
            its unpaid funding is ceil(size * (funding_index - snapshot) / WAD).
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @param market_id The market.
    @return The snapshot (USD per base unit, WAD).
    """
    return engine_state.funding_snapshot[owner][subaccount][market_id]


@view
@external
def collateral_of(owner: address, subaccount: uint256) -> int256:
    """
    @notice Settled collateral (USD WAD), excluding unrealised PnL and unpaid funding.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return The collateral.
    """
    return engine_state.collateral[owner][subaccount]


@view
@external
def markets_of(owner: address, subaccount: uint256) -> DynArray[uint256, 32]:
    """
    @notice Markets in which the subaccount holds a position (the insurance
            fund, `(engine, 0)`, may hold up to 32).
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return Market ids.
    """
    if owner == self and subaccount == INSURANCE_SUBACCOUNT:
        return engine_state.fund_markets
    out: DynArray[uint256, 32] = []
    word: uint256 = engine_state.account[owner][subaccount]
    for i: uint256 in range(MAX_POSITIONS):
        market_id: uint256 = engine_core._market_at(word, i)
        if market_id == 0:
            break
        out.append(market_id)
    return out


@view
@external
def insurance_fund() -> uint256:
    """
    @notice The insurance fund's equity (USD WAD): its collateral plus the
            marked PnL of the positions it took over, floored at zero (a
            negative fund counts in `deficit`).
    @return The fund.
    """
    fund: int256 = engine_core._fund_equity()
    if fund <= 0:
        return 0
    return convert(fund, uint256)


@view
@external
def deficit() -> uint256:
    """
    @notice What deleveraging has to recover: bad debt plus the insurance
            fund's negative equity (USD WAD).
    @return The deficit.
    """
    return engine_core._deficit()


@view
@external
def open_interest(market_id: uint256) -> uint256:
    """
    @notice Total long size of a market (base units, WAD); equals total short size.
    @param market_id The market.
    @return The open interest.
    """
    return engine_state.open_interest[market_id]


@view
@external
def funding_index(market_id: uint256) -> int256:
    """
    @notice A market's cumulative funding index as of now (USD per base unit, WAD).
    @param market_id The market.
    @return The index.
    """
    return engine_core._index_now(engine_state.funding[market_id], engine_state.risk[market_id])


@view
@external
def mark_price(market_id: uint256) -> (uint256, bool):
    """
    @notice The price the engine uses now and whether it is fresh.
    @param market_id A listed market.
    @return price (USD per base unit, WAD), fresh.
    """
    oracle: uint256 = engine_state.oracle[market_id]
    assert oracle & LISTED_BIT != 0, "engine: unknown market"
    price: uint256 = 0
    time: uint256 = 0
    status: uint256 = PRICE_OK
    price, time, status = engine_core._mark_price(oracle, engine_state.funding[market_id])
    return price, status == PRICE_OK


@view
@external
def price_bounds(market_id: uint256) -> (uint256, uint256):
    """
    @notice The feed bounds a price must lie strictly inside to open, grow or withdraw.
    @param market_id The market.
    @return min_price, max_price (WAD; both 0 when none are set).
    """
    bounds: uint256 = engine_state.price_bounds[market_id]
    return bounds & MASK_128, bounds >> 128


@view
@external
def funding_reserve_seconds(market_id: uint256) -> uint256:
    """
    @notice Seconds of expected funding the paying side carries in maintenance.
    @param market_id The market.
    @return Seconds.
    """
    return (engine_state.oracle[market_id] >> 205) & MASK_32


@view
@external
def trailing_volume(owner: address) -> uint256:
    """
    @notice The owner's traded notional over the trailing 30 days (USD WAD),
            from two rolling buckets (the previous one weighted by the part
            of the window it still covers).
    @param owner The owner.
    @return Volume.
    """
    return engine_core._trailing_volume(engine_state.volume[owner])


@view
@external
def premium_accumulator(market_id: uint256) -> (int256, uint256):
    """
    @notice A market's fill premium accumulators: cumulative notional x
            (fill - mark) / mark and cumulative notional (USD WAD). Between
            two readings, weighted difference / notional difference is the
            notional-weighted average premium of the fills in between.
    @param market_id The market.
    @return weighted, notional.
    """
    word: uint256 = engine_state.premium[market_id]
    return engine_core._signed_128(word), word >> 128


@view
@external
def scenario_group(group_id: uint256) -> (uint256, uint256, uint256, uint256, uint256):
    """
    @notice A scenario group as the engine holds it.
    @param group_id The group.
    @return count, fresh_until, residual, floor, initial_ratio.
    """
    gw: uint256 = engine_state.group[group_id]
    return gw & 31, (gw >> 5) & MASK_40, (gw >> 45) & MASK_64, (gw >> 109) & MASK_64, (gw >> 173) & MASK_64


@view
@external
def market_scenarios(market_id: uint256) -> (uint256, uint256):
    """
    @notice A market's scenario group and its packed shocks.
    @param market_id The market.
    @return group id, shocks (16 x int16 basis points).
    """
    return (engine_state.oracle[market_id] >> 197) & 255, engine_state.shocks[market_id]


# Internal


@internal
def _forward(part: address) -> Bytes[32]:
    """
    @dev Runs this call's calldata in a part of the engine by delegatecall
         (this contract's storage, caller and value); reverts bubble up.
    """
    return raw_call(part, msg.data, max_outsize=32, is_delegate_call=True)


@internal
def _repay_bad_debt() -> uint256:
    """
    @dev Moves min(bad debt, the fund's equity if positive) from the fund's
         collateral to the bad debt: the fund's equity (marked positions
         included) never goes below zero for it.
    """
    debt: uint256 = engine_state.bad_debt
    if debt == 0:
        return 0
    fund: int256 = engine_core._fund_equity()
    if fund <= 0:
        return 0
    repaid: uint256 = min(debt, convert(fund, uint256))
    engine_state.bad_debt = debt - repaid
    engine_state.collateral[self][INSURANCE_SUBACCOUNT] -= convert(repaid, int256)
    log IMarginEngine.BadDebtRepaid(caller=msg.sender, amount=repaid, bad_debt_after=debt - repaid)
    return repaid
