# pragma version ~=0.4.3
"""
@title Re-entering collateral token (tests only)
@custom:contract-name ReentrantToken
@license GNU Affero General Public License v3.0 only
@notice An ERC-20 that, when armed, calls `target` with `payload` from
        inside every `transfer` and `transferFrom`, to prove the engine's
        reentrancy lock. It records whether the callback succeeded and
        never lets the callback's failure fail the transfer.
@custom:kill Not stoppable: a test token.
"""

from ethereum.ercs import IERC20

implements: IERC20


# Storage

# @dev Token name.
name: public(String[64])
# @dev Token symbol.
symbol: public(String[32])
# @dev Token decimals.
decimals: public(uint8)
# @dev Balance of each holder.
balanceOf: public(HashMap[address, uint256])
# @dev Allowance of each (owner, spender).
allowance: public(HashMap[address, HashMap[address, uint256]])
# @dev Total supply.
totalSupply: public(uint256)
# @dev Contract called back on transfer (empty: disarmed).
target: public(address)
# @dev Calldata of the callback.
payload: public(Bytes[1024])
# @dev Callbacks attempted.
attempts: public(uint256)
# @dev Callbacks that succeeded.
successes: public(uint256)
# @dev Return data (the revert reason) of the last callback.
last_response: public(Bytes[256])


@deploy
def __init__(decimals_: uint8):
    """
    @dev Sets decimals; no initial supply.
    """
    self.name = "Reentrant"
    self.symbol = "REENT"
    self.decimals = decimals_


@external
def arm(target_: address, payload_: Bytes[1024]):
    """
    @dev Calls `target_` with `payload_` on every transfer (empty target disarms).
    """
    self.target = target_
    self.payload = payload_


@external
def mint(to: address, amount: uint256):
    """
    @dev Creates `amount` tokens for `to`.
    """
    self.balanceOf[to] += amount
    self.totalSupply += amount
    log IERC20.Transfer(sender=empty(address), receiver=to, value=amount)


@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @dev Moves tokens, then calls back.
    """
    self._transfer(msg.sender, to, amount)
    self._callback()
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    """
    @dev Moves tokens with allowance, then calls back.
    """
    allowed: uint256 = self.allowance[owner][msg.sender]
    if allowed != max_value(uint256):
        assert allowed >= amount, "erc20: insufficient allowance"
        self.allowance[owner][msg.sender] = allowed - amount
    self._transfer(owner, to, amount)
    self._callback()
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    """
    @dev Sets the caller's allowance.
    """
    self.allowance[msg.sender][spender] = amount
    log IERC20.Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@internal
def _transfer(owner: address, to: address, amount: uint256):
    assert self.balanceOf[owner] >= amount, "erc20: insufficient balance"
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=owner, receiver=to, value=amount)


@internal
def _callback():
    if self.target == empty(address):
        return
    self.attempts += 1
    success: bool = False
    response: Bytes[256] = b""
    success, response = raw_call(self.target, self.payload, max_outsize=256, revert_on_failure=False)
    if success:
        self.successes += 1
    self.last_response = response
