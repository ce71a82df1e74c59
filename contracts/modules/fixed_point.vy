# pragma version ~=0.4.3
"""
@title Fixed-point helpers shared by every Dynamic Margin contract
@custom:contract-name fixed_point
@license GNU Affero General Public License v3.0 only
@notice WAD (1e18) fixed point and the rounding helpers of the project,
        defined once. Every requirement rounds up and every payout down,
        against the account being margined; each helper says which way it
        rounds.
"""


WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18


@pure
@internal
def _ceil_div(a: uint256, b: uint256) -> uint256:
    """
    @dev ceil(a / b) for b > 0.
    """
    if a == 0:
        return 0
    # a >= 1 and b >= 1, so a - 1 cannot underflow and the quotient + 1 cannot overflow.
    return unsafe_add(unsafe_div(unsafe_sub(a, 1), b), 1)


@pure
@internal
def _ceil_mul(x: uint256, y: uint256) -> uint256:
    """
    @dev ceil(x * y / WAD).
    """
    return self._ceil_div(x * y, WAD)


@pure
@internal
def _floor_div(x: int256, d: int256) -> int256:
    """
    @dev floor(x / d) for d > 0 (the EVM's signed division truncates toward zero).
    """
    # d > 0: no division by zero and no min_value(int256) / -1 overflow;
    # |q * d| <= |x|, and q - 1 > min_value(int256) since |q| < |x| / d + 1.
    q: int256 = unsafe_div(x, d)
    if x < 0 and unsafe_mul(q, d) != x:
        q = unsafe_sub(q, 1)
    return q


@pure
@internal
def _ceil_div_signed(x: int256, d: int256) -> int256:
    """
    @dev ceil(x / d) for d > 0.
    """
    # As in `_floor_div`: no overflow for d > 0.
    q: int256 = unsafe_div(x, d)
    if x > 0 and unsafe_mul(q, d) != x:
        q = unsafe_add(q, 1)
    return q
