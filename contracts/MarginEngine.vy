# pragma version ~=0.4.3
"""
@title Dynamic Margin engine
@custom:contract-name MarginEngine
@license GNU Affero General Public License v3.0 only
@notice Zero-sum perpetual positions in subaccounts `(owner, subaccount)`,
        margined in one collateral token against the tiered maintenance
        schedule of the `RiskParameterRegistry`.

        Units: USD amounts, prices and sizes are WAD. Token amounts are
        converted at the edge (`amount * 10**(18 - decimals)`, exact, so a
        deposit credits and a withdrawal debits the same WAD value).

        Account maths (every rounding goes against the account):
            value_i   = floor(size_i * price_i / WAD)
            owed_i    = ceil(size_i * (index_i - snapshot_i) / WAD)  (funding)
            equity    = collateral + sum_i (value_i - open_notional_i - owed_i)
            notional_i = ceil(|size_i| * price_i / WAD)
            (maintenance, initial) = sum_i registry.margin_requirements(m_i, notional_i)
        A trade of `s` at `p` costs the buyer ceil(s * p / WAD) and pays the
        seller floor(s * p / WAD), so `collateral - open_notional` (the
        account's cash) moves by exactly that; realised profit lands in
        `collateral`. Liquidatable iff equity < maintenance (strictly).

        Funding: `index` (USD per base unit, WAD) grows by
        `rate * price * dt / WAD`, with the registry's `funding_rate` and the
        engine's last good price both read at the market's previous touch
        (any trade, liquidation, backstop or `poke`). Positive rate: longs
        pay shorts. Unpaid funding counts in equity and is settled into
        collateral when the position is touched.

        Partial-liquidation rule. With E = equity, M = maintenance of the
        account, M_k and N_k the maintenance and notional of the liquidated
        position, f = liquidation_fee, B = LIQUIDATION_BUFFER (10%):
          - if E < DEEP_UNDERWATER * M (50%), the whole position may go;
          - otherwise at most the fraction
                x = ((1 + B) * M - E) / ((1 + B) * M_k - f * N_k)
            (rounded up) of the position may go: the smallest fraction that,
            with margin linear in notional, brings equity after the penalty
            back to (1 + B) times maintenance (progressive tiers make the
            true requirement fall at least that fast, so this suffices);
            if the denominator is <= 0 or x >= 1, the whole position;
          - if what would remain is worth less than DUST_NOTIONAL (10 USD),
            the whole position.
        A call that would leave a remainder worth less than DUST_NOTIONAL
        reverts (close it all or leave enough to be worth liquidating).
        The liquidator takes the closed size at the mark price into its own
        subaccount, which must meet initial margin afterwards. The penalty
        min(ceil(f * closed notional), equity - 1) leaves the liquidated
        account (never more than it has left, so the insurance fund never
        pays a liquidator); floor(penalty * liquidator_share) goes to the
        liquidator, the rest to the insurance fund. `add_market` refuses a
        fee at or above the market's lowest maintenance rate.

        Backstop: when equity < 0 (BACKSTOP threshold), anyone may move every
        position of the account to the insurance fund's subaccount
        `(self, 0)` at the mark price. The insurance fund (that
        subaccount's collateral) covers the negative equity; what it cannot
        cover is recorded in `bad_debt` and the account's collateral is
        reset to zero. The insurance fund's positions carry no margin
        check; the owner unwinds them through an authorised exchange, and
        `settle_trade` lets the engine's subaccounts only reduce them
        ("engine: insurance fund may only reduce"). `insurance_fund()` is
        the fund's collateral: the PnL of positions it still holds is
        realised as they are unwound.

        Oracle policy. A feed's answer is *fresh* when the call succeeds,
        answer > 0, updatedAt <= now and now - updatedAt <= max_price_age.
        Opening or growing a position (any side of a trade whose size grows
        or flips), and withdrawing while holding positions, need fresh
        prices in every market of the account ("engine: stale price",
        "engine: invalid price"). Everything else (closing and reducing
        trades, the health checks of reducing sides, liquidations,
        backstops, views) uses the *mark price*: the fresh answer when
        there is one, otherwise the last fresh answer the engine stored at
        the market's last touch. Exchange trades must lie within
        `price_band` of the mark price. So closing, liquidation and
        backstop are never blocked by a dead, reverting, zero or stale
        feed; the cost is that while a feed is down they run at the last
        good price (operators should `poke` markets regularly and replace
        a dead feed). Chainlink's min/max answer bounds live on the
        underlying aggregator, not on the proxy's AggregatorV3Interface,
        so the owner copies them in with `set_price_bounds`: a price at or
        beyond a bound (where Chainlink clamps a crashing market) blocks
        opening, growing and withdrawing like a stale one.

        Pause (owner): every risk-growing trade side reverts; deposits,
        withdrawals, reducing trades, liquidations, backstops, insurance
        funding and `poke` keep working (an account can always add margin
        or cut risk, so a pause never leaves it only liquidatable).

        Storage packing: a position is one slot (size, open notional as
        biased 128-bit halves), an account's market list is one slot (up to
        MAX_POSITIONS 32-bit market ids, hence market ids < 2**32), a
        market's funding state is two slots and its oracle one slot.
@custom:kill The owner calls `pause`: no new risk; deposits, exits,
        liquidations and backstops keep working. Ownership moves in two
        steps and cannot be renounced.
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from interfaces import IMarginEngine
from interfaces import IRiskParameterRegistry

implements: IMarginEngine

initializes: ownable
initializes: ownable_2step[ownable := ownable]

# `renounce_ownership` is deliberately not exported: an engine without an
# owner could never list a market, unpause or unwind the insurance fund.
exports: (
    ownable_2step.owner,
    ownable_2step.pending_owner,
    ownable_2step.transfer_ownership,
    ownable_2step.accept_ownership,
)


# Constants

WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
# Markets per subaccount; bounds every loop over an account.
MAX_POSITIONS: constant(uint256) = 8
MAX_MARKET_ID: constant(uint256) = 2**32 - 1
MAX_BATCH: constant(uint256) = 100
# Partial liquidation: target (1 + 10%) x maintenance after the penalty.
LIQUIDATION_BUFFER: constant(uint256) = 10**17
# Below 50% of maintenance the whole position may be liquidated.
DEEP_UNDERWATER: constant(uint256) = 5 * 10**17
# A remainder worth less than 10 USD is closed with the rest.
DUST_NOTIONAL: constant(uint256) = 10 * 10**18
# Bounds on market configuration.
MAX_PRICE_BAND: constant(uint256) = 2 * 10**17
MAX_LIQUIDATION_FEE: constant(uint256) = 2 * 10**17
MAX_PRICE_AGE: constant(uint256) = 2**40 - 1
# The insurance fund is the engine's own subaccount 0.
INSURANCE_SUBACCOUNT: constant(uint256) = 0

BIAS_128: constant(int256) = 2**127
MASK_32: constant(uint256) = 2**32 - 1
MASK_40: constant(uint256) = 2**40 - 1
MASK_64: constant(uint256) = 2**64 - 1
MASK_128: constant(uint256) = 2**128 - 1
MASK_160: constant(uint256) = 2**160 - 1
BIAS_64: constant(int256) = 2**63

# Feed read status.
PRICE_OK: constant(uint256) = 0
PRICE_INVALID: constant(uint256) = 1
PRICE_STALE: constant(uint256) = 2


# Immutables

# @dev The collateral token.
COLLATERAL: public(immutable(address))
# @dev The risk-parameter registry.
REGISTRY: public(immutable(address))
# @dev 10**(18 - collateral decimals): token units to WAD.
TOKEN_SCALE: public(immutable(uint256))


# Structs

# @dev An account's health as the engine computes it, with one focus market.
struct AccountState:
    equity: int256
    maintenance: uint256
    initial: uint256
    cash: int256
    focus_size: int256
    focus_price: uint256
    focus_notional: uint256
    focus_maintenance: uint256



# Storage

# @dev Market configuration as listed (spec struct).
market_config: public(HashMap[uint256, IMarginEngine.MarketConfig])
# @dev Hot oracle data: feed (160 bits) | max age (40 bits) << 160 | decimals scale exponent (8 bits) << 200 | listed bit << 255.
_oracle: HashMap[uint256, uint256]
# @dev Cumulative funding index per market (USD per base unit, WAD).
_funding_index: HashMap[uint256, int256]
# @dev Funding meta per market: rate + 2**63 (64 bits) | last touch (40 bits) << 64 | last good price (128 bits) << 104.
_funding_meta: HashMap[uint256, uint256]
# @dev Open interest per market: total long size (WAD base units).
_open_interest: HashMap[uint256, uint256]
# @dev Position per (owner, subaccount, market): (size + 2**127) << 128 | (open_notional + 2**127); 0 when flat.
_positions: HashMap[address, HashMap[uint256, HashMap[uint256, uint256]]]
# @dev Funding index at the position's last settlement.
_funding_snapshot: HashMap[address, HashMap[uint256, HashMap[uint256, int256]]]
# @dev Settled collateral (USD WAD) per subaccount; realised PnL, fees and funding land here.
_collateral: HashMap[address, HashMap[uint256, int256]]
# @dev Markets with an open position, 32 bits each, compact from the low bits.
_markets_of: HashMap[address, HashMap[uint256, uint256]]
# @dev The one market an isolated subaccount may trade (0: cross margin).
isolated_market: public(HashMap[address, HashMap[uint256, uint256]])
# @dev Authorised exchanges (may call `settle_trade`).
is_exchange: public(HashMap[address, bool])
# @dev Negative equity the insurance fund could not cover (USD WAD).
bad_debt: public(uint256)
# @dev Pause flag (owner).
paused: public(bool)
# @dev Subaccounts with open positions (not the insurance fund), for bots.
_active: HashMap[uint256, IMarginEngine.Subaccount]
# @dev Number of entries in `_active`.
_active_count: uint256
# @dev Position of a subaccount in `_active`, plus one (0: absent).
_active_index: HashMap[address, HashMap[uint256, uint256]]
# @dev The feed aggregator's answer bounds in WAD: min (128 bits) | max << 128; 0: none set.
_price_bounds: HashMap[uint256, uint256]


@deploy
def __init__(collateral: address, registry: address):
    """
    @dev The deployer becomes the owner.
    @param collateral The collateral token (at most 18 decimals).
    @param registry The `RiskParameterRegistry`.
    """
    ownable.__init__()
    ownable_2step.__init__()
    assert collateral != empty(address), "engine: zero collateral"
    assert registry != empty(address), "engine: zero registry"
    decimals: uint8 = staticcall IERC20Detailed(collateral).decimals()
    assert decimals <= 18, "engine: collateral decimals"
    COLLATERAL = collateral
    REGISTRY = registry
    TOKEN_SCALE = 10 ** convert(18 - decimals, uint256)


# Owner


@external
def add_market(market_id: uint256, config: IMarginEngine.MarketConfig):
    """
    @notice Lists a market. The registry must already configure it.
    @param market_id Registry market id, 1 <= id < 2**32.
    @param config Feed, max price age, price band, liquidation fee,
           liquidator share of the fee, one-side open-interest cap (USD).
    """
    ownable._check_owner()
    assert market_id != 0 and market_id <= MAX_MARKET_ID, "engine: bad market id"
    assert self._oracle[market_id] == 0, "engine: market listed"
    assert staticcall IRiskParameterRegistry(REGISTRY).is_configured(market_id), "engine: market not in registry"
    oracle: uint256 = self._check_config(market_id, config)
    self._oracle[market_id] = oracle
    self.market_config[market_id] = config
    # Start the funding clock, with the first fresh price if there is one.
    price: uint256 = 0
    status: uint256 = PRICE_OK
    price, status = self._read_feed(oracle)
    if status != PRICE_OK:
        price = 0
    self._write_meta(market_id, staticcall IRiskParameterRegistry(REGISTRY).funding_rate(market_id), price)
    log IMarginEngine.MarketListed(market_id=market_id, config=config)


@external
def update_market(market_id: uint256, config: IMarginEngine.MarketConfig):
    """
    @notice Replaces a listed market's configuration (e.g. a dead feed).
    @param market_id A listed market.
    @param config The new configuration.
    """
    ownable._check_owner()
    assert self._oracle[market_id] != 0, "engine: unknown market"
    self._accrue(market_id)
    self._oracle[market_id] = self._check_config(market_id, config)
    self.market_config[market_id] = config
    log IMarginEngine.MarketListed(market_id=market_id, config=config)


@external
def set_price_bounds(market_id: uint256, min_answer: int256, max_answer: int256):
    """
    @notice Copies a feed aggregator's `minAnswer` / `maxAnswer` into the
            engine. Chainlink clamps an answer that leaves its bounds, so a
            price at or beyond a bound is not a market price: it then counts
            as invalid for opening, growing and withdrawing ("engine: price at
            feed bound"); closing, liquidation and backstop go on. (0, 0)
            removes the bounds. Set them again after replacing a feed.
    @param market_id A listed market.
    @param min_answer The aggregator's minAnswer, in the feed's decimals.
    @param max_answer The aggregator's maxAnswer, in the feed's decimals.
    """
    ownable._check_owner()
    oracle: uint256 = self._oracle[market_id]
    assert oracle != 0, "engine: unknown market"
    packed: uint256 = 0
    if min_answer != 0 or max_answer != 0:
        assert min_answer >= 0 and min_answer < max_answer, "engine: bad price bounds"
        scale: uint256 = pow_mod256(10, (oracle >> 200) & 255)
        low: uint256 = convert(min_answer, uint256) * scale
        high: uint256 = convert(max_answer, uint256) * scale
        assert high <= MASK_128, "engine: bad price bounds"
        packed = low | (high << 128)
    old: uint256 = self._price_bounds[market_id]
    self._price_bounds[market_id] = packed
    log IMarginEngine.PriceBoundsSet(
        market_id=market_id,
        old_min_price=old & MASK_128,
        old_max_price=old >> 128,
        min_price=packed & MASK_128,
        max_price=packed >> 128,
    )


@view
@external
def price_bounds(market_id: uint256) -> (uint256, uint256):
    """
    @notice The feed bounds a price must lie strictly inside to open, grow or withdraw.
    @param market_id The market.
    @return min_price, max_price (WAD; both 0 when none are set).
    """
    bounds: uint256 = self._price_bounds[market_id]
    return bounds & MASK_128, bounds >> 128


@external
def set_exchange(exchange: address, allowed: bool):
    """
    @notice Authorises or revokes an exchange (may call `settle_trade`).
    @param exchange The exchange contract.
    @param allowed True to authorise.
    """
    ownable._check_owner()
    assert exchange != empty(address), "engine: zero exchange"
    self.is_exchange[exchange] = allowed
    log IMarginEngine.ExchangeSet(exchange=exchange, allowed=allowed)


@external
def pause():
    """
    @notice Stops risk-growing trades (deposits, exits and liquidations go on).
    """
    ownable._check_owner()
    self.paused = True
    log IMarginEngine.PauseSet(paused=True)


@external
def unpause():
    """
    @notice Lifts the pause.
    """
    ownable._check_owner()
    self.paused = False
    log IMarginEngine.PauseSet(paused=False)


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
    self._collateral[msg.sender][subaccount] += convert(amount * TOKEN_SCALE, int256)
    log IMarginEngine.Deposit(owner=msg.sender, subaccount=subaccount, amount=amount)


@external
@nonreentrant
def withdraw(subaccount: uint256, amount: uint256):
    """
    @notice Withdraws `amount` collateral tokens from the caller's subaccount.
            Settled cash (collateral minus unpaid funding) must stay >= 0 and,
            with positions open, equity must stay >= initial margin at fresh
            prices: unrealised profit is never withdrawable.
    @param subaccount The caller's subaccount id.
    @param amount Token units.
    """
    assert amount != 0, "engine: zero amount"
    self._collateral[msg.sender][subaccount] -= convert(amount * TOKEN_SCALE, int256)
    h: AccountState = self._health(msg.sender, subaccount, True, 0)
    assert h.cash >= 0, "engine: insufficient collateral"
    assert h.equity >= convert(h.initial, int256), "engine: initial margin"
    log IMarginEngine.Withdraw(owner=msg.sender, subaccount=subaccount, amount=amount)
    assert extcall IERC20(COLLATERAL).transfer(msg.sender, amount, default_return_value=True), "engine: transfer failed"


@external
@nonreentrant
def fund_insurance(amount: uint256):
    """
    @notice Adds `amount` collateral tokens to the insurance fund (anyone).
    @param amount Token units.
    """
    assert amount != 0, "engine: zero amount"
    self._collateral[self][INSURANCE_SUBACCOUNT] += convert(amount * TOKEN_SCALE, int256)
    log IMarginEngine.InsuranceFunded(funder=msg.sender, amount=amount)
    assert extcall IERC20(COLLATERAL).transferFrom(msg.sender, self, amount, default_return_value=True), "engine: transfer failed"


@external
@nonreentrant
def set_isolated(subaccount: uint256, market_id: uint256):
    """
    @notice Restricts the caller's subaccount to one market (0: back to
            cross margin). Only while the subaccount has no positions.
    @param subaccount The caller's subaccount id.
    @param market_id A listed market, or 0.
    """
    assert self._markets_of[msg.sender][subaccount] == 0, "engine: open positions"
    assert market_id == 0 or self._oracle[market_id] != 0, "engine: unknown market"
    self.isolated_market[msg.sender][subaccount] = market_id
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
            taker buys when size > 0) at `price`, which must lie within the
            market's band around the mark price. A side whose position grows
            (or flips) needs fresh prices, no pause, and equity >= initial
            margin afterwards; a reducing side needs equity >= maintenance.
    @param market_id A listed market.
    @param maker_owner Maker's owner.
    @param maker_sub Maker's subaccount.
    @param taker_owner Taker's owner.
    @param taker_sub Taker's subaccount.
    @param size Signed base units (WAD); positive: the taker buys.
    @param price USD per base unit (WAD).
    """
    assert self.is_exchange[msg.sender], "engine: not exchange"
    assert size != 0, "engine: zero size"
    assert not (maker_owner == taker_owner and maker_sub == taker_sub), "engine: self trade"
    oracle: uint256 = self._oracle[market_id]
    assert oracle != 0, "engine: unknown market"
    mark: uint256 = 0
    status: uint256 = PRICE_OK
    mark, status = self._mark_price(market_id, oracle)
    band: uint256 = self.market_config[market_id].price_band
    diff: uint256 = price - mark if price > mark else mark - price
    assert diff * WAD <= band * mark, "engine: price outside band"

    index: int256 = self._accrue(market_id)
    oi: uint256 = self._open_interest[market_id]
    t_old: int256 = 0
    t_new: int256 = 0
    m_old: int256 = 0
    m_new: int256 = 0
    t_old, t_new = self._apply(taker_owner, taker_sub, market_id, size, price, index)
    m_old, m_new = self._apply(maker_owner, maker_sub, market_id, -size, price, index)
    new_oi: uint256 = self._new_oi(oi, t_old, t_new)
    new_oi = self._new_oi(new_oi, m_old, m_new)
    if new_oi != oi:
        self._open_interest[market_id] = new_oi
    taker_grows: bool = self._grows(t_old, t_new)
    maker_grows: bool = self._grows(m_old, m_new)
    # The engine's subaccounts carry no margin check: only the insurance fund
    # may trade, and only to unwind positions it took over in backstops.
    if taker_owner == self:
        assert taker_sub == INSURANCE_SUBACCOUNT and not taker_grows, "engine: insurance fund may only reduce"
    if maker_owner == self:
        assert maker_sub == INSURANCE_SUBACCOUNT and not maker_grows, "engine: insurance fund may only reduce"
    if taker_grows or maker_grows:
        assert not self.paused, "engine: paused"
        self._assert_fresh(status)
        self._assert_inside_bounds(market_id, mark)
    if new_oi > oi:
        assert self._ceil_mul(new_oi, mark) <= self.market_config[market_id].oi_cap, "engine: open interest cap"
    self._check_side(taker_owner, taker_sub, taker_grows)
    self._check_side(maker_owner, maker_sub, maker_grows)
    log IMarginEngine.Trade(
        market_id=market_id,
        maker_owner=maker_owner,
        maker_subaccount=maker_sub,
        taker_owner=taker_owner,
        taker_subaccount=taker_sub,
        size=size,
        price=price,
    )


@external
@nonreentrant
def liquidate(
    owner: address, subaccount: uint256, market_id: uint256, size: uint256, liquidator_subaccount: uint256
) -> uint256:
    """
    @notice Takes over up to `size` of a liquidatable account's position in
            `market_id` into the caller's subaccount at the mark price (see
            the partial-liquidation rule in the contract docstring). The
            caller's subaccount must meet initial margin afterwards. Works
            while paused and with stale feeds (mark price).
    @param owner Owner of the liquidatable subaccount.
    @param subaccount Its subaccount id.
    @param market_id The market of the position to close.
    @param size Most base units (WAD) to take over.
    @param liquidator_subaccount The caller's subaccount receiving the position.
    @return Base units actually taken over.
    """
    assert size != 0, "engine: zero size"
    assert owner != self, "engine: insurance account"
    assert not (owner == msg.sender and subaccount == liquidator_subaccount), "engine: self liquidation"
    oracle: uint256 = self._oracle[market_id]
    assert oracle != 0, "engine: unknown market"
    h: AccountState = self._health(owner, subaccount, False, market_id)
    assert h.equity < convert(h.maintenance, int256), "engine: account healthy"
    assert h.focus_size != 0, "engine: no position"
    price: uint256 = h.focus_price
    abs_size: uint256 = convert(abs(h.focus_size), uint256)
    closable: uint256 = self._max_close(h, abs_size, price, self.market_config[market_id].liquidation_fee)
    closed: uint256 = min(size, closable)
    # A remainder nobody would bother to liquidate is refused: take all or leave enough.
    assert closed == abs_size or (abs_size - closed) * price // WAD >= DUST_NOTIONAL, "engine: remainder below dust"

    index: int256 = self._accrue(market_id)
    # The liquidator buys when the liquidated account is long.
    delta: int256 = convert(closed, int256)
    if h.focus_size < 0:
        delta = -delta
    oi: uint256 = self._open_interest[market_id]
    l_old: int256 = 0
    l_new: int256 = 0
    o_old: int256 = 0
    o_new: int256 = 0
    l_old, l_new = self._apply(msg.sender, liquidator_subaccount, market_id, delta, price, index)
    o_old, o_new = self._apply(owner, subaccount, market_id, -delta, price, index)
    new_oi: uint256 = self._new_oi(self._new_oi(oi, l_old, l_new), o_old, o_new)
    if new_oi != oi:
        self._open_interest[market_id] = new_oi

    # The penalty never exceeds what the account has left: closing at the mark
    # price lowers equity by at most 1 wei of rounding, hence `equity - 1`.
    # Otherwise the liquidator's reward would be paid by the insurance fund.
    penalty: uint256 = self._ceil_mul(self._ceil_mul(closed, price), self.market_config[market_id].liquidation_fee)
    if h.equity <= 1:
        penalty = 0
    else:
        penalty = min(penalty, convert(h.equity - 1, uint256))
    reward: uint256 = penalty * self.market_config[market_id].liquidator_share // WAD
    self._collateral[owner][subaccount] -= convert(penalty, int256)
    if reward != 0:
        self._collateral[msg.sender][liquidator_subaccount] += convert(reward, int256)
    if penalty != reward:
        self._collateral[self][INSURANCE_SUBACCOUNT] += convert(penalty - reward, int256)

    lh: AccountState = self._health(msg.sender, liquidator_subaccount, False, 0)
    assert lh.equity >= convert(lh.initial, int256), "engine: liquidator initial margin"
    log IMarginEngine.Liquidation(
        market_id=market_id,
        owner=owner,
        subaccount=subaccount,
        liquidator=msg.sender,
        liquidator_subaccount=liquidator_subaccount,
        size=-delta,
        price=price,
        penalty=penalty,
        liquidator_reward=reward,
    )
    return closed


@external
@nonreentrant
def backstop(owner: address, subaccount: uint256):
    """
    @notice When an account's equity is below zero, moves every position to
            the insurance fund's subaccount at the mark price; the insurance
            fund covers the negative equity and the rest becomes bad debt.
            Anyone may call; works while paused and with stale feeds.
    @param owner Owner of the subaccount.
    @param subaccount Its subaccount id.
    """
    assert owner != self, "engine: insurance account"
    h: AccountState = self._health(owner, subaccount, False, 0)
    assert h.equity < 0, "engine: above backstop threshold"
    markets: uint256 = self._markets_of[owner][subaccount]
    for i: uint256 in range(MAX_POSITIONS):
        market_id: uint256 = (markets >> (32 * i)) & MASK_32
        if market_id == 0:
            break
        index: int256 = self._accrue(market_id)
        price: uint256 = (self._funding_meta[market_id] >> 104) & MASK_128
        size: int256 = self._unpack_size(self._positions[owner][subaccount][market_id])
        oi: uint256 = self._open_interest[market_id]
        f_old: int256 = 0
        f_new: int256 = 0
        a_old: int256 = 0
        a_new: int256 = 0
        f_old, f_new = self._apply(self, INSURANCE_SUBACCOUNT, market_id, size, price, index)
        a_old, a_new = self._apply(owner, subaccount, market_id, -size, price, index)
        new_oi: uint256 = self._new_oi(self._new_oi(oi, f_old, f_new), a_old, a_new)
        if new_oi != oi:
            self._open_interest[market_id] = new_oi
    collateral: int256 = self._collateral[owner][subaccount]
    covered: uint256 = 0
    uncovered: uint256 = 0
    if collateral < 0:
        shortfall: uint256 = convert(-collateral, uint256)
        fund: int256 = self._collateral[self][INSURANCE_SUBACCOUNT]
        if fund > 0:
            covered = min(shortfall, convert(fund, uint256))
            self._collateral[self][INSURANCE_SUBACCOUNT] = fund - convert(covered, int256)
        uncovered = shortfall - covered
        self._collateral[owner][subaccount] = 0
        if uncovered != 0:
            self.bad_debt += uncovered
    log IMarginEngine.Backstop(owner=owner, subaccount=subaccount, equity=h.equity, covered=covered, bad_debt=uncovered)


@external
@nonreentrant
def poke(market_id: uint256):
    """
    @notice Accrues a market's funding, stores its mark price as the last good
            price and picks up the registry's current funding rate. Anyone.
    @param market_id A listed market.
    """
    assert self._oracle[market_id] != 0, "engine: unknown market"
    self._accrue(market_id)


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
    h: AccountState = self._health(owner, subaccount, False, 0)
    return h.equity, h.maintenance, h.initial


@view
@external
def is_liquidatable(owner: address, subaccount: uint256) -> bool:
    """
    @notice True when equity < maintenance (strictly), at mark prices.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return Whether `liquidate` would accept the account.
    """
    if owner == self:
        return False
    h: AccountState = self._health(owner, subaccount, False, 0)
    return h.equity < convert(h.maintenance, int256)


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
        h: AccountState = self._health(owners[i], subaccounts[i], False, 0)
        out.append(
            IMarginEngine.Health(
                equity=h.equity,
                maintenance=h.maintenance,
                initial=h.initial,
                liquidatable=owners[i] != self and h.equity < convert(h.maintenance, int256),
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
    count: uint256 = self._active_count
    for i: uint256 in range(min(limit, MAX_BATCH), bound=MAX_BATCH):
        if start + i >= count:
            break
        entry: IMarginEngine.Subaccount = self._active[start + i]
        h: AccountState = self._health(entry.owner, entry.subaccount, False, 0)
        if h.equity < convert(h.maintenance, int256):
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
    count: uint256 = self._active_count
    for i: uint256 in range(min(limit, MAX_BATCH), bound=MAX_BATCH):
        if start + i >= count:
            break
        out.append(self._active[start + i])
    return out


@view
@external
def accounts_with_positions_count() -> uint256:
    """
    @notice Number of subaccounts with open positions.
    @return The count.
    """
    return self._active_count


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
    packed: uint256 = self._positions[owner][subaccount][market_id]
    return self._unpack_size(packed), self._unpack_notional(packed)


@view
@external
def collateral_of(owner: address, subaccount: uint256) -> int256:
    """
    @notice Settled collateral (USD WAD), excluding unrealised PnL and unpaid funding.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return The collateral.
    """
    return self._collateral[owner][subaccount]


@view
@external
def markets_of(owner: address, subaccount: uint256) -> DynArray[uint256, MAX_POSITIONS]:
    """
    @notice Markets in which the subaccount holds a position.
    @param owner Owner of the subaccount.
    @param subaccount Its id.
    @return Market ids.
    """
    out: DynArray[uint256, MAX_POSITIONS] = []
    markets: uint256 = self._markets_of[owner][subaccount]
    for i: uint256 in range(MAX_POSITIONS):
        market_id: uint256 = (markets >> (32 * i)) & MASK_32
        if market_id == 0:
            break
        out.append(market_id)
    return out


@view
@external
def insurance_fund() -> uint256:
    """
    @notice The insurance fund's collateral (USD WAD), floored at zero.
    @return The fund.
    """
    fund: int256 = self._collateral[self][INSURANCE_SUBACCOUNT]
    if fund <= 0:
        return 0
    return convert(fund, uint256)


@view
@external
def open_interest(market_id: uint256) -> uint256:
    """
    @notice Total long size of a market (base units, WAD); equals total short size.
    @param market_id The market.
    @return The open interest.
    """
    return self._open_interest[market_id]


@view
@external
def funding_index(market_id: uint256) -> int256:
    """
    @notice A market's cumulative funding index as of now (USD per base unit, WAD).
    @param market_id The market.
    @return The index.
    """
    return self._index_now(market_id)


@view
@external
def mark_price(market_id: uint256) -> (uint256, bool):
    """
    @notice The price the engine uses now and whether it is fresh.
    @param market_id A listed market.
    @return price (USD per base unit, WAD), fresh.
    """
    oracle: uint256 = self._oracle[market_id]
    assert oracle != 0, "engine: unknown market"
    price: uint256 = 0
    status: uint256 = PRICE_OK
    price, status = self._mark_price(market_id, oracle)
    return price, status == PRICE_OK


# Internal


@view
@internal
def _check_config(market_id: uint256, config: IMarginEngine.MarketConfig) -> uint256:
    assert config.feed != empty(address), "engine: zero feed"
    assert config.max_price_age != 0 and config.max_price_age <= MAX_PRICE_AGE, "engine: bad max price age"
    assert config.price_band <= MAX_PRICE_BAND, "engine: bad price band"
    assert config.liquidation_fee <= MAX_LIQUIDATION_FEE, "engine: bad liquidation fee"
    # A penalty at or above the lowest maintenance rate would push every
    # liquidated account into bad debt and close every position whole.
    assert config.liquidation_fee < staticcall IRiskParameterRegistry(REGISTRY).min_maintenance_rate(market_id), "engine: liquidation fee not below maintenance"
    assert config.liquidator_share <= WAD, "engine: bad liquidator share"
    decimals: uint8 = staticcall IERC20Detailed(config.feed).decimals()
    assert decimals <= 18, "engine: feed decimals"
    return (
        convert(config.feed, uint256)
        | (config.max_price_age << 160)
        | (convert(18 - decimals, uint256) << 200)
        | (1 << 255)
    )


@view
@internal
def _read_feed(oracle: uint256) -> (uint256, uint256):
    """
    @dev Reads the feed; never reverts. Returns (WAD price, status).
    """
    feed: address = convert(oracle & MASK_160, address)
    success: bool = False
    response: Bytes[160] = b""
    success, response = raw_call(
        feed, method_id("latestRoundData()"), max_outsize=160, is_static_call=True, revert_on_failure=False
    )
    if not success or len(response) != 160:
        return 0, PRICE_INVALID
    answer: int256 = convert(slice(response, 32, 32), int256)
    updated_at: uint256 = convert(slice(response, 96, 32), uint256)
    if answer <= 0 or answer > convert(MASK_128, int256):
        return 0, PRICE_INVALID
    # answer < 2**128 and the scale is at most 10**18 < 2**60: the product is
    # below 2**188 and cannot overflow.
    price: uint256 = unsafe_mul(convert(answer, uint256), pow_mod256(10, (oracle >> 200) & 255))
    if price > MASK_128:
        return 0, PRICE_INVALID
    max_age: uint256 = (oracle >> 160) & MASK_40
    if updated_at > block.timestamp or block.timestamp - updated_at > max_age:
        return price, PRICE_STALE
    return price, PRICE_OK


@view
@internal
def _mark_price(market_id: uint256, oracle: uint256) -> (uint256, uint256):
    """
    @dev The fresh feed price, else the last good price stored at the
         market's last touch. Returns (price, feed status).
    """
    price: uint256 = 0
    status: uint256 = PRICE_OK
    price, status = self._read_feed(oracle)
    if status == PRICE_OK:
        return price, status
    last: uint256 = (self._funding_meta[market_id] >> 104) & MASK_128
    assert last != 0, "engine: no price"
    return last, status


@pure
@internal
def _assert_fresh(status: uint256):
    assert status != PRICE_STALE, "engine: stale price"
    assert status == PRICE_OK, "engine: invalid price"


@view
@internal
def _assert_inside_bounds(market_id: uint256, price: uint256):
    bounds: uint256 = self._price_bounds[market_id]
    if bounds != 0:
        assert price > bounds & MASK_128 and price < bounds >> 128, "engine: price at feed bound"


@view
@internal
def _index_now(market_id: uint256) -> int256:
    meta: uint256 = self._funding_meta[market_id]
    rate: int256 = convert(meta & MASK_64, int256) - BIAS_64
    last: uint256 = (meta >> 64) & MASK_40
    price: uint256 = (meta >> 104) & MASK_128
    index: int256 = self._funding_index[market_id]
    if rate == 0 or last >= block.timestamp:
        return index
    # |rate| < 2**63, price < 2**128, dt < 2**40: the product is < 2**231.
    return index + unsafe_mul(unsafe_mul(rate, convert(price, int256)), convert(block.timestamp - last, int256)) // IWAD


@internal
def _write_meta(market_id: uint256, rate: int256, price: uint256):
    # The registry bounds |rate| below 2**47; clamp rather than revert so that
    # a misbehaving registry can never block liquidations.
    clamped: int256 = min(max(rate, -BIAS_64 + 1), BIAS_64 - 1)
    self._funding_meta[market_id] = (
        convert(clamped + BIAS_64, uint256) | (block.timestamp << 64) | (price << 104)
    )


@internal
def _accrue(market_id: uint256) -> int256:
    """
    @dev Brings the funding index to now, then stores the registry's
         current rate and the mark price for the next interval.
    """
    meta: uint256 = self._funding_meta[market_id]
    index: int256 = self._funding_index[market_id]
    if (meta >> 64) & MASK_40 != block.timestamp:
        index = self._index_now(market_id)
        self._funding_index[market_id] = index
    price: uint256 = 0
    status: uint256 = PRICE_OK
    price, status = self._read_feed(self._oracle[market_id])
    if status != PRICE_OK:
        price = (meta >> 104) & MASK_128
    rate: int256 = staticcall IRiskParameterRegistry(REGISTRY).funding_rate(market_id)
    self._write_meta(market_id, rate, price)
    log IMarginEngine.FundingAccrued(market_id=market_id, index=index, rate=rate, price=price)
    return index


@view
@internal
def _health(owner: address, subaccount: uint256, strict: bool, focus: uint256) -> AccountState:
    """
    @dev Equity and margins at mark prices (fresh prices when `strict`),
         with the focus market's size, price, notional and maintenance.
    """
    h: AccountState = empty(AccountState)
    h.cash = self._collateral[owner][subaccount]
    markets: uint256 = self._markets_of[owner][subaccount]
    for i: uint256 in range(MAX_POSITIONS):
        market_id: uint256 = (markets >> (32 * i)) & MASK_32
        if market_id == 0:
            break
        packed: uint256 = self._positions[owner][subaccount][market_id]
        size: int256 = self._unpack_size(packed)
        price: uint256 = 0
        status: uint256 = PRICE_OK
        price, status = self._mark_price(market_id, self._oracle[market_id])
        if strict:
            self._assert_fresh(status)
            self._assert_inside_bounds(market_id, price)
        owed: int256 = self._ceil_div(
            size * (self._index_now(market_id) - self._funding_snapshot[owner][subaccount][market_id]), IWAD
        )
        h.cash -= owed
        h.equity += self._floor_div(size * convert(price, int256), IWAD) - self._unpack_notional(packed)
        notional: uint256 = self._ceil_mul(convert(abs(size), uint256), price)
        maintenance: uint256 = 0
        initial: uint256 = 0
        maintenance, initial = staticcall IRiskParameterRegistry(REGISTRY).margin_requirements(market_id, notional)
        h.maintenance += maintenance
        h.initial += initial
        if market_id == focus:
            h.focus_size = size
            h.focus_price = price
            h.focus_notional = notional
            h.focus_maintenance = maintenance
    h.equity += h.cash
    return h


@view
@internal
def _check_side(owner: address, subaccount: uint256, grows: bool):
    if owner == self:
        return
    if grows:
        h: AccountState = self._health(owner, subaccount, True, 0)
        assert h.equity >= convert(h.initial, int256), "engine: initial margin"
    else:
        h: AccountState = self._health(owner, subaccount, False, 0)
        assert h.equity >= convert(h.maintenance, int256), "engine: maintenance margin"


@view
@internal
def _max_close(h: AccountState, abs_size: uint256, price: uint256, fee: uint256) -> uint256:
    """
    @dev The partial-liquidation rule (contract docstring).
    """
    if h.equity * IWAD < convert(h.maintenance * DEEP_UNDERWATER, int256):
        return abs_size
    target: uint256 = self._ceil_mul(h.maintenance, WAD + LIQUIDATION_BUFFER)
    need: int256 = convert(target, int256) - h.equity
    denominator: int256 = convert(h.focus_maintenance * (WAD + LIQUIDATION_BUFFER) // WAD, int256) - convert(
        self._ceil_mul(h.focus_notional, fee), int256
    )
    if denominator <= 0:
        return abs_size
    fraction: uint256 = convert(self._ceil_div(need * IWAD, denominator), uint256)
    if fraction >= WAD:
        return abs_size
    closable: uint256 = max(self._ceil_mul(abs_size, fraction), 1)
    if (abs_size - closable) * price // WAD < DUST_NOTIONAL:
        return abs_size
    return closable


@internal
def _apply(owner: address, subaccount: uint256, market_id: uint256, delta: int256, price: uint256, index: int256) -> (int256, int256):
    """
    @dev Settles the position's funding, then changes its size by `delta` at
         `price`: the account's cash moves by -ceil(delta * price) when
         buying, +floor(|delta| * price) when selling; realised PnL goes to
         collateral. Maintains the market list and the active list.
    """
    packed: uint256 = self._positions[owner][subaccount][market_id]
    a: int256 = self._unpack_size(packed)
    notional: int256 = self._unpack_notional(packed)
    collateral: int256 = self._collateral[owner][subaccount]
    if a != 0:
        snapshot: int256 = self._funding_snapshot[owner][subaccount][market_id]
        if snapshot != index:
            collateral -= self._ceil_div(a * (index - snapshot), IWAD)
    if self._funding_snapshot[owner][subaccount][market_id] != index:
        self._funding_snapshot[owner][subaccount][market_id] = index
    value: uint256 = convert(abs(delta), uint256) * price
    cash: int256 = 0
    if delta > 0:
        cash = -convert(self._ceil_div_u(value, WAD), int256)
    else:
        cash = convert(value // WAD, int256)
    b: int256 = a + delta
    if a == 0 or (a > 0 and b > a) or (a < 0 and b < a):
        # Growing (or opening): the cost goes into the open notional.
        notional -= cash
    elif b == 0 or (a > 0 and b > 0) or (a < 0 and b < 0):
        # Reducing: realise the closed part of the cost basis.
        basis: int256 = notional * (a - b) // a
        notional -= basis
        collateral += cash - basis
    else:
        # Flipping: close everything, open |b| at `price` (rounded against the account).
        opened: int256 = 0
        if b > 0:
            opened = convert(self._ceil_div_u(convert(b, uint256) * price, WAD), int256)
        else:
            opened = -convert(convert(-b, uint256) * price // WAD, int256)
        collateral += cash - notional + opened
        notional = opened
    self._positions[owner][subaccount][market_id] = self._pack(b, notional)
    self._collateral[owner][subaccount] = collateral
    if owner != self:
        if a == 0:
            self._add_market(owner, subaccount, market_id)
        elif b == 0:
            self._remove_market(owner, subaccount, market_id)
    return a, b


@internal
def _add_market(owner: address, subaccount: uint256, market_id: uint256):
    isolated: uint256 = self.isolated_market[owner][subaccount]
    assert isolated == 0 or isolated == market_id, "engine: isolated"
    markets: uint256 = self._markets_of[owner][subaccount]
    if markets == 0:
        self._active[self._active_count] = IMarginEngine.Subaccount(owner=owner, subaccount=subaccount)
        self._active_count += 1
        self._active_index[owner][subaccount] = self._active_count
    for i: uint256 in range(MAX_POSITIONS):
        if (markets >> (32 * i)) & MASK_32 == 0:
            self._markets_of[owner][subaccount] = markets | (market_id << (32 * i))
            return
    raise "engine: too many positions"


@internal
def _remove_market(owner: address, subaccount: uint256, market_id: uint256):
    markets: uint256 = self._markets_of[owner][subaccount]
    found: uint256 = MAX_POSITIONS
    last: uint256 = 0
    for i: uint256 in range(MAX_POSITIONS):
        entry: uint256 = (markets >> (32 * i)) & MASK_32
        if entry == 0:
            break
        if entry == market_id:
            found = i
        last = i
    # Swap the last entry into the found slot and clear the last slot.
    last_id: uint256 = (markets >> (32 * last)) & MASK_32
    markets = markets & ~(MASK_32 << (32 * last))
    if found != last:
        markets = (markets & ~(MASK_32 << (32 * found))) | (last_id << (32 * found))
    self._markets_of[owner][subaccount] = markets
    if markets == 0:
        position: uint256 = self._active_index[owner][subaccount]
        count: uint256 = self._active_count
        if position != count:
            moved: IMarginEngine.Subaccount = self._active[count - 1]
            self._active[position - 1] = moved
            self._active_index[moved.owner][moved.subaccount] = position
        self._active[count - 1] = empty(IMarginEngine.Subaccount)
        self._active_count = count - 1
        self._active_index[owner][subaccount] = 0


@pure
@internal
def _grows(a: int256, b: int256) -> bool:
    if b == 0:
        return False
    if a == 0:
        return True
    if (a > 0) != (b > 0):
        return True
    return abs(b) > abs(a)


@pure
@internal
def _new_oi(oi: uint256, a: int256, b: int256) -> uint256:
    out: uint256 = oi
    if a > 0:
        out -= convert(a, uint256)
    if b > 0:
        out += convert(b, uint256)
    return out


@pure
@internal
def _pack(size: int256, notional: int256) -> uint256:
    if size == 0:
        return 0
    assert size > -BIAS_128 and size < BIAS_128, "engine: size overflow"
    assert notional > -BIAS_128 and notional < BIAS_128, "engine: notional overflow"
    return (convert(size + BIAS_128, uint256) << 128) | convert(notional + BIAS_128, uint256)


@pure
@internal
def _unpack_size(packed: uint256) -> int256:
    if packed == 0:
        return 0
    return convert(packed >> 128, int256) - BIAS_128


@pure
@internal
def _unpack_notional(packed: uint256) -> int256:
    if packed == 0:
        return 0
    return convert(packed & MASK_128, int256) - BIAS_128


@pure
@internal
def _ceil_mul(x: uint256, y: uint256) -> uint256:
    return self._ceil_div_u(x * y, WAD)


@pure
@internal
def _ceil_div_u(x: uint256, d: uint256) -> uint256:
    q: uint256 = x // d
    if q * d != x:
        q += 1
    return q


@pure
@internal
def _floor_div(x: int256, d: int256) -> int256:
    # d > 0; Vyper's signed division truncates toward zero.
    q: int256 = x // d
    if x < 0 and q * d != x:
        q -= 1
    return q


@pure
@internal
def _ceil_div(x: int256, d: int256) -> int256:
    # d > 0; Vyper's signed division truncates toward zero.
    q: int256 = x // d
    if x > 0 and q * d != x:
        q += 1
    return q
