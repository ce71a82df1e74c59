"""Calibration: rate -> multiplier, stressed floor, hysteresis, clamping, model hash."""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from offchain import WAD
from offchain.protocol.margin_math import (
    Guardrails,
    MarketState,
    UpdateRejected,
    apply_update,
    clamp_multiplier,
)
from offchain.protocol.signing import RiskUpdate
from offchain.risk.calibration import (
    DEFAULT_GUARDRAILS,
    DEFAULT_POLICY,
    DEFAULT_TIERS,
    RECOMMENDED_MODEL,
    Policy,
    calibrate,
    canonical_model_json,
    floored_rate,
    latest_targets_many,
    model_hash,
    multiplier_for_rate,
    push_decision,
    rate_of_multiplier,
    stressed_es_series,
    target_series,
)
from offchain.risk.prices import Candles
from offchain.risk.risk_measures import RiskModel

T0 = 1_600_000_000 // 3600 * 3600
TIER0 = DEFAULT_TIERS[0].maintenance_rate  # 0.5%
G = Guardrails(
    min_multiplier=WAD,
    max_multiplier=10 * WAD,
    max_increase=WAD // 2,  # +50%
    max_decrease=WAD // 10,  # -10%
    min_decrease_interval=7200,
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=0,
    max_funding_rate=10**12,
)
NOW = 2_000_000_000


def candles_of(n: int, seed: int, sigma: float = 0.01) -> Candles:
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n - 1) % 700 < 350, sigma, 3 * sigma)
    r = vol * rng.standard_t(4, n - 1) / math.sqrt(2)
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    t = T0 + 3600 * np.arange(n, dtype=np.int64)
    return Candles(t, close, close, close, close, "SYN", has_ohlc=False)


@pytest.fixture(scope="module")
def candles() -> Candles:
    return candles_of(1201, seed=21)


# ---------------------------------------------------------------------------------------------
# Rate <-> multiplier


@pytest.mark.parametrize(
    ("rate", "multiplier"),
    [
        (0.25, 50 * WAD),  # a binary fraction: exact
        (0.5, 100 * WAD),
        (0.0, 0),
        # the float 0.01 is 0.01 + 2.08e-19: times WAD**2 / tier0 = 2e20, 41.6 wei more
        (0.01, 2 * WAD + 42),
        (0.005, WAD + 21),
    ],
)
def test_multiplier_for_rate__known_values(rate, multiplier):
    assert multiplier_for_rate(rate, TIER0) == multiplier


@given(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
def test_multiplier_for_rate__smallest_multiplier_that_covers(rate):
    m = multiplier_for_rate(rate, TIER0)
    assert Fraction(TIER0 * m, WAD * WAD) >= Fraction(rate)
    if m > 0:
        assert Fraction(TIER0 * (m - 1), WAD * WAD) < Fraction(rate)


@pytest.mark.parametrize("rate", [0.001, 0.0123456789, 0.09, 1e-12])
def test_multiplier_for_rate__round_trip(rate):
    m = multiplier_for_rate(rate, TIER0)
    back = rate_of_multiplier(m, TIER0)
    assert back >= rate
    assert back == pytest.approx(rate, rel=1e-15, abs=1e-21)
    assert multiplier_for_rate(back, TIER0) >= m


@pytest.mark.parametrize("rate", [-0.01, math.nan, math.inf])
def test_multiplier_for_rate__rejects_bad_rates(rate):
    with pytest.raises(ValueError, match="rate must be finite and non-negative"):
        multiplier_for_rate(rate, TIER0)
    with pytest.raises(ValueError, match="tier0_rate"):
        multiplier_for_rate(0.01, 0)


def test_floored_rate__max_with_the_floor_ignoring_nan():
    out = floored_rate(np.array([0.01, 0.002, 0.003]), np.array([0.04, 0.04, np.nan]), 0.125)
    np.testing.assert_allclose(out, [0.01, 0.005, 0.003])


# ---------------------------------------------------------------------------------------------
# Hysteresis


def state_at(target: int, updated_at: int = NOW - 1800, last_decrease_at: int = 0) -> MarketState:
    return MarketState(
        target=target,
        ramp_from=target,
        updated_at=updated_at,
        observed_at=updated_at - 60,
        last_decrease_at=last_decrease_at,
    )


def test_push_decision__first_update_and_stale_market_always_push():
    assert push_decision(MarketState(), G, 2 * WAD, NOW, 0.05) == (True, "first update")
    stale = state_at(2 * WAD, updated_at=NOW - 7201)
    assert push_decision(stale, G, 2 * WAD, NOW, 0.05) == (True, "market is stale")


def test_push_decision__refreshes_once_half_the_heartbeat_has_passed():
    # the keeper's rule: re-push at refresh_fraction (0.5) of the two-hour heartbeat
    old = state_at(2 * WAD, updated_at=NOW - 3600)
    assert push_decision(old, G, 2 * WAD, NOW, 0.05) == (True, "refresh: last update 3600 s ago")
    fresh = state_at(2 * WAD, updated_at=NOW - 3599)
    assert push_decision(fresh, G, 2 * WAD, NOW, 0.05) == (False, "unchanged")
    later = push_decision(fresh, G, 2 * WAD, NOW, 0.05, refresh_fraction=0.9)
    assert later == (False, "unchanged")


def test_push_decision__hysteresis_band():
    s = state_at(2 * WAD)
    push, why = push_decision(s, G, 2 * WAD + 2 * WAD // 100, NOW, 0.05)  # +1%
    assert not push and "inside the 5% band" in why
    push, why = push_decision(s, G, 2 * WAD - 9 * WAD // 100, NOW, 0.05)  # -4.5%
    assert not push
    assert push_decision(s, G, 2 * WAD + WAD // 10, NOW, 0.05)[0]  # +5%: at the band
    assert push_decision(s, G, 2 * WAD - WAD // 5, NOW, 0.05)[0]  # -10%


# ---------------------------------------------------------------------------------------------
# Clamping (margin_math is the contract's reference)


@pytest.mark.parametrize(
    ("state", "proposed", "expected", "why"),
    [
        (MarketState(), 50 * WAD, 10 * WAD, "first update: only [min, max]"),
        (MarketState(), WAD // 2, WAD, "first update below min"),
        (state_at(2 * WAD), 5 * WAD, 3 * WAD, "+50% at most"),
        (state_at(8 * WAD), 50 * WAD, 10 * WAD, "max before the step"),
        (state_at(2 * WAD), WAD, 18 * WAD // 10, "-10% at most"),
        (state_at(WAD + WAD // 20), WAD // 10, WAD, "min before the step"),
        (state_at(2 * WAD, last_decrease_at=NOW - 3600), WAD, 2 * WAD, "decrease interval"),
        (state_at(2 * WAD, last_decrease_at=NOW - 7200), WAD, 18 * WAD // 10, "interval over"),
        (state_at(2 * WAD, last_decrease_at=NOW - 3600), 5 * WAD, 3 * WAD, "increase allowed"),
        (state_at(3 * WAD), 3 * WAD + 1, 3 * WAD + 1, "inside the limits"),
    ],
)
def test_clamp_multiplier__limits(state, proposed, expected, why):
    clamped = clamp_multiplier(state, G, proposed, NOW)
    assert clamped == expected, why
    update = RiskUpdate(1, clamped, 0, NOW - 1, NOW + 60, b"\x01" * 32)
    apply_update(state, G, update, NOW)  # the registry accepts it


def test_clamp_multiplier__one_wei_beyond_a_step_limit_is_rejected():
    s = state_at(2 * WAD)
    up = clamp_multiplier(s, G, 100 * WAD, NOW)
    down = clamp_multiplier(s, G, 0, NOW)
    for m, reason in ((up + 1, "max increase"), (down - 1, "max decrease")):
        with pytest.raises(UpdateRejected, match=reason):
            apply_update(s, G, RiskUpdate(1, m, 0, NOW - 1, NOW + 60, b"\x01" * 32), NOW)
    blocked = state_at(2 * WAD, last_decrease_at=NOW - 3600)
    with pytest.raises(UpdateRejected, match="decrease inside min interval"):
        apply_update(blocked, G, RiskUpdate(1, 2 * WAD - 1, 0, NOW - 1, NOW + 60, b"1" * 32), NOW)


# ---------------------------------------------------------------------------------------------
# calibrate(): the keeper's call


def test_calibrate__first_update_is_pushed_and_checked(candles):
    now = int(candles.timestamps[-1]) + 3600 + 30
    cal = calibrate(candles, market_id=7, now=now, guardrails=G)
    series = target_series(candles)
    assert cal.snapshot.target_rate == series.rate[-1]
    assert cal.proposed == multiplier_for_rate(float(series.rate[-1]), TIER0)
    assert cal.clamped == clamp_multiplier(MarketState(), G, cal.proposed, now)
    assert cal.push and cal.reason == "first update"
    u = cal.update
    assert u is not None
    assert (u.market_id, u.multiplier, u.funding_rate) == (7, cal.clamped, 0)
    assert u.observed_at == int(candles.timestamps[-1]) + 3600
    assert u.deadline == now + DEFAULT_POLICY.deadline_seconds
    assert u.model_hash == cal.model_hash
    assert cal.snapshot.sigma_annual == pytest.approx(cal.snapshot.sigma_hourly * math.sqrt(8760))
    assert cal.snapshot.target_rate >= cal.snapshot.floor_rate


def test_calibrate__clamps_to_the_step_limit(candles):
    now = int(candles.timestamps[-1]) + 3600
    proposed = calibrate(candles, market_id=1, now=now, guardrails=G).proposed
    state = state_at(proposed // 4, updated_at=now - 3600)
    cal = calibrate(candles, market_id=1, now=now, state=state, guardrails=G)
    assert cal.clamped == max(state.target * 3 // 2, G.min_multiplier)
    assert cal.clamped == clamp_multiplier(state, G, cal.proposed, now)
    assert cal.push and cal.update is not None and cal.update.multiplier == cal.clamped


def test_calibrate__skips_a_change_inside_the_hysteresis_band(candles):
    now = int(candles.timestamps[-1]) + 3600
    first = calibrate(candles, market_id=1, now=now, guardrails=G)
    state = state_at(first.clamped * 101 // 100, updated_at=now - 1800)
    state = dataclasses.replace(state, observed_at=now - 7200)
    cal = calibrate(candles, market_id=1, now=now, state=state, guardrails=G)
    assert not cal.push and cal.update is None
    assert "band" in cal.reason


def test_calibrate__no_candle_newer_than_the_last_update(candles):
    now = int(candles.timestamps[-1]) + 3600
    state = dataclasses.replace(state_at(WAD, updated_at=now - 7300), observed_at=now)
    cal = calibrate(candles, market_id=1, now=now, state=state, guardrails=G)
    assert not cal.push and cal.reason == "no candle newer than the last update"


def test_calibrate__rejects_a_candle_from_the_future_and_short_history(candles):
    with pytest.raises(ValueError, match="after now"):
        calibrate(candles, market_id=1, now=int(candles.timestamps[-1]))
    short = candles.tail(100)
    with pytest.raises(ValueError, match="not enough"):
        calibrate(short, market_id=1, now=int(short.timestamps[-1]) + 3600)


# ---------------------------------------------------------------------------------------------
# Model hash


def _hash(model=RECOMMENDED_MODEL, policy=DEFAULT_POLICY, horizon=1, first=T0, last=T0 + 3600, n=2):
    return model_hash(model, policy, horizon, first, last, n)


def test_model_hash__is_keccak_of_the_canonical_json():
    text = canonical_model_json(RECOMMENDED_MODEL, DEFAULT_POLICY, 1, T0, T0 + 3600, 2)
    assert " " not in text
    payload = json.loads(text)
    assert payload["data"] == {"first": T0, "last": T0 + 3600, "n": 2}
    assert payload["model"]["slow"] == 0.97 and payload["horizon_hours"] == 1
    assert text == json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert _hash() == keccak(text=text)
    assert len(_hash()) == 32


def test_model_hash__stable_for_the_same_inputs():
    copy = dataclasses.replace(RECOMMENDED_MODEL)
    assert _hash() == _hash(model=copy) == _hash(policy=Policy())
    # lam is not a parameter of the dual-EWMA filter: it does not enter the hash
    assert _hash(model=dataclasses.replace(RECOMMENDED_MODEL, lam=0.5)) == _hash()


@pytest.mark.parametrize(
    "change",
    [
        {"first": T0 - 3600},
        {"last": T0 + 7200},
        {"n": 3},
        {"horizon": 4},
        {"model": dataclasses.replace(RECOMMENDED_MODEL, slow=0.96)},
        {"model": dataclasses.replace(RECOMMENDED_MODEL, confidence=0.995)},
        {"model": dataclasses.replace(RECOMMENDED_MODEL, measure="es")},
        {"model": RiskModel(name="ewma", volatility="ewma", tail="normal")},
        {"policy": Policy(floor_fraction=0.25)},
        {"policy": Policy(hysteresis=0.1)},
    ],
)
def test_model_hash__changes_with_the_data_window_or_a_parameter(change):
    assert _hash(**change) != _hash()


def test_calibrate__hash_follows_the_data_window(candles):
    now = int(candles.timestamps[-1]) + 3600
    a = calibrate(candles, market_id=1, now=now).model_hash
    assert calibrate(candles, market_id=1, now=now + 10).model_hash == a
    shorter = candles.tail(len(candles) - 1)
    assert calibrate(shorter, market_id=1, now=now).model_hash != a


# ---------------------------------------------------------------------------------------------
# Series and many markets


def test_stressed_es_series__pooled_historical_es_of_the_past(candles):
    out = stressed_es_series(candles, 0.99, window=None, refresh=24)
    assert np.all(np.isnan(out[:120]))  # fewer than 100 returns before index 120
    r = candles.log_returns()
    e = 24 * 40
    pooled = np.sort(np.concatenate((r[:e], -r[:e])))
    k = math.ceil(2 * e * 0.01)
    assert out[e] == pytest.approx(math.expm1(pooled[-k:].mean()), rel=1e-12)
    assert out[e + 23] == out[e]  # refreshed daily


def test_latest_targets_many__equals_target_series_at_a_refresh_hour():
    cols = [candles_of(24 * 50 + 1, seed=s) for s in (31, 32, 33)]
    many = latest_targets_many(np.column_stack([c.close for c in cols]))
    for j, c in enumerate(cols):
        one = target_series(c)
        assert many.rate[j] == pytest.approx(one.rate[-1], rel=1e-12)
        assert many.stressed_es[j] == pytest.approx(one.stressed_es[-1], rel=1e-12)
        assert many.floor[j] == pytest.approx(one.floor[-1], rel=1e-12)
        assert many.multipliers[j] == multiplier_for_rate(float(many.rate[j]), TIER0)
        assert abs(many.multipliers[j] - multiplier_for_rate(float(one.rate[-1]), TIER0)) <= (
            many.multipliers[j] // 10**12
        )


def test_policy__validates_its_parameters():
    with pytest.raises(ValueError, match="floor_fraction"):
        Policy(floor_fraction=1.5)
    with pytest.raises(ValueError, match="floor_window"):
        Policy(floor_window=10)
    with pytest.raises(ValueError, match="hysteresis"):
        Policy(hysteresis=1.0)


def test_default_guardrails_fit_the_registry_packing():
    assert DEFAULT_GUARDRAILS.max_multiplier < 2**64
    assert rate_of_multiplier(DEFAULT_GUARDRAILS.max_multiplier, TIER0) == pytest.approx(0.09)
    assert rate_of_multiplier(DEFAULT_GUARDRAILS.min_multiplier, TIER0) == pytest.approx(0.005)
