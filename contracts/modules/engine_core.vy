# pragma version ~=0.4.3
"""
@title The margin engine's account maths
@custom:contract-name engine_core
@license GNU Affero General Public License v3.0 only
@notice Prices, funding, margin requirements and position changes over the
        storage of `engine_state`; shared by `MarginEngine` (health views) and
        its parts `EngineTrades`, `EngineLiquidations` and `EngineGovernance`.
        `offchain/protocol/engine_math.py` mirrors every formula to the wei.

        Per position i (every rounding against the account):
            value_i    = floor(s_i * p_i / WAD)
            owed_i     = ceil(s_i * (index_i - snapshot_i) / WAD)   (funding)
            N_i        = ceil(|s_i| * p_i / WAD)
            m_i        = min(N_i, ceil(S_i(N_i) * mult_i / WAD**2))
            im_i       = min(N_i, ceil(ceil(S_i(N_i) * imult_i / WAD**2) * ratio_i / WAD))
            reserve_i  = ceil(N_i * payer_rate_i * reserve_seconds_i / WAD)  (rate in WAD per second)
        with S the registry's tier sum, mult_i the multiplier in force times
        the account's class multiplier (rounded up; a discount never below
        the market's minimum multiplier), imult_i the same at
        max(multiplier, target), payer_rate_i the funding rate in force when
        the position pays it (longs when positive), else 0.
            equity      = collateral + sum_i (value_i - open_notional_i - owed_i)
            T = sum_i m_i,  T_I = sum_i im_i,  R = sum_i reserve_i
        Portfolio margin applies to a cross account with two or more
        positions, all in one scenario group whose scenarios are fresh:
            loss_k = ceil(-sum_i s_i * p_i * z_ik / (WAD * 10_000))
            L = max(0, max_k loss_k)
            P = max(L + ceil(c * T / WAD), ceil(phi * T / WAD))
            maintenance = min(T, P) + R,  initial = min(T_I, ceil(P * r_g / WAD)) + R
        otherwise maintenance = T + R and initial = T_I + R.
"""

from ethereum.ercs import IERC20Detailed

from ..interfaces import IMarginEngine
from . import engine_state
from . import fixed_point
from . import margin_rules

uses: engine_state


WAD: constant(uint256) = 10**18
IWAD: constant(int256) = 10**18
# Markets per subaccount; bounds every loop over an account.
MAX_POSITIONS: constant(uint256) = 8
MAX_TIERS: constant(uint256) = 8
MAX_SCENARIOS: constant(uint256) = 16
MAX_MARKET_ID: constant(uint256) = 2**24 - 1
# Scenario shocks are in basis points.
BPS: constant(int256) = 10_000
# Two rolling 30-day buckets of traded notional.
VOLUME_WINDOW: constant(uint256) = 30 * 86400
# The insurance fund is the engine's own subaccount 0.
INSURANCE_SUBACCOUNT: constant(uint256) = 0
# Partial liquidation: target (1 + 10%) x maintenance after the penalty.
LIQUIDATION_BUFFER: constant(uint256) = 10**17
# Below 50% of maintenance the whole position may be liquidated.
DEEP_UNDERWATER: constant(uint256) = 5 * 10**17
# A remainder worth less than 10 USD is closed with the rest.
DUST_NOTIONAL: constant(uint256) = 10 * 10**18
# The partial close is searched on a grid of 1/65,536 of the position.
CLOSE_GRID: constant(uint256) = 2**16
CLOSE_STEPS: constant(uint256) = 16

MASK_5: constant(uint256) = 2**5 - 1
MASK_8: constant(uint256) = 2**8 - 1
MASK_16: constant(uint256) = 2**16 - 1
MASK_24: constant(uint256) = 2**24 - 1
MASK_32: constant(uint256) = 2**32 - 1
MASK_40: constant(uint256) = 2**40 - 1
MASK_48: constant(uint256) = 2**48 - 1
MASK_64: constant(uint256) = 2**64 - 1
MASK_96: constant(uint256) = 2**96 - 1
MASK_112: constant(uint256) = 2**112 - 1
MASK_128: constant(uint256) = 2**128 - 1
MASK_160: constant(uint256) = 2**160 - 1
MASK_192: constant(uint256) = 2**192 - 1
BIAS_47: constant(int256) = 2**47
BIAS_95: constant(int256) = 2**95
BIAS_127: constant(int256) = 2**127

LISTED_BIT: constant(uint256) = 1 << 255

# Feed read status.
PRICE_OK: constant(uint256) = 0
PRICE_INVALID: constant(uint256) = 1
PRICE_STALE: constant(uint256) = 2


struct Leg:
    market_id: uint256
    size: int256
    open_notional: int256
    price: uint256
    notional: uint256
    mult: uint256
    maintenance: uint256
    initial: uint256
    reserve_rate: uint256
    reserve: uint256
    group: uint256
    shocks: uint256


struct Account:
    legs: DynArray[Leg, MAX_POSITIONS]
    cash: int256
    equity: int256
    maintenance: uint256
    initial: uint256
    tiered: uint256
    group: uint256


# Packed fields


@pure
@internal
def _feed_of(oracle: uint256) -> address:
    return convert(oracle & MASK_160, address)


@pure
@internal
def _group_of(oracle: uint256) -> uint256:
    return (oracle >> 197) & MASK_8


@pure
@internal
def _reserve_seconds_of(oracle: uint256) -> uint256:
    return (oracle >> 205) & MASK_32


@pure
@internal
def _index_of(fw: uint256) -> int256:
    return convert(fw & MASK_96, int256) - BIAS_95


@pure
@internal
def _pack_funding(index: int256, touch: uint256, price: uint256, price_time: uint256) -> uint256:
    """
    @dev The funding word; the index must stay within +-2**95 (USD 4e10 of
         cumulative funding per base unit).
    """
    assert index > -BIAS_95 and index < BIAS_95, "engine: funding index out of range"
    return convert(index + BIAS_95, uint256) | (touch << 96) | (price << 128) | (price_time << 224)


@pure
@internal
def _rate_of(rw: uint256) -> int256:
    return convert((rw >> 168) & MASK_48, int256) - BIAS_47


@pure
@internal
def _pack_risk(target: uint256, ramp_from: uint256, updated_at: uint256, rate: int256, heartbeat: uint256) -> uint256:
    return (
        target
        | (ramp_from << 64)
        | (updated_at << 128)
        | (convert(rate + BIAS_47, uint256) << 168)
        | (heartbeat << 216)
    )


@pure
@internal
def _market_at(word: uint256, i: uint256) -> uint256:
    return (word >> (24 * i)) & MASK_24


@pure
@internal
def _unpack_size(packed: uint256) -> int256:
    if packed == 0:
        return 0
    return convert(packed >> 128, int256) - BIAS_127


@pure
@internal
def _unpack_notional(packed: uint256) -> int256:
    if packed == 0:
        return 0
    return convert(packed & MASK_128, int256) - BIAS_127


@pure
@internal
def _pack_position(size: int256, notional: int256) -> uint256:
    if size == 0:
        return 0
    assert size > -BIAS_127 and size < BIAS_127, "engine: size overflow"
    assert notional > -BIAS_127 and notional < BIAS_127, "engine: notional overflow"
    return (convert(size + BIAS_127, uint256) << 128) | convert(notional + BIAS_127, uint256)


# Prices


@view
@internal
def _read_feed(oracle: uint256) -> (uint256, uint256, uint256):
    """
    @dev Reads the feed; never reverts. Returns (WAD price, feed time,
         status): OK when the call succeeds, the answer is positive and its
         time is neither in the future nor older than the max age; STALE when
         only the age is wrong; INVALID otherwise (price 0).
    """
    success: bool = False
    response: Bytes[160] = b""
    success, response = raw_call(
        self._feed_of(oracle), method_id("latestRoundData()"), max_outsize=160, is_static_call=True, revert_on_failure=False
    )
    if not success or len(response) != 160:
        return 0, 0, PRICE_INVALID
    answer: int256 = extract32(response, 32, output_type=int256)
    updated_at: uint256 = extract32(response, 96, output_type=uint256)
    if answer <= 0 or answer > convert(MASK_96, int256) or updated_at > block.timestamp:
        return 0, 0, PRICE_INVALID
    # answer < 2**96 and the scale is at most 10**18 < 2**60: no overflow.
    price: uint256 = unsafe_mul(convert(answer, uint256), pow_mod256(10, (oracle >> 192) & MASK_5))
    if price > MASK_96 or updated_at > MASK_32:
        return 0, 0, PRICE_INVALID
    if block.timestamp - updated_at > (oracle >> 160) & MASK_32:
        return price, updated_at, PRICE_STALE
    return price, updated_at, PRICE_OK


@view
@internal
def _mark_price(oracle: uint256, fw: uint256) -> (uint256, uint256, uint256):
    """
    @dev The price the engine uses: the fresh feed answer; otherwise the
         fresher (by feed time) of the feed's stale answer and the last good
         price stored at the market's last touch. Returns (price, feed
         time, feed status).
    """
    price: uint256 = 0
    time: uint256 = 0
    status: uint256 = PRICE_OK
    price, time, status = self._read_feed(oracle)
    if status == PRICE_OK:
        return price, time, status
    last: uint256 = (fw >> 128) & MASK_96
    last_time: uint256 = fw >> 224
    if status == PRICE_STALE and (time >= last_time or last == 0):
        return price, time, status
    assert last != 0, "engine: no price"
    return last, last_time, status


@pure
@internal
def _assert_fresh(status: uint256):
    assert status != PRICE_STALE, "engine: stale price"
    assert status == PRICE_OK, "engine: invalid price"


@view
@internal
def _assert_inside_bounds(market_id: uint256, price: uint256):
    bounds: uint256 = engine_state.price_bounds[market_id]
    if bounds != 0:
        assert price > bounds & MASK_128 and price < bounds >> 128, "engine: price at feed bound"


# Funding


@view
@internal
def _index_now(fw: uint256, rw: uint256) -> int256:
    """
    @dev The funding index at `block.timestamp`: the stored index plus the
         integral of the registry's rate in force since the last touch, at
         the last good price (`margin_rules._funding_accrued`).
    """
    return self._index_of(fw) + margin_rules._funding_accrued(
        self._rate_of(rw),
        (rw >> 128) & MASK_40,
        rw >> 216,
        (fw >> 96) & MASK_32,
        block.timestamp,
        (fw >> 128) & MASK_96,
    )


@internal
def _accrue(market_id: uint256) -> int256:
    """
    @dev Brings the funding index to now and stores the freshest price known
         (the fresh feed answer, or a stale one newer than the stored price)
         as the price of the next interval. Returns the index.
    """
    fw: uint256 = engine_state.funding[market_id]
    rw: uint256 = engine_state.risk[market_id]
    index: int256 = self._index_now(fw, rw)
    price: uint256 = 0
    time: uint256 = 0
    status: uint256 = PRICE_OK
    price, time, status = self._read_feed(engine_state.oracle[market_id])
    last_time: uint256 = fw >> 224
    if status == PRICE_INVALID or (status == PRICE_STALE and time <= last_time):
        price = (fw >> 128) & MASK_96
        time = last_time
    engine_state.funding[market_id] = self._pack_funding(index, block.timestamp, price, time)
    log IMarginEngine.FundingAccrued(
        market_id=market_id,
        index=index,
        rate=margin_rules._funding_in_force(self._rate_of(rw), (rw >> 128) & MASK_40, rw >> 216, block.timestamp),
        price=price,
    )
    return index


# Margin of one position


@view
@internal
def _multiplier(market_id: uint256, rw: uint256, ramp: uint256) -> uint256:
    """
    @dev The registry's multiplier in force for maintenance (`margin_rules`).
    """
    updated_at: uint256 = (rw >> 128) & MASK_40
    heartbeat: uint256 = rw >> 216
    if updated_at != 0 and block.timestamp - updated_at <= heartbeat:
        return margin_rules._fresh_multiplier(rw & MASK_64, (rw >> 64) & MASK_64, block.timestamp - updated_at, ramp)
    rules: uint256 = engine_state.rules[market_id]
    since: uint256 = 0
    if updated_at != 0:
        since = block.timestamp - updated_at - heartbeat
    return margin_rules._stale_multiplier(rw & MASK_64, rules & MASK_64, (rules >> 64) & MASK_64, (rules >> 128) & MASK_32, since)


@view
@internal
def _base_margin(market_id: uint256, notional: uint256, t0: uint256) -> uint256:
    """
    @dev S(N) = sum_i rate_i * clamp(N - floor_i, 0, floor_{i+1} - floor_i),
         full precision (WAD * WAD units).
    """
    total: uint256 = 0
    word: uint256 = t0
    tier_floor: uint256 = 0
    for i: uint256 in range(MAX_TIERS):
        next_floor: uint256 = word & MASK_128
        # notional > tier_floor here (else the previous tier broke out); the rate is
        # below 2**64 and the slice below 2**128: eight products stay below 2**195.
        total = unsafe_add(total, unsafe_mul((word >> 128) & MASK_64, unsafe_sub(min(notional, next_floor), tier_floor)))
        if notional <= next_floor or i + 1 == MAX_TIERS:
            break
        tier_floor = next_floor
        word = engine_state.tiers[market_id][i + 1]
    return total


@pure
@internal
def _with_class(multiplier: uint256, class_mult: uint256, min_mult: uint256) -> uint256:
    """
    @dev A multiplier times the account's class multiplier (rounded up); a
         discount never below `min_mult` (the market's minimum multiplier).
    """
    if class_mult == WAD:
        return multiplier
    m: uint256 = fixed_point._ceil_mul(multiplier, class_mult)
    if class_mult < WAD:
        return max(m, min_mult)
    return m


@pure
@internal
def _maintenance_of(base: uint256, mult: uint256, notional: uint256) -> uint256:
    return min(notional, fixed_point._ceil_div(base * mult, WAD * WAD))


@view
@internal
def _class_multiplier(word: uint256) -> uint256:
    """
    @dev The account's class multiplier (WAD) from its account word: WAD for
         the default class or once the class has expired.
    """
    class_id: uint256 = (word >> 192) & 7
    if class_id == 0 or block.timestamp > (word >> 195) & MASK_40:
        return WAD
    m: uint256 = engine_state.class_multiplier[class_id]
    if m == 0:
        return WAD
    return m


@view
@internal
def _load(owner: address, subaccount: uint256, strict: bool, want_initial: bool) -> Account:
    """
    @dev Every position of a subaccount at mark prices (fresh prices when
         `strict`), its equity and its requirements (module docstring). The
         hot path of every health check: fields are unpacked inline (layouts
         in `engine_state`), and `unsafe_*` is used where the bounds of the
         packed fields rule out overflow.
    """
    acct: Account = empty(Account)
    acct.cash = engine_state.collateral[owner][subaccount]
    word: uint256 = engine_state.account[owner][subaccount]
    class_mult: uint256 = self._class_multiplier(word)
    group: uint256 = MASK_8 + 1
    tiered: uint256 = 0
    tiered_initial: uint256 = 0
    reserve: uint256 = 0
    value: int256 = 0
    for i: uint256 in range(MAX_POSITIONS):
        market_id: uint256 = (word >> (24 * i)) & MASK_24
        if market_id == 0:
            break
        leg: Leg = empty(Leg)
        leg.market_id = market_id
        packed: uint256 = engine_state.positions[owner][subaccount][market_id]
        # Both halves lie in (-2**127, 2**127) once the bias is removed.
        leg.size = unsafe_sub(convert(packed >> 128, int256), BIAS_127)
        leg.open_notional = unsafe_sub(convert(packed & MASK_128, int256), BIAS_127)
        oracle: uint256 = engine_state.oracle[market_id]
        fw: uint256 = engine_state.funding[market_id]
        rw: uint256 = engine_state.risk[market_id]
        t0: uint256 = engine_state.tiers[market_id][0]
        price: uint256 = 0
        time: uint256 = 0
        status: uint256 = PRICE_OK
        price, time, status = self._read_feed(oracle)
        if status != PRICE_OK:
            price, time, status = self._mark_price(oracle, fw)
        leg.price = price
        if strict:
            self._assert_fresh(status)
            self._assert_inside_bounds(market_id, price)
        # Unpaid funding, rounded against the account.
        index: int256 = self._index_of(fw)
        if (rw >> 168) & MASK_48 != convert(BIAS_47, uint256):  # a nonzero funding rate
            index += margin_rules._funding_accrued(
                self._rate_of(rw), (rw >> 128) & MASK_40, rw >> 216, (fw >> 96) & MASK_32, block.timestamp, (fw >> 128) & MASK_96
            )
        acct.cash -= fixed_point._ceil_div_signed(
            leg.size * (index - engine_state.funding_snapshot[owner][subaccount][market_id]), IWAD
        )
        # |size| < 2**127 and price < 2**96: the products are below 2**223.
        signed_price: int256 = convert(price, int256)
        value = unsafe_add(value, unsafe_sub(fixed_point._floor_div(unsafe_mul(leg.size, signed_price), IWAD), leg.open_notional))
        leg.notional = fixed_point._ceil_div(unsafe_mul(convert(abs(leg.size), uint256), price), WAD)
        base: uint256 = self._base_margin(market_id, leg.notional, t0)
        updated_at: uint256 = (rw >> 128) & MASK_40
        m: uint256 = rw & MASK_64
        if updated_at == 0 or block.timestamp - updated_at > rw >> 216:
            m = self._multiplier(market_id, rw, 0)
        elif (rw >> 64) & MASK_64 < m:
            m = margin_rules._fresh_multiplier(m, (rw >> 64) & MASK_64, block.timestamp - updated_at, (t0 >> 192) & MASK_32)
        leg.mult = m
        min_mult: uint256 = 0
        if class_mult != WAD:
            if class_mult < WAD:
                min_mult = (engine_state.rules[market_id] >> 160) & MASK_64
            leg.mult = self._with_class(m, class_mult, min_mult)
        # base < 2**60 * 2**128 and the multiplier < 2**64 (2**66 with a class): below 2**254.
        leg.maintenance = min(leg.notional, fixed_point._ceil_div(unsafe_mul(base, leg.mult), WAD * WAD))
        tiered = unsafe_add(tiered, leg.maintenance)
        if want_initial:
            m_initial: uint256 = self._with_class(max(m, rw & MASK_64), class_mult, min_mult)
            leg.initial = min(
                leg.notional,
                fixed_point._ceil_mul(fixed_point._ceil_div(unsafe_mul(base, m_initial), WAD * WAD), engine_state.initial_ratio[market_id]),
            )
            tiered_initial = unsafe_add(tiered_initial, leg.initial)
        # Expected funding over the reserve horizon, for the side that pays.
        reserve_seconds: uint256 = (oracle >> 205) & MASK_32
        if reserve_seconds != 0:
            rate: int256 = margin_rules._funding_in_force(self._rate_of(rw), updated_at, rw >> 216, block.timestamp)
            if (rate > 0 and leg.size > 0) or (rate < 0 and leg.size < 0):
                leg.reserve_rate = convert(abs(rate), uint256) * reserve_seconds
                leg.reserve = fixed_point._ceil_mul(leg.notional, leg.reserve_rate)
                reserve += leg.reserve
        leg.group = (oracle >> 197) & MASK_8
        if group == MASK_8 + 1:
            group = leg.group
        elif group != leg.group:
            group = 0
        acct.legs.append(leg)
    acct.equity = acct.cash + value
    acct.tiered = tiered
    acct.maintenance = tiered + reserve
    acct.initial = tiered_initial + reserve
    if len(acct.legs) < 2 or group == 0:
        return acct
    # Portfolio credit when every position lies in one group with fresh scenarios.
    acct.group = group
    gw: uint256 = self._fresh_group(group)
    if gw == 0:
        return acct
    for i: uint256 in range(MAX_POSITIONS):
        if i >= len(acct.legs):
            break
        acct.legs[i].shocks = engine_state.shocks[acct.legs[i].market_id]
    maintenance: uint256 = 0
    initial: uint256 = 0
    maintenance, initial = self._portfolio(tiered, tiered_initial, self._worst_loss_of(acct.legs), gw)
    acct.maintenance = maintenance + reserve
    acct.initial = initial + reserve
    return acct


@pure
@internal
def _worst_loss_of(legs: DynArray[Leg, MAX_POSITIONS]) -> uint256:
    """
    @dev L = max(0, max_k ceil(-sum_i s_i * p_i * z_ik / (WAD * 10_000))),
         over all 16 scenario slots (the registry keeps slots beyond the
         count at zero, which lose nothing). ceil is monotone, so the worst
         scenario's move is found first and divided once. The scenario loop
         is unrolled and each int16 is sign-extended with two shifts of the
         word read as int256 (`<<` to the top, arithmetic `>>` down): it runs
         in every health check of a portfolio.
    """
    m0: int256 = 0
    m1: int256 = 0
    m2: int256 = 0
    m3: int256 = 0
    m4: int256 = 0
    m5: int256 = 0
    m6: int256 = 0
    m7: int256 = 0
    m8: int256 = 0
    m9: int256 = 0
    m10: int256 = 0
    m11: int256 = 0
    m12: int256 = 0
    m13: int256 = 0
    m14: int256 = 0
    m15: int256 = 0
    for i: uint256 in range(MAX_POSITIONS):
        if i >= len(legs):
            break
        w: int256 = convert(convert(legs[i].shocks, bytes32), int256)
        # |s| < 2**127 and p < 2**96; |z| <= 2**15: each term is below 2**238
        # and a sum of eight below 2**241.
        sp: int256 = unsafe_mul(legs[i].size, convert(legs[i].price, int256))
        m0 = unsafe_add(m0, unsafe_mul(sp, (w << 240) >> 240))
        m1 = unsafe_add(m1, unsafe_mul(sp, (w << 224) >> 240))
        m2 = unsafe_add(m2, unsafe_mul(sp, (w << 208) >> 240))
        m3 = unsafe_add(m3, unsafe_mul(sp, (w << 192) >> 240))
        m4 = unsafe_add(m4, unsafe_mul(sp, (w << 176) >> 240))
        m5 = unsafe_add(m5, unsafe_mul(sp, (w << 160) >> 240))
        m6 = unsafe_add(m6, unsafe_mul(sp, (w << 144) >> 240))
        m7 = unsafe_add(m7, unsafe_mul(sp, (w << 128) >> 240))
        m8 = unsafe_add(m8, unsafe_mul(sp, (w << 112) >> 240))
        m9 = unsafe_add(m9, unsafe_mul(sp, (w << 96) >> 240))
        m10 = unsafe_add(m10, unsafe_mul(sp, (w << 80) >> 240))
        m11 = unsafe_add(m11, unsafe_mul(sp, (w << 64) >> 240))
        m12 = unsafe_add(m12, unsafe_mul(sp, (w << 48) >> 240))
        m13 = unsafe_add(m13, unsafe_mul(sp, (w << 32) >> 240))
        m14 = unsafe_add(m14, unsafe_mul(sp, (w << 16) >> 240))
        m15 = unsafe_add(m15, unsafe_mul(sp, (w << 0) >> 240))
    worst: int256 = 0
    worst = min(worst, m0)
    worst = min(worst, m1)
    worst = min(worst, m2)
    worst = min(worst, m3)
    worst = min(worst, m4)
    worst = min(worst, m5)
    worst = min(worst, m6)
    worst = min(worst, m7)
    worst = min(worst, m8)
    worst = min(worst, m9)
    worst = min(worst, m10)
    worst = min(worst, m11)
    worst = min(worst, m12)
    worst = min(worst, m13)
    worst = min(worst, m14)
    worst = min(worst, m15)
    return convert(fixed_point._ceil_div_signed(-worst, IWAD * BPS), uint256)


@view
@internal
def _fresh_group(group_id: uint256) -> uint256:
    """
    @dev The scenario group's word when its scenarios are in force (set and
         not past their heartbeat), else 0: no portfolio credit.
    """
    if group_id == 0:
        return 0
    gw: uint256 = engine_state.group[group_id]
    if gw & MASK_5 == 0 or block.timestamp > (gw >> 5) & MASK_40:
        return 0
    return gw


@pure
@internal
def _shock(shocks: uint256, k: uint256) -> int256:
    """
    @dev Scenario k's price move of a market, int16 basis points.
    """
    z: int256 = convert((shocks >> (16 * k)) & MASK_16, int256)
    if z >= 2**15:
        z -= 2**16
    return z


@pure
@internal
def _scenario_moves(legs: DynArray[Leg, MAX_POSITIONS], count: uint256, skip: uint256) -> DynArray[int256, MAX_SCENARIOS]:
    """
    @dev For each scenario k, sum_i s_i * p_i * z_ik over the legs except
         leg `skip` (WAD * WAD * bps units; a gain is positive).
    """
    moves: DynArray[int256, MAX_SCENARIOS] = []
    for k: uint256 in range(MAX_SCENARIOS):
        if k >= count:
            break
        move: int256 = 0
        for i: uint256 in range(MAX_POSITIONS):
            if i >= len(legs):
                break
            if i != skip:
                # |s| < 2**127, p < 2**96, |z| < 2**15: each product is below 2**238.
                move += legs[i].size * convert(legs[i].price, int256) * self._shock(legs[i].shocks, k)
        moves.append(move)
    return moves


@pure
@internal
def _portfolio(tiered: uint256, tiered_initial: uint256, worst: uint256, gw: uint256) -> (uint256, uint256):
    """
    @dev P = max(L + ceil(c * T), ceil(phi * T)); (min(T, P), min(T_I, ceil(P * r_g))).
    """
    portfolio: uint256 = max(
        worst + fixed_point._ceil_mul(tiered, (gw >> 45) & MASK_64),
        fixed_point._ceil_mul(tiered, (gw >> 109) & MASK_64),
    )
    return min(tiered, portfolio), min(tiered_initial, fixed_point._ceil_mul(portfolio, (gw >> 173) & MASK_64))


@view
@internal
def _fund_equity() -> int256:
    """
    @dev The insurance fund's equity: its collateral plus the unrealised PnL
         of the positions it took over in backstops, minus their unpaid
         funding, at mark prices (rounded down, as an account's).
    """
    equity: int256 = engine_state.collateral[self][INSURANCE_SUBACCOUNT]
    for market_id: uint256 in engine_state.fund_markets:
        packed: uint256 = engine_state.positions[self][INSURANCE_SUBACCOUNT][market_id]
        size: int256 = self._unpack_size(packed)
        fw: uint256 = engine_state.funding[market_id]
        price: uint256 = 0
        time: uint256 = 0
        status: uint256 = PRICE_OK
        price, time, status = self._mark_price(engine_state.oracle[market_id], fw)
        owed: int256 = fixed_point._ceil_div_signed(
            size * (self._index_now(fw, engine_state.risk[market_id]) - engine_state.funding_snapshot[self][INSURANCE_SUBACCOUNT][market_id]),
            IWAD,
        )
        equity += fixed_point._floor_div(size * convert(price, int256), IWAD) - self._unpack_notional(packed) - owed
    return equity


@view
@internal
def _deficit() -> uint256:
    """
    @dev What deleveraging must recover: the recorded bad debt plus the
         insurance fund's negative equity.
    """
    fund: int256 = self._fund_equity()
    if fund < 0:
        return engine_state.bad_debt + convert(-fund, uint256)
    return engine_state.bad_debt


# Position changes


@internal
def _apply(owner: address, subaccount: uint256, market_id: uint256, delta: int256, price: uint256, index: int256) -> (int256, int256):
    """
    @dev Settles the position's funding, then changes its size by `delta` at
         `price`: the account's cash moves by -ceil(delta * price) when
         buying, +floor(|delta| * price) when selling; realised PnL goes to
         collateral. Maintains the market lists and the active list.
    """
    packed: uint256 = engine_state.positions[owner][subaccount][market_id]
    a: int256 = self._unpack_size(packed)
    notional: int256 = self._unpack_notional(packed)
    collateral: int256 = engine_state.collateral[owner][subaccount]
    snapshot: int256 = engine_state.funding_snapshot[owner][subaccount][market_id]
    if a != 0 and snapshot != index:
        collateral -= fixed_point._ceil_div_signed(a * (index - snapshot), IWAD)
    if snapshot != index:
        engine_state.funding_snapshot[owner][subaccount][market_id] = index
    value: uint256 = convert(abs(delta), uint256) * price
    cash: int256 = 0
    if delta > 0:
        cash = -convert(fixed_point._ceil_div(value, WAD), int256)
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
            opened = convert(fixed_point._ceil_div(convert(b, uint256) * price, WAD), int256)
        else:
            opened = -convert(convert(-b, uint256) * price // WAD, int256)
        collateral += cash - notional + opened
        notional = opened
    engine_state.positions[owner][subaccount][market_id] = self._pack_position(b, notional)
    engine_state.collateral[owner][subaccount] = collateral
    if a == 0:
        self._add_market(owner, subaccount, market_id)
    elif b == 0:
        self._remove_market(owner, subaccount, market_id)
    return a, b


@internal
def _add_market(owner: address, subaccount: uint256, market_id: uint256):
    if owner == self:
        assert len(engine_state.fund_markets) < 32, "engine: insurance fund holds 32 markets"
        engine_state.fund_markets.append(market_id)
        return
    isolated: uint256 = engine_state.isolated_market[owner][subaccount]
    assert isolated == 0 or isolated == market_id, "engine: isolated"
    word: uint256 = engine_state.account[owner][subaccount]
    if word & MASK_192 == 0:
        engine_state.active[engine_state.active_count] = IMarginEngine.Subaccount(owner=owner, subaccount=subaccount)
        engine_state.active_count += 1
        engine_state.active_index[owner][subaccount] = engine_state.active_count
    for i: uint256 in range(MAX_POSITIONS):
        if self._market_at(word, i) == 0:
            engine_state.account[owner][subaccount] = word | (market_id << (24 * i))
            return
    raise "engine: too many positions"



@internal
def _remove_market(owner: address, subaccount: uint256, market_id: uint256):
    if owner == self:
        n: uint256 = len(engine_state.fund_markets)
        for i: uint256 in range(32):
            if i >= n:
                break
            if engine_state.fund_markets[i] == market_id:
                engine_state.fund_markets[i] = engine_state.fund_markets[n - 1]
                engine_state.fund_markets.pop()
                return
        return
    word: uint256 = engine_state.account[owner][subaccount]
    found: uint256 = MAX_POSITIONS
    last: uint256 = 0
    for i: uint256 in range(MAX_POSITIONS):
        entry: uint256 = self._market_at(word, i)
        if entry == 0:
            break
        if entry == market_id:
            found = i
        last = i
    # Swap the last entry into the found slot and clear the last slot.
    last_id: uint256 = self._market_at(word, last)
    word = word & ~(MASK_24 << (24 * last))
    if found != last:
        word = (word & ~(MASK_24 << (24 * found))) | (last_id << (24 * found))
    engine_state.account[owner][subaccount] = word
    if word & MASK_192 == 0:
        position: uint256 = engine_state.active_index[owner][subaccount]
        count: uint256 = engine_state.active_count
        if position != count:
            moved: IMarginEngine.Subaccount = engine_state.active[count - 1]
            engine_state.active[position - 1] = moved
            engine_state.active_index[moved.owner][moved.subaccount] = position
        engine_state.active[count - 1] = empty(IMarginEngine.Subaccount)
        engine_state.active_count = count - 1
        engine_state.active_index[owner][subaccount] = 0


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


@internal
def _move(
    market_id: uint256, to_owner: address, to_sub: uint256, from_owner: address, from_sub: uint256, size: int256, price: uint256, index: int256
) -> (int256, int256):
    """
    @dev `size` moves from (from_owner, from_sub) to (to_owner, to_sub) at
         `price` (the receiver buys when size > 0); open interest follows.
         Returns the receiver's old and new size.
    """
    oi: uint256 = engine_state.open_interest[market_id]
    t_old: int256 = 0
    t_new: int256 = 0
    f_old: int256 = 0
    f_new: int256 = 0
    t_old, t_new = self._apply(to_owner, to_sub, market_id, size, price, index)
    f_old, f_new = self._apply(from_owner, from_sub, market_id, -size, price, index)
    new_oi: uint256 = self._new_oi(self._new_oi(oi, t_old, t_new), f_old, f_new)
    if new_oi != oi:
        engine_state.open_interest[market_id] = new_oi
    return t_old, t_new


# Trading activity


@view
@internal
def _trailing_volume(word: uint256) -> uint256:
    """
    @dev Traded notional over the trailing 30 days, from two rolling
         buckets: current + previous * (time left in the current bucket's
         window) / window (rounded down).
    """
    epoch: uint256 = block.timestamp // VOLUME_WINDOW
    stored: uint256 = word & MASK_32
    current: uint256 = (word >> 32) & MASK_112
    previous: uint256 = word >> 144
    if stored + 1 == epoch:
        previous = current
        current = 0
    elif stored != epoch:
        return 0
    left: uint256 = VOLUME_WINDOW - block.timestamp % VOLUME_WINDOW
    return current + previous * left // VOLUME_WINDOW


@internal
def _add_volume(owner: address, notional: uint256):
    """
    @dev Adds a fill's notional to the owner's current 30-day bucket.
    """
    if owner == self:
        return
    word: uint256 = engine_state.volume[owner]
    epoch: uint256 = block.timestamp // VOLUME_WINDOW
    stored: uint256 = word & MASK_32
    current: uint256 = (word >> 32) & MASK_112
    previous: uint256 = word >> 144
    if stored + 1 == epoch:
        previous = current
        current = 0
    elif stored != epoch:
        previous = 0
        current = 0
    current = min(current + notional, MASK_112)
    engine_state.volume[owner] = epoch | (current << 32) | (previous << 144)


@internal
def _add_premium(market_id: uint256, notional: uint256, price: uint256, mark: uint256):
    """
    @dev Accumulates a fill's notional and notional x premium, premium =
         (fill - mark) / mark (WAD, rounded toward zero). The keeper reads the
         notional-weighted average premium over a window from two readings.
    """
    word: uint256 = engine_state.premium[market_id]
    weighted: int256 = self._signed_128(word)
    total: uint256 = word >> 128
    # |price - mark| <= band * mark and notional < 2**128: no overflow.
    premium: int256 = (convert(price, int256) - convert(mark, int256)) * IWAD // convert(mark, int256)
    weighted += convert(notional, int256) * premium // IWAD
    total += notional
    assert weighted > -BIAS_127 and weighted < BIAS_127 and total <= MASK_128, "engine: premium accumulator overflow"
    # The low 128 bits hold `weighted` in two's complement (an empty word is 0).
    engine_state.premium[market_id] = (convert(convert(weighted, bytes32), uint256) & MASK_128) | (total << 128)


@pure
@internal
def _signed_128(word: uint256) -> int256:
    """
    @dev The low 128 bits of `word` as a two's-complement int128.
    """
    raw: int256 = convert(word & MASK_128, int256)
    if raw >= BIAS_127:
        return raw - 2 * BIAS_127
    return raw


# Liquidation


@view
@internal
def _fee_rate(leg: Leg, fee: uint256) -> uint256:
    """
    @dev The liquidation fee, capped at the position's maintenance rate in
         force (m / N, rounded down): governance may lower a market's tiers
         below the fee after listing it.
    """
    if leg.notional == 0:
        return 0
    return min(fee, leg.maintenance * WAD // leg.notional)


@pure
@internal
def _penalty(closed: uint256, price: uint256, fee_rate: uint256, equity: int256) -> uint256:
    """
    @dev ceil(ceil(closed * price) * fee_rate), never more than the equity
         left minus one wei (closing at the mark moves equity by at most one
         wei of rounding), so the insurance fund never pays a liquidator.
    """
    if equity <= 1:
        return 0
    return min(fixed_point._ceil_mul(fixed_point._ceil_mul(closed, price), fee_rate), convert(equity - 1, uint256))


@view
@internal
def _maintenance_after(
    acct: Account, j: uint256, remaining: uint256, moves: DynArray[int256, MAX_SCENARIOS], gw: uint256, other_tiered: uint256, other_reserve: uint256
) -> uint256:
    """
    @dev The account's maintenance once leg `j` holds `remaining` base units
         (same side), everything else unchanged.
    """
    leg: Leg = acct.legs[j]
    notional: uint256 = fixed_point._ceil_mul(remaining, leg.price)
    base: uint256 = self._base_margin(leg.market_id, notional, engine_state.tiers[leg.market_id][0])
    tiered: uint256 = other_tiered + self._maintenance_of(base, leg.mult, notional)
    reserve: uint256 = other_reserve + fixed_point._ceil_mul(notional, leg.reserve_rate)
    if gw == 0:
        return tiered + reserve
    size: int256 = convert(remaining, int256)
    if leg.size < 0:
        size = -size
    worst: int256 = 0
    for k: uint256 in range(MAX_SCENARIOS):
        if k >= len(moves):
            break
        move: int256 = moves[k] + size * convert(leg.price, int256) * self._shock(leg.shocks, k)
        worst = max(worst, fixed_point._ceil_div_signed(-move, IWAD * BPS))
    maintenance: uint256 = 0
    initial: uint256 = 0
    maintenance, initial = self._portfolio(tiered, 0, convert(worst, uint256), gw)
    return maintenance + reserve


@view
@internal
def _closable(acct: Account, j: uint256, fee: uint256) -> uint256:
    """
    @dev The most of leg `j` one liquidation may close (base units). With E
         the equity, M the maintenance and pen(q) the penalty of closing q:
           - E < 50% of M: the whole position;
           - else the smallest q = ceil(|s| * k / 2**16), k found by a
             16-step bisection, with E - pen(q) >= ceil(1.1 * M(q)), M(q) the
             maintenance after the close (tiers, class, funding reserve and
             portfolio scenarios included); the whole position if even
             closing all of it does not get there;
           - the whole position if what would remain is worth less than
             10 USD.
         Closing reduces a tiered account's requirement faster than the
         penalty grows (the fee is below the rate in force), so there the
         bisection finds the smallest close on its grid; closing a hedge leg
         can raise a portfolio's requirement, where it finds a close that
         restores health, not always the smallest.
    """
    leg: Leg = acct.legs[j]
    abs_size: uint256 = convert(abs(leg.size), uint256)
    if acct.equity * IWAD < convert(acct.maintenance * DEEP_UNDERWATER, int256):
        return abs_size
    fee_rate: uint256 = self._fee_rate(leg, fee)
    gw: uint256 = self._fresh_group(acct.group)
    moves: DynArray[int256, MAX_SCENARIOS] = []
    if gw != 0:
        moves = self._scenario_moves(acct.legs, gw & MASK_5, j)
    other_tiered: uint256 = acct.tiered - leg.maintenance
    other_reserve: uint256 = 0
    for i: uint256 in range(MAX_POSITIONS):
        if i >= len(acct.legs):
            break
        if i != j:
            other_reserve += acct.legs[i].reserve
    lo: uint256 = 0
    hi: uint256 = CLOSE_GRID
    for step: uint256 in range(CLOSE_STEPS + 1):
        if hi - lo <= 1:
            break
        mid: uint256 = (lo + hi) // 2
        if step == 0:
            # First check that closing everything restores health at all.
            mid = CLOSE_GRID
        q: uint256 = fixed_point._ceil_div(abs_size * mid, CLOSE_GRID)
        left: int256 = acct.equity - convert(self._penalty(q, leg.price, fee_rate, acct.equity), int256)
        need: uint256 = fixed_point._ceil_mul(
            self._maintenance_after(acct, j, abs_size - q, moves, gw, other_tiered, other_reserve),
            WAD + LIQUIDATION_BUFFER,
        )
        restores: bool = left >= convert(need, int256)
        if step == 0:
            if not restores:
                return abs_size
            continue
        if restores:
            hi = mid
        else:
            lo = mid
    closable: uint256 = max(fixed_point._ceil_div(abs_size * hi, CLOSE_GRID), 1)
    if (abs_size - closable) * leg.price // WAD < DUST_NOTIONAL:
        return abs_size
    return closable


@view
@internal
def _listed(market_id: uint256) -> uint256:
    """
    @dev The market's oracle word; reverts for a market not listed.
    """
    oracle: uint256 = engine_state.oracle[market_id]
    assert oracle & LISTED_BIT != 0, "engine: unknown market"
    return oracle


@pure
@internal
def _leg_index(acct: Account, market_id: uint256) -> uint256:
    """
    @dev Where the account's position in `market_id` is; reverts without one.
    """
    for i: uint256 in range(MAX_POSITIONS):
        if i >= len(acct.legs):
            break
        if acct.legs[i].market_id == market_id:
            return i
    raise "engine: no position"
