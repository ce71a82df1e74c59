# pragma version ~=0.4.3
"""
@title Mock ERC-20 collateral token (devnet and tests only)
@custom:contract-name MockERC20
@license GNU Affero General Public License v3.0 only
@notice A plain ERC-20 with configurable decimals and an open `mint`.
        Never deploy it where real value is at stake.
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


@deploy
def __init__(name_: String[64], symbol_: String[32], decimals_: uint8):
    """
    @dev Sets name, symbol and decimals; no initial supply.
    """
    self.name = name_
    self.symbol = symbol_
    self.decimals = decimals_


@external
def transfer(to: address, amount: uint256) -> bool:
    """
    @dev Moves `amount` from the caller to `to`.
    """
    self._transfer(msg.sender, to, amount)
    return True


@external
def transferFrom(owner: address, to: address, amount: uint256) -> bool:
    """
    @dev Moves `amount` from `owner` to `to` using the caller's allowance.
    """
    allowed: uint256 = self.allowance[owner][msg.sender]
    if allowed != max_value(uint256):
        assert allowed >= amount, "erc20: insufficient allowance"
        self.allowance[owner][msg.sender] = allowed - amount
    self._transfer(owner, to, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    """
    @dev Sets the caller's allowance for `spender`.
    """
    self.allowance[msg.sender][spender] = amount
    log IERC20.Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def mint(to: address, amount: uint256):
    """
    @dev Creates `amount` tokens for `to`; anyone may call (test token).
    """
    self.balanceOf[to] += amount
    self.totalSupply += amount
    log IERC20.Transfer(sender=empty(address), receiver=to, value=amount)


@internal
def _transfer(owner: address, to: address, amount: uint256):
    assert self.balanceOf[owner] >= amount, "erc20: insufficient balance"
    self.balanceOf[owner] -= amount
    self.balanceOf[to] += amount
    log IERC20.Transfer(sender=owner, receiver=to, value=amount)
