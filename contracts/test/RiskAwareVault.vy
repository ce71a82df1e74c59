# pragma version ~=0.4.3
"""
@title Risk-aware vault (integration example)
@custom:contract-name RiskAwareVault
@license GNU Affero General Public License v3.0 only
@notice An integrator that reads the margin engine only through
        `interfaces/IMarginEngine.vyi`: it pays out a credit line to an
        engine account's owner only while that account is healthy, and
        refuses to act for liquidatable accounts. It also keeps its own
        reserve as collateral in one engine subaccount.
@custom:kill Not stoppable: an example contract.
"""

from ethereum.ercs import IERC20

from ..interfaces import IMarginEngine


# Immutables

# @dev The margin engine.
ENGINE: public(immutable(IMarginEngine))
# @dev The collateral token.
TOKEN: public(immutable(IERC20))


# Storage

# @dev Actions performed per engine owner.
actions: public(HashMap[address, uint256])


# Events

event Acted:
    owner: indexed(address)
    subaccount: uint256
    equity: int256


@deploy
def __init__(engine: address, token: address):
    """
    @dev Points the vault at an engine and its collateral token.
    """
    ENGINE = IMarginEngine(engine)
    TOKEN = IERC20(token)


@external
def act_for(owner: address, subaccount: uint256):
    """
    @notice Performs an action for an engine account; reverts when the
            engine says it is liquidatable.
    @param owner Engine account owner.
    @param subaccount Its subaccount.
    """
    assert not staticcall ENGINE.is_liquidatable(owner, subaccount), "vault: account liquidatable"
    equity: int256 = 0
    maintenance: uint256 = 0
    initial: uint256 = 0
    equity, maintenance, initial = staticcall ENGINE.account_health(owner, subaccount)
    self.actions[owner] += 1
    log Acted(owner=owner, subaccount=subaccount, equity=equity)


@view
@external
def credit_line(owner: address, subaccount: uint256) -> uint256:
    """
    @notice Equity above initial margin, zero for liquidatable accounts (USD WAD).
    @param owner Engine account owner.
    @param subaccount Its subaccount.
    @return The credit line.
    """
    if staticcall ENGINE.is_liquidatable(owner, subaccount):
        return 0
    equity: int256 = 0
    maintenance: uint256 = 0
    initial: uint256 = 0
    equity, maintenance, initial = staticcall ENGINE.account_health(owner, subaccount)
    if equity <= convert(initial, int256):
        return 0
    return convert(equity, uint256) - initial


@external
def deposit_reserve(subaccount: uint256, amount: uint256):
    """
    @notice Pulls `amount` tokens from the caller and deposits them as the
            vault's own engine collateral.
    @param subaccount The vault's engine subaccount.
    @param amount Token units.
    """
    assert extcall TOKEN.transferFrom(msg.sender, self, amount, default_return_value=True), "vault: transfer failed"
    assert extcall TOKEN.approve(ENGINE.address, amount, default_return_value=True), "vault: approve failed"
    extcall ENGINE.deposit(subaccount, amount)
