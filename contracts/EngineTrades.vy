# pragma version ~=0.4.3
"""
@title Dynamic Margin engine: trades and withdrawals
@custom:contract-name EngineTrades
@license GNU Affero General Public License v3.0 only
@notice Settling matched trades (margin checks, open-interest cap, premium
        and volume accumulators) and withdrawals. `MarginEngine` forwards
        these calls here by delegatecall, so they run in the engine's
        storage, with the engine's address and the caller's `msg.sender`
        (one contract cannot hold all of the engine: EIP-170). Called
        directly, every function refuses ("engine: call through the
        engine"). Storage is laid out by `engine_state`, identically in
        every part of the engine.

        Trade rules: a side whose position grows (or flips) needs fresh
        prices inside the feed's bounds, no pause and equity >= initial
        margin afterwards; a reducing side needs equity >= maintenance
        afterwards, or, when it stays below, non-negative equity and an
        equity / maintenance ratio no lower than before (an unhealthy
        account can always cut risk step by step). Each fill between two
        owners adds to the market's premium accumulators and to both
        owners' 30-day volume (a fill between one owner's subaccounts adds
        to neither: wash fills buy no funding and no volume class).
@custom:kill See `MarginEngine`.
"""

from ethereum.ercs import IERC20

from snekmate.auth import ownable
from snekmate.auth import ownable_2step

from interfaces import IMarginEngine
from modules import engine_state
from modules import engine_core
from modules import fixed_point

initializes: ownable
initializes: ownable_2step[ownable := ownable]
initializes: engine_state
initializes: engine_core[engine_state := engine_state]


WAD: constant(uint256) = 10**18
INSURANCE_SUBACCOUNT: constant(uint256) = 0
LISTED_BIT: constant(uint256) = 1 << 255
PRICE_OK: constant(uint256) = 0

# @dev This contract's own address: a call that is not a delegatecall runs here.
SELF: immutable(address)
# @dev The collateral token (the engine's).
COLLATERAL: public(immutable(address))
# @dev 10**(18 - collateral decimals): token units to WAD.
TOKEN_SCALE: public(immutable(uint256))


@deploy
def __init__(collateral: address, token_scale: uint256):
    """
    @param collateral The engine's collateral token.
    @param token_scale 10**(18 - its decimals).
    """
    # This contract's own storage is never used: every function runs in the
    # engine's storage.
    ownable.__init__()
    ownable_2step.__init__()
    SELF = self
    COLLATERAL = collateral
    TOKEN_SCALE = token_scale


@external
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
            (or flips) needs fresh prices, no pause and equity >= initial
            margin afterwards; a reducing side needs equity >= maintenance,
            or a non-negative equity / maintenance ratio no lower than before.
    @param market_id A listed market.
    @param maker_owner Maker's owner.
    @param maker_sub Maker's subaccount.
    @param taker_owner Taker's owner.
    @param taker_sub Taker's subaccount.
    @param size Signed base units (WAD); positive: the taker buys.
    @param price USD per base unit (WAD).
    """
    self._only_engine()
    assert engine_state.is_exchange[msg.sender], "engine: not exchange"
    assert size != 0, "engine: zero size"
    assert not (maker_owner == taker_owner and maker_sub == taker_sub), "engine: self trade"
    oracle: uint256 = engine_state.oracle[market_id]
    assert oracle & LISTED_BIT != 0, "engine: unknown market"
    mark: uint256 = 0
    time: uint256 = 0
    status: uint256 = PRICE_OK
    mark, time, status = engine_core._mark_price(oracle, engine_state.funding[market_id])
    band: uint256 = engine_state.market_config[market_id].price_band
    diff: uint256 = price - mark if price > mark else mark - price
    assert diff * WAD <= band * mark, "engine: price outside band"

    t_old: int256 = engine_core._unpack_size(engine_state.positions[taker_owner][taker_sub][market_id])
    m_old: int256 = engine_core._unpack_size(engine_state.positions[maker_owner][maker_sub][market_id])
    taker_grows: bool = engine_core._grows(t_old, t_old + size)
    maker_grows: bool = engine_core._grows(m_old, m_old - size)
    # The engine's subaccounts carry no margin check: only the insurance fund
    # may trade, and only to unwind positions it took over in backstops.
    if taker_owner == self:
        assert taker_sub == INSURANCE_SUBACCOUNT and not taker_grows, "engine: insurance fund may only reduce"
    if maker_owner == self:
        assert maker_sub == INSURANCE_SUBACCOUNT and not maker_grows, "engine: insurance fund may only reduce"
    if taker_grows or maker_grows:
        assert not engine_state.paused, "engine: paused"
        engine_core._assert_fresh(status)
        engine_core._assert_inside_bounds(market_id, mark)
    taker_before: engine_core.Account = empty(engine_core.Account)
    maker_before: engine_core.Account = empty(engine_core.Account)
    if not taker_grows and taker_owner != self:
        taker_before = engine_core._load(taker_owner, taker_sub, False, False)
    if not maker_grows and maker_owner != self:
        maker_before = engine_core._load(maker_owner, maker_sub, False, False)

    index: int256 = engine_core._accrue(market_id)
    oi: uint256 = engine_state.open_interest[market_id]
    engine_core._move(market_id, taker_owner, taker_sub, maker_owner, maker_sub, size, price, index)
    new_oi: uint256 = engine_state.open_interest[market_id]
    if new_oi > oi:
        assert fixed_point._ceil_mul(new_oi, mark) <= engine_state.market_config[market_id].oi_cap, "engine: open interest cap"
    # A fill between two subaccounts of one owner is a transfer, not a trade:
    # it moves neither the premium (funding) nor the owner's volume (profile).
    if taker_owner != maker_owner:
        notional: uint256 = convert(abs(size), uint256) * price // WAD
        engine_core._add_premium(market_id, notional, price, mark)
        engine_core._add_volume(taker_owner, notional)
        engine_core._add_volume(maker_owner, notional)
    self._check_side(taker_owner, taker_sub, taker_grows, taker_before)
    self._check_side(maker_owner, maker_sub, maker_grows, maker_before)
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
def withdraw(subaccount: uint256, amount: uint256):
    """
    @notice Withdraws `amount` collateral tokens from the caller's subaccount.
            Settled cash (collateral minus unpaid funding) must stay >= 0 and,
            with positions open, equity must stay >= initial margin at fresh
            prices: unrealised profit is never withdrawable.
    @param subaccount The caller's subaccount id.
    @param amount Token units.
    """
    self._only_engine()
    assert amount != 0, "engine: zero amount"
    engine_state.collateral[msg.sender][subaccount] -= convert(amount * TOKEN_SCALE, int256)
    acct: engine_core.Account = engine_core._load(msg.sender, subaccount, True, True)
    assert acct.cash >= 0, "engine: insufficient collateral"
    assert acct.equity >= convert(acct.initial, int256), "engine: below initial margin"
    log IMarginEngine.Withdraw(owner=msg.sender, subaccount=subaccount, amount=amount)
    assert extcall IERC20(COLLATERAL).transfer(msg.sender, amount, default_return_value=True), "engine: transfer failed"


# Internal


@view
@internal
def _only_engine():
    """
    @dev Every function runs only by delegatecall from the engine (in its storage).
    """
    assert self != SELF, "engine: call through the engine"


@view
@internal
def _check_side(owner: address, subaccount: uint256, grows: bool, before: engine_core.Account):
    """
    @dev A growing side needs equity >= initial at fresh prices; a reducing
         side equity >= maintenance, or equity >= 0 and an equity /
         maintenance ratio no lower than before the trade.
    """
    if owner == self:
        return
    if grows:
        acct: engine_core.Account = engine_core._load(owner, subaccount, True, True)
        assert acct.equity >= convert(acct.initial, int256), "engine: below initial margin"
        return
    after: engine_core.Account = engine_core._load(owner, subaccount, False, False)
    if after.equity >= convert(after.maintenance, int256):
        return
    assert after.equity >= 0, "engine: below maintenance margin"
    # E_after / M_after >= E_before / M_before, cross-multiplied (M >= 0).
    assert after.equity * convert(before.maintenance, int256) >= before.equity * convert(after.maintenance, int256), "engine: below maintenance margin"
