# pragma version ~=0.4.3
"""
@title The registry's time rules, shared by the registry and the engine
@custom:contract-name margin_rules
@license GNU Affero General Public License v3.0 only
@notice Pure functions of a market's last update and guardrails, so that
        the registry's views and the engine's copy of each market agree to
        the wei (`offchain/protocol/margin_math.py` mirrors them):

        - fresh (now - updated_at <= heartbeat): the target, except during
          an increase ramp, when it moves linearly (rounded up) from
          `ramp_from` to the target over `increase_ramp` seconds;
        - stale: max(stale, target * (1 - max_decrease) ** n) with
          n = (now - updated_at - heartbeat) // max(min_decrease_interval, 1):
          a silent keeper never lowers margin faster than a live one could;
        - funding: the signed rate while fresh, then decaying linearly to
          zero over one more heartbeat, zero after that.
"""

from . import fixed_point

WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
# Enough squarings for any exponent below 2**40 (times are below 2**40).
POW_BITS: constant(uint256) = 40


@pure
@internal
def _fresh_multiplier(target: uint256, ramp_from: uint256, elapsed: uint256, ramp: uint256) -> uint256:
    """
    @dev The multiplier `elapsed` seconds after an update that set `target`
         while `ramp_from` was in force: the straight line over `ramp`
         seconds, rounded up (a ramping requirement never lags the line).
    """
    if ramp_from >= target or elapsed >= ramp:
        return target
    # elapsed < ramp here, so ramp > 0.
    return ramp_from + fixed_point._ceil_div((target - ramp_from) * elapsed, ramp)


@pure
@internal
def _stale_multiplier(
    target: uint256, stale: uint256, max_decrease: uint256, interval: uint256, since_heartbeat: uint256
) -> uint256:
    """
    @dev max(stale, target * (1 - max_decrease) ** n), n = since_heartbeat //
         max(interval, 1), by squaring with every product rounded up (the
         decay never runs ahead of the exact one). `target` 0 (no update
         yet) gives `stale`.
    """
    decayed: uint256 = target
    if decayed <= stale:
        return stale
    steps: uint256 = since_heartbeat // max(interval, 1)
    base: uint256 = WAD - max_decrease
    for i: uint256 in range(POW_BITS):
        if steps == 0 or decayed <= stale:
            break
        if steps & 1 == 1:
            decayed = fixed_point._ceil_div(decayed * base, WAD)
        steps = steps >> 1
        if steps != 0:
            base = fixed_point._ceil_div(base * base, WAD)
    return max(decayed, stale)


@pure
@internal
def _funding_in_force(rate: int256, updated_at: uint256, heartbeat: uint256, now: uint256) -> int256:
    """
    @dev The funding rate at `now`: `rate` while fresh, then linear to zero
         over one more heartbeat (truncated toward zero); zero after that
         and before any update.
    """
    if updated_at == 0:
        return 0
    fresh_until: uint256 = updated_at + heartbeat
    if now <= fresh_until:
        return rate
    if now >= fresh_until + heartbeat:
        return 0
    # |rate| < 2**47 and the time left < 2**32: no overflow; // truncates toward zero.
    return rate * convert(fresh_until + heartbeat - now, int256) // convert(heartbeat, int256)


@pure
@internal
def _funding_accrued(
    rate: int256, updated_at: uint256, heartbeat: uint256, start: uint256, finish: uint256, price: uint256
) -> int256:
    """
    @dev The funding index's growth over [start, finish] (USD per base
         unit, WAD) at `price`: price * integral of the rate in force,
             price * rate * (2H * fresh + (e - x0)**2 - (e - x1)**2) / (2H * WAD),
         fresh = the seconds of [start, finish] up to updated_at + H,
         [x0, x1] = the part of [start, finish] inside the decay
         (updated_at + H, e = updated_at + 2H]; truncated toward zero.
    """
    if updated_at == 0 or rate == 0 or finish <= start:
        return 0
    fresh_until: uint256 = updated_at + heartbeat
    ends: uint256 = fresh_until + heartbeat
    fresh: uint256 = 0
    if start < fresh_until:
        fresh = min(finish, fresh_until) - start
    decay: uint256 = 0
    x0: uint256 = max(start, fresh_until)
    x1: uint256 = min(finish, ends)
    if x0 < x1:
        decay = (ends - x0) * (ends - x0) - (ends - x1) * (ends - x1)
    seconds2: uint256 = 2 * heartbeat * fresh + decay
    # |rate| < 2**47, seconds2 < 2**75 (fresh < 2**40, H and x1 - x0 below
    # 2**32), price < 2**128: the product is below 2**250.
    return rate * convert(seconds2, int256) * convert(price, int256) // convert(2 * heartbeat * WAD, int256)
