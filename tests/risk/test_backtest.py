"""The guardrail replay, the walk-forward backtest on synthetic data, its window, baselines,
outages and JSON; the real files' must-show figures live in test_backtest_real.py."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from offchain import WAD
from offchain.protocol.margin_math import Guardrails, Tier
from offchain.risk.backtest import SPEC_KEYS, BacktestConfig, horizon_losses, run_backtest
from offchain.risk.backtest_validation import validate
from offchain.risk.calibration import push_decision
from offchain.risk.prices import Candles
from offchain.risk.replay import (
    OutagePlan,
    evaluation_window,
    replay_guardrails,
    static_ex_ante,
)
from offchain.risk.risk_config import load_risk_config
from tests.spec_keys import BACKTEST_MODEL_KEYS

T0 = 1_600_000_000 // 86_400 * 86_400
TIERS = (Tier(0, 5 * 10**15),)
TIER0_RATE = 0.005
G = Guardrails(
    min_multiplier=WAD,
    max_multiplier=10 * WAD,
    max_increase=WAD // 2,  # +50% per update
    max_decrease=WAD // 10,  # -10% per update
    min_decrease_interval=7200,  # one decrease every two hours at most
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=0,
    max_funding_rate=10**12,
)


def synthetic_candles(n: int, seed: int) -> Candles:
    """Fat-tailed hourly prices with calm and stormy months and two crash hours."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n - 1) // 300) % 2 == 0, 0.004, 0.015)
    r = vol * rng.standard_t(3, n - 1) / math.sqrt(3)
    r[[1200, 1800]] = [-0.12, 0.10]
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    o = np.concatenate(([close[0]], close[:-1]))
    h, lo = np.maximum(o, close) * 1.002, np.minimum(o, close) * 0.998
    return Candles(T0 + 3600 * np.arange(n, dtype=np.int64), o, h, lo, close, "BTC/USDT")


@pytest.fixture(scope="module")
def btc():
    return load_risk_config().market("BTC")


def assert_within_guardrails(rate: np.ndarray, g: Guardrails, tier0: float) -> None:
    """Rates in force, hourly: each move within the registry's limits."""
    lo, hi = g.min_multiplier / WAD * tier0, g.max_multiplier / WAD * tier0
    assert np.all(rate >= lo * (1 - 1e-12)) and np.all(rate <= hi * (1 + 1e-12))
    ratio = rate[1:] / rate[:-1]
    assert np.all(ratio <= 1 + g.max_increase / WAD + 1e-12)
    assert np.all(ratio >= 1 - g.max_decrease / WAD - 1e-12)
    decreases = np.flatnonzero(ratio < 1 - 1e-12) + 1
    assert np.all(np.diff(decreases) * 3600 >= g.min_decrease_interval)


# ---------------------------------------------------------------------------------------------
# Replay


def test_replay_guardrails__hand_computed_path():
    rates = np.array([0.01] * 5 + [0.09] * 5 + [0.004] * 8)
    times = [T0 + 3600 * i for i in range(len(rates))]
    out = replay_guardrails(rates, times, G, TIERS)
    expected_multipliers = (
        [2.0] * 5  # 1%: 2x of 0.5%
        + [3.0, 4.5, 6.75, 10.0, 10.0]  # +50% an hour up to the 10x cap (9% asks 18x)
        + [9.0, 9.0, 8.1, 8.1, 7.29, 7.29, 6.561, 6.561]  # -10% every two hours
    )
    np.testing.assert_allclose(out.rate, np.array(expected_multipliers) * 0.005, rtol=1e-9)
    assert out.clamped_hours == 5 + 8
    assert_within_guardrails(out.rate, G, TIER0_RATE)


def test_replay_guardrails__pushes_every_hour_as_the_keeper_refreshes():
    """With hourly updates and a two-hour heartbeat the keeper's refresh (half the heartbeat)
    comes due every hour, so every hour is pushed, even an unchanged multiplier."""
    rates = 0.01 * (1 + 0.001 * np.arange(20))
    out = replay_guardrails(rates, [T0 + 3600 * i for i in range(20)], G, TIERS)
    assert out.pushes == 20


def test_replay_guardrails__outage_goes_stale_and_decays_no_faster_than_updates():
    rates = np.array([0.04] * 4 + [0.005] * 10)
    times = [T0 + 3600 * i for i in range(14)]
    ends = [t + 3599 for t in times]
    skip = np.zeros(14, bool)
    skip[4:] = True  # the keeper stops after four hours at 8x
    out = replay_guardrails(rates, times, G, TIERS, end_times=ends, skip=skip)
    assert not out.stale[:5].any() and out.stale[6:].all()
    # stale: max(4x, 8x * 0.9^n) with n the whole decrease intervals since the heartbeat
    assert out.rate[6] == pytest.approx(8 * 0.005)
    assert out.rate[-1] >= 4 * 0.005 and np.all(np.diff(out.rate[5:]) <= 1e-15)


def test_replay_guardrails__rejects_missing_rates():
    with pytest.raises(ValueError, match="no rate"):
        replay_guardrails(np.array([0.01, np.nan]), [T0, T0 + 3600], G, TIERS)
    with pytest.raises(ValueError, match="2 rates for 1 times"):
        replay_guardrails(np.array([0.01, 0.01]), [T0], G, TIERS)


@pytest.mark.parametrize("age", [3599, 3600, 5000, 7201])
@pytest.mark.parametrize("proposed", [2 * WAD, 2 * WAD + WAD // 100, 3 * WAD, WAD])
def test_push_decision__is_the_keepers_decide(age, proposed):
    """The replay's rule and the keeper's must agree, or live would not be the backtest."""
    from offchain.bots.keeper import KeeperConfig, KeeperMarket, decide
    from offchain.bots.keeper_models import Proposal
    from offchain.protocol.margin_math import MarketState, clamp_multiplier

    now = T0 + 10 * 3600
    state = MarketState(2 * WAD, 2 * WAD, 0, now - age, now - age, 0)
    config = KeeperConfig((KeeperMarket(1, "0x" + "11" * 20),), hysteresis=0.05)
    clamped = clamp_multiplier(state, G, proposed, now)
    pushed, _ = push_decision(state, G, clamped, now, 0.05)
    d = decide(1, Proposal(proposed, 0, b"\x01" * 32), state, G, now, now, config)
    assert pushed == (d.action == "update")


# ---------------------------------------------------------------------------------------------
# The walk-forward run


@pytest.fixture(scope="module")
def synthetic(btc):
    candles = synthetic_candles(3000, seed=8)
    config = BacktestConfig(btc, candidates=False)
    return candles, config, run_backtest(candles, config)


def test_run_backtest__margins_in_force_respect_the_shipped_guardrails(synthetic, btc):
    _, _, result = synthetic
    assert result.hours == 3000 - btc.model.warmup - 1
    margin = result.margins["recommended"]
    assert_within_guardrails(margin, btc.guardrails, btc.tier0_rate)
    # the crash hour is a breach and the margin rose right after it
    i = 1200 - btc.model.warmup
    assert result.loss_long[i] > margin[i] and margin[i + 1] > margin[i]
    assert set(result.models) == {
        "recommended",
        "previous",
        "static_equal_margin",
        "static_ex_ante",
        "static_ex_ante_equal_margin",
        "flat_3pct",
        "flat_0_5pct",
    }


def test_run_backtest__json_has_exactly_the_spec_keys(synthetic):
    _, _, result = synthetic
    doc = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(doc) == {"asset", "hours", "confidence", "horizon_hours", "models"}
    assert set(SPEC_KEYS) == BACKTEST_MODEL_KEYS
    assert list(doc["models"])[:2] == ["recommended", "static_equal_margin"]
    for name, figures in doc["models"].items():
        assert set(figures) == BACKTEST_MODEL_KEYS, name
        assert all(isinstance(v, float) and math.isfinite(v) for v in figures.values()), name
    rec = result.models["recommended"]
    f = doc["models"]["recommended"]
    assert f["peak_to_trough"] == pytest.approx(rec.peak_margin_rate / rec.trough_margin_rate)
    assert f["max_daily_margin_increase"] == f["max_increase_1d"]
    assert f["max_increase_1d"] <= f["max_increase_5d"] <= f["max_increase_30d"]
    assert f["dq_p_long"] == rec.dq_long.p_value


def test_run_backtest__baselines_ex_ante_and_at_equal_margin(synthetic):
    candles, _, result = synthetic
    rec = result.models["recommended"].avg_margin_rate
    assert result.models["static_equal_margin"].avg_margin_rate == pytest.approx(rec)
    assert result.models["static_ex_ante_equal_margin"].avg_margin_rate == pytest.approx(rec)
    ex_ante = result.margins["static_ex_ante"]
    # a static rate: constant within each UTC month
    opens = result.times - 3600
    month = opens.astype("datetime64[s]").astype("datetime64[M]")
    for m in np.unique(month):
        assert np.ptp(ex_ante[month == m]) == 0
    # set ex ante: another future leaves it unchanged up to the month that sees it
    w = result.window
    other_close = candles.close.copy()
    other_close[2500:] *= 1.5
    other = Candles(candles.timestamps, other_close, other_close, other_close, other_close)
    before = static_ex_ante(candles, w, 0.99, 1)
    after = static_ex_ante(other, w, 0.99, 1)
    k = 2500 - w.replay_from
    np.testing.assert_array_equal(before[:k], after[:k])


def test_run_backtest__from_and_to_set_the_scored_window_only(btc):
    candles = synthetic_candles(3000, seed=8)
    whole = run_backtest(candles, BacktestConfig(btc, candidates=False, previous=False))
    start, stop = int(candles.timestamps[2000]), int(candles.timestamps[2500])
    part = run_backtest(
        candles, BacktestConfig(btc, start=start, stop=stop, candidates=False, previous=False)
    )
    assert part.hours == 500
    assert int(part.times[0]) == start + 3600
    lo = 2000 - btc.model.warmup
    # the hours before --from warm up the model and the replayed registry: same margins
    np.testing.assert_array_equal(
        part.margins["recommended"], whole.margins["recommended"][lo : lo + 500]
    )
    with pytest.raises(ValueError, match="need at least 100"):
        evaluation_window(candles, 720, 1, int(candles.timestamps[-50]), None)


def test_run_backtest__intra_hour_extreme_is_harder_to_cover(synthetic):
    _, _, result = synthetic
    for m in result.models.values():
        d = m.spec_dict()
        assert d["breach_rate_intrahour_long"] >= d["breach_rate_long"]
        assert d["breach_rate_intrahour_short"] >= d["breach_rate_short"]


def test_outage_plan__seeded_and_about_one_a_week():
    plan = OutagePlan(seed=3, per_week=1.0, min_hours=3, max_hours=24)
    a, b = plan.mask(50_000), plan.mask(50_000)
    np.testing.assert_array_equal(a, b)
    assert 0.03 < a.mean() < 0.12  # one outage of 3-24 h a week: about 8% of hours
    assert not np.array_equal(a, OutagePlan(seed=4).mask(50_000))


def test_validate__every_section_present_and_json_clean(synthetic):
    candles, config, result = synthetic
    cfg = dataclasses.replace(config, horizons=(2, 4))
    doc = json.loads(json.dumps(validate(candles, cfg, result, reps=100), allow_nan=False))
    assert set(doc["regimes"]) == {"long", "short"} and len(doc["regimes"]["long"]) == 5
    assert doc["models"]["recommended"]["traffic_light"]["long"]["zone"] in {
        "green",
        "yellow",
        "red",
    }
    assert {"static_ex_ante_equal_margin", "previous"} <= set(doc["shortfall_cuts"])
    assert doc["outages"]["stale_hours"] > 0
    assert [row["horizon_hours"] for row in doc["horizons"]] == [2, 4]
    assert "model_at_4h" in doc["horizons"][1]


def test_horizon_losses__long_and_short():
    close = np.array([100.0, 90.0, 99.0, 110.0])
    long, short = horizon_losses(close, 0, 3, 1)
    np.testing.assert_allclose(long, [0.1, -0.1, -1 / 9])
    np.testing.assert_allclose(short, [-0.1, 0.1, 1 / 9])
