# pragma version ~=0.4.3
"""
@title Storage of the margin engine
@custom:contract-name engine_state
@license GNU Affero General Public License v3.0 only
@notice Every storage variable of the margin engine, in one place, so that
        `MarginEngine` and its parts `EngineTrades`, `EngineLiquidations` and
        `EngineGovernance` (which run by delegatecall in the engine's
        storage) lay it out identically: all initialize this module, then
        `engine_core`, in the same order and declare no storage of their own (`tests/engine/test_layout.py` compares the layouts).

        Packing (one accessor per field lives in `engine_core`):
          oracle[m]    feed 160 | max_price_age 32 << 160 | feed decimals
                       exponent 5 << 192 | scenario group 8 << 197 |
                       funding reserve seconds 32 << 205 | listed 1 << 255
          funding[m]   index int96 + 2**95 | last touch 32 << 96 |
                       last good price 96 << 128 | its feed time 32 << 224
          risk[m]      (pushed by the registry) target 64 | ramp_from 64 << 64
                       | updated_at 40 << 128 | funding rate int48 + 2**47
                       << 168 | heartbeat 32 << 216
          tiers[m][i]  floor of tier i + 1 128 (2**128 - 1 for the last) |
                       rate of tier i 64 << 128 | increase ramp 32 << 192
                       (tier 0 only)
          rules[m]     stale multiplier 64 | max decrease 64 << 64 | decrease
                       interval 32 << 128 | min multiplier 64 << 160
          account[o][s] market ids 8 x 24 bits | class 3 << 192 | class
                       expiry 40 << 195
          volume[o]    epoch 32 | current 112 << 32 | previous 112 << 144
          premium[m]   cumulative notional x premium int128 + 2**127 |
                       cumulative notional 128 << 128
          group[g]     scenario count 5 | fresh until 40 << 5 | residual 64
                       << 45 | floor 64 << 109 | initial ratio 64 << 173
          shocks[m]    16 x int16 basis points (scenario k at bits 16k)
"""

from ..interfaces import IMarginEngine


# Markets

# @dev Market configuration as listed (spec struct).
market_config: public(HashMap[uint256, IMarginEngine.MarketConfig])
# @dev Feed, price age, decimals, scenario group, funding reserve horizon, listed bit.
oracle: HashMap[uint256, uint256]
# @dev Funding index, last touch, last good price and its feed time.
funding: HashMap[uint256, uint256]
# @dev The registry's last accepted update and the heartbeat, pushed by the registry.
risk: HashMap[uint256, uint256]
# @dev Tier schedule as (next floor, rate) words; tier 0 also holds the increase ramp.
tiers: HashMap[uint256, uint256[8]]
# @dev The stale fallback's parameters and the minimum multiplier.
rules: HashMap[uint256, uint256]
# @dev Initial margin as a multiple of maintenance (WAD), pushed by the registry.
initial_ratio: HashMap[uint256, uint256]
# @dev The feed aggregator's answer bounds in WAD: min (128 bits) | max << 128; 0: none set.
price_bounds: HashMap[uint256, uint256]
# @dev Open interest per market: total long size (WAD base units).
open_interest: HashMap[uint256, uint256]
# @dev Premium accumulators of fills against the mark price.
premium: HashMap[uint256, uint256]
# @dev Scenario shocks per market (16 x int16 basis points).
shocks: HashMap[uint256, uint256]
# @dev Scenario group parameters, pushed by the scenario registry.
group: HashMap[uint256, uint256]

# Accounts

# @dev Position per (owner, subaccount, market): (size + 2**127) << 128 | (open_notional + 2**127); 0 when flat.
positions: HashMap[address, HashMap[uint256, HashMap[uint256, uint256]]]
# @dev Funding index at the position's last settlement.
funding_snapshot: HashMap[address, HashMap[uint256, HashMap[uint256, int256]]]
# @dev Settled collateral (USD WAD) per subaccount; realised PnL, fees and funding land here.
collateral: HashMap[address, HashMap[uint256, int256]]
# @dev Market list and risk class of a subaccount.
account: HashMap[address, HashMap[uint256, uint256]]
# @dev The one market an isolated subaccount may trade (0: cross margin).
isolated_market: public(HashMap[address, HashMap[uint256, uint256]])
# @dev Trailing 30-day traded notional per owner, two rolling buckets.
volume: HashMap[address, uint256]
# @dev Maintenance multiplier of each risk class (WAD; 0: class not defined), pushed by the profile registry.
class_multiplier: HashMap[uint256, uint256]
# @dev Subaccounts with open positions (not the insurance fund), for bots.
active: HashMap[uint256, IMarginEngine.Subaccount]
# @dev Number of entries in `active`.
active_count: uint256
# @dev Position of a subaccount in `active`, plus one (0: absent).
active_index: HashMap[address, HashMap[uint256, uint256]]
# @dev Markets in which the insurance fund holds a position.
fund_markets: DynArray[uint256, 32]

# Governance

# @dev Authorised exchanges (may call `settle_trade`).
is_exchange: public(HashMap[address, bool])
# @dev Negative equity the insurance fund could not cover and deleveraging has not yet recovered (USD WAD).
bad_debt: public(uint256)
# @dev Pause flag (owner).
paused: public(bool)
# @dev Paid from the insurance fund to whoever backstops an account (USD WAD).
backstop_reward: public(uint256)
# @dev The scenario registry (may push scenarios) and the profile registry (may push classes).
scenario_registry: public(address)
profile_registry: public(address)
