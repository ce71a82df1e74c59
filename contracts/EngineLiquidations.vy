# pragma version ~=0.4.3
"""
@title Dynamic Margin engine: liquidation, backstop and deleveraging
@custom:contract-name EngineLiquidations
@license GNU Affero General Public License v3.0 only
@notice Partial liquidation (`engine_core._closable`), the backstop of
        accounts below zero equity into the insurance fund, and
        auto-deleveraging of the deficit. `MarginEngine` forwards these calls here by delegatecall, so
        they run in the engine's storage, with the engine's address and the
        caller's `msg.sender` (one contract cannot hold all of the engine:
        EIP-170). Called directly, every function refuses ("engine: call
        through the engine"). Storage is laid out by `engine_state`,
        identically in every part of the engine.

        Backstop: every position moves to the insurance fund's subaccount
        `(engine, 0)` at the mark price; the fund covers the negative
        equity, what it cannot cover is recorded as bad debt, and the caller
        is paid `backstop_reward` from what the fund has left.

        Deleveraging (ADL) resolves the deficit = bad debt + the insurance
        fund's negative equity (its positions are marked): anyone may close
        an opposite-side position against the fund's position in the same
        market. Of q closed at the mark price, the account also transfers
        T = min(ceil(deficit * q / |fund position|), equity - 1): it closes
        at the mark price moved against it by T / q (the bankruptcy price of
        the fund's share, as dYdX and Binance close deleveraged positions),
        never below zero equity. T repays bad debt first,
        the rest goes to the fund. Ranking (largest unrealised profit times
        leverage first, as dYdX, Hyperliquid and Binance do) is the caller's:
        the engine cannot rank every account in one transaction; it checks
        eligibility and logs each account hit with its profit and equity.
@custom:kill See `MarginEngine`.
"""

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
IWAD: constant(int256) = 10**18
INSURANCE_SUBACCOUNT: constant(uint256) = 0
DUST_NOTIONAL: constant(uint256) = 10 * 10**18

# @dev This contract's own address: a call that is not a delegatecall runs here.
SELF: immutable(address)


@deploy
def __init__():
    """
    """
    # This contract's own storage is never used: every function runs in the
    # engine's storage, governed by the engine's owner.
    ownable.__init__()
    ownable_2step.__init__()
    SELF = self


# Liquidation, backstop, deleveraging


@external
def liquidate(owner: address, subaccount: uint256, market_id: uint256, size: uint256, liquidator_subaccount: uint256) -> uint256:
    """
    @notice Takes over up to `size` of a liquidatable account's position in
            `market_id` into the caller's subaccount at the mark price, as
            far as the partial-liquidation rule allows. The caller's
            subaccount must meet initial margin afterwards. An account below
            zero equity goes through `backstop` instead.
    @param owner Owner of the liquidatable subaccount.
    @param subaccount Its subaccount id.
    @param market_id The market of the position to close.
    @param size Most base units (WAD) to take over.
    @param liquidator_subaccount The caller's subaccount receiving the position.
    @return Base units taken over.
    """
    self._only_engine()
    assert size != 0, "engine: zero size"
    assert owner != self, "engine: insurance account"
    assert not (owner == msg.sender and subaccount == liquidator_subaccount), "engine: self liquidation"
    engine_core._listed(market_id)
    acct: engine_core.Account = engine_core._load(owner, subaccount, False, False)
    assert acct.equity < convert(acct.maintenance, int256), "engine: account healthy"
    assert acct.equity >= 0, "engine: negative equity, backstop the account"
    j: uint256 = engine_core._leg_index(acct, market_id)
    leg: engine_core.Leg = acct.legs[j]
    abs_size: uint256 = convert(abs(leg.size), uint256)
    fee: uint256 = engine_state.market_config[market_id].liquidation_fee
    closed: uint256 = min(size, engine_core._closable(acct, j, fee))
    # A remainder nobody would bother to liquidate is refused: take all or leave enough.
    assert closed == abs_size or (abs_size - closed) * leg.price // WAD >= DUST_NOTIONAL, "engine: remainder below dust"

    index: int256 = engine_core._accrue(market_id)
    delta: int256 = convert(closed, int256)
    if leg.size < 0:
        delta = -delta
    engine_core._move(market_id, msg.sender, liquidator_subaccount, owner, subaccount, delta, leg.price, index)

    penalty: uint256 = engine_core._penalty(closed, leg.price, engine_core._fee_rate(leg, fee), acct.equity)
    reward: uint256 = penalty * engine_state.market_config[market_id].liquidator_share // WAD
    engine_state.collateral[owner][subaccount] -= convert(penalty, int256)
    if reward != 0:
        engine_state.collateral[msg.sender][liquidator_subaccount] += convert(reward, int256)
    if penalty != reward:
        engine_state.collateral[self][INSURANCE_SUBACCOUNT] += convert(penalty - reward, int256)

    lh: engine_core.Account = engine_core._load(msg.sender, liquidator_subaccount, False, True)
    assert lh.equity >= convert(lh.initial, int256), "engine: liquidator below initial margin"
    log IMarginEngine.Liquidation(
        market_id=market_id,
        owner=owner,
        subaccount=subaccount,
        liquidator=msg.sender,
        liquidator_subaccount=liquidator_subaccount,
        size=-delta,
        price=leg.price,
        penalty=penalty,
        liquidator_reward=reward,
    )
    return closed


@external
def backstop(owner: address, subaccount: uint256):
    """
    @notice When an account's equity is below zero, moves every position to
            the insurance fund's subaccount at the mark price; the fund
            covers the negative equity, the rest becomes bad debt (recovered
            by `deleverage`), and the caller is paid the backstop reward from
            what the fund has left.
    @param owner Owner of the subaccount.
    @param subaccount Its subaccount id.
    """
    self._only_engine()
    assert owner != self, "engine: insurance account"
    acct: engine_core.Account = engine_core._load(owner, subaccount, False, False)
    assert acct.equity < 0, "engine: above backstop threshold"
    for leg: engine_core.Leg in acct.legs:
        index: int256 = engine_core._accrue(leg.market_id)
        engine_core._move(leg.market_id, self, INSURANCE_SUBACCOUNT, owner, subaccount, leg.size, leg.price, index)
    collateral: int256 = engine_state.collateral[owner][subaccount]
    covered: uint256 = 0
    uncovered: uint256 = 0
    fund: int256 = engine_state.collateral[self][INSURANCE_SUBACCOUNT]
    if collateral < 0:
        shortfall: uint256 = convert(-collateral, uint256)
        if fund > 0:
            covered = min(shortfall, convert(fund, uint256))
            fund -= convert(covered, int256)
        uncovered = shortfall - covered
        engine_state.collateral[owner][subaccount] = 0
        if uncovered != 0:
            engine_state.bad_debt += uncovered
    reward: uint256 = 0
    if fund > 0:
        reward = min(engine_state.backstop_reward, convert(fund, uint256))
        fund -= convert(reward, int256)
    engine_state.collateral[self][INSURANCE_SUBACCOUNT] = fund
    if reward != 0:
        engine_state.collateral[msg.sender][INSURANCE_SUBACCOUNT] += convert(reward, int256)
        log IMarginEngine.BackstopReward(caller=msg.sender, amount=reward)
    log IMarginEngine.Backstop(owner=owner, subaccount=subaccount, equity=acct.equity, covered=covered, bad_debt=uncovered)


@external
def deleverage(owner: address, subaccount: uint256, market_id: uint256, size: uint256) -> uint256:
    """
    @notice Auto-deleveraging: while there is a deficit (bad debt or a
            negative insurance fund), closes up to `size` of the account's
            position against the insurance fund's opposite position at the
            mark price, and moves the account's share of the deficit to the
            fund (contract docstring). Anyone may call; rank accounts by
            unrealised profit times leverage, largest first.
    @param owner Owner of the account to deleverage.
    @param subaccount Its subaccount.
    @param market_id The market.
    @param size Most base units (WAD) to close.
    @return Base units closed.
    """
    self._only_engine()
    assert size != 0, "engine: zero size"
    assert owner != self, "engine: insurance account"
    engine_core._listed(market_id)
    deficit: uint256 = engine_core._deficit()
    assert deficit != 0, "engine: no deficit to recover"
    fund_size: int256 = engine_core._unpack_size(engine_state.positions[self][INSURANCE_SUBACCOUNT][market_id])
    assert fund_size != 0, "engine: insurance fund holds no position in the market"
    acct: engine_core.Account = engine_core._load(owner, subaccount, False, False)
    j: uint256 = engine_core._leg_index(acct, market_id)
    leg: engine_core.Leg = acct.legs[j]
    assert (leg.size > 0) != (fund_size > 0), "engine: position on the insurance fund's side"
    assert acct.equity > 1, "engine: no equity to deleverage"
    abs_fund: uint256 = convert(abs(fund_size), uint256)
    closed: uint256 = min(size, min(convert(abs(leg.size), uint256), abs_fund))
    # Closing at the bankruptcy price of the fund's share: the account pays its share of
    # the deficit on top of the mark, never its last wei of equity (it cannot go negative).
    transfer: uint256 = min(fixed_point._ceil_div(deficit * closed, abs_fund), convert(acct.equity - 1, uint256))

    index: int256 = engine_core._accrue(market_id)
    delta: int256 = convert(closed, int256)
    if leg.size < 0:
        delta = -delta
    engine_core._move(market_id, self, INSURANCE_SUBACCOUNT, owner, subaccount, delta, leg.price, index)
    engine_state.collateral[owner][subaccount] -= convert(transfer, int256)
    repaid: uint256 = min(transfer, engine_state.bad_debt)
    engine_state.bad_debt -= repaid
    if transfer != repaid:
        engine_state.collateral[self][INSURANCE_SUBACCOUNT] += convert(transfer - repaid, int256)
    log IMarginEngine.Deleveraged(
        market_id=market_id,
        owner=owner,
        subaccount=subaccount,
        caller=msg.sender,
        size=-delta,
        price=leg.price,
        transfer=transfer,
        unrealised_pnl=fixed_point._floor_div(leg.size * convert(leg.price, int256), IWAD) - leg.open_notional,
        equity=acct.equity,
        deficit_after=engine_core._deficit(),
    )
    return closed



# Internal


@view
@internal
def _only_engine():
    """
    @dev Every function runs only by delegatecall from the engine (in its storage).
    """
    assert self != SELF, "engine: call through the engine"
