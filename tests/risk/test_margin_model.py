"""The shipped margin model: causal, the same with or without the keeper's cache, NaN-safe."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from offchain.risk.margin_model import (
    MarginModel,
    SeriesCache,
    canonical_json,
    daily_anchors,
    model_hash,
    model_variance,
    proposal_series,
)
from offchain.risk.prices import Candles
from offchain.risk.procyclicality import max_rise

T0 = 1_600_000_000 // 86_400 * 86_400  # a UTC midnight
FLOOR, CAP = 0.01, 0.05
MODEL = MarginModel()


def candles_of(n: int, seed: int = 3, start: int = T0) -> Candles:
    """Fat-tailed hourly closes with calm and stormy months."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n - 1) // 400) % 2 == 0, 0.004, 0.015)
    r = vol * rng.standard_t(3, n - 1) / math.sqrt(3)
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    t = start + 3600 * np.arange(n, dtype=np.int64)
    return Candles(t, close, close, close, close, "SYN/USD", has_ohlc=False)


def head(c: Candles, n: int) -> Candles:
    return Candles(
        c.timestamps[:n], c.open[:n], c.high[:n], c.low[:n], c.close[:n], c.symbol, False
    )


def test_daily_anchors__bars_closing_at_midnight_utc():
    c = candles_of(100)
    a = daily_anchors(c.timestamps)
    assert a.tolist() == [23, 47, 71, 95]
    assert daily_anchors(np.array([0, 5, 10, 115, 120]), bar_seconds=5).tolist() == [3]


def test_proposal_series__warm_up_then_inside_the_band_and_the_speed_limit():
    c = candles_of(3000)
    s = proposal_series(c, MODEL, FLOOR, CAP)
    assert np.isnan(s.proposal[: MODEL.warmup]).all()
    live = s.proposal[MODEL.warmup :]
    assert np.isfinite(live).all()
    assert live.min() >= FLOOR and live.max() <= CAP
    assert max_rise(live, MODEL.rise_window) <= MODEL.rise_budget + 1e-12
    assert live.max() > 2 * live.min()  # calm and stormy months


def test_proposal_series__uses_only_the_past():
    c = candles_of(2500)
    full = proposal_series(c, MODEL, FLOOR, CAP)
    changed_close = c.close.copy()
    changed_close[2000:] *= np.exp(np.linspace(0, 0.5, 500))  # a different future
    other = Candles(c.timestamps, changed_close, changed_close, changed_close, changed_close)
    again = proposal_series(other, MODEL, FLOOR, CAP)
    np.testing.assert_array_equal(full.proposal[:2000], again.proposal[:2000])
    assert not np.array_equal(full.proposal[2001:], again.proposal[2001:])


@pytest.mark.parametrize("apc", ["buffer", "stressed_weight", "lookback_floor", "none"])
def test_proposal_series__the_keepers_cache_gives_the_same_numbers_bit_for_bit(apc):
    model = (
        dataclasses.replace(MODEL, apc=apc, lookback=2000)
        if apc != "none"
        else dataclasses.replace(MODEL, apc=apc)
    )
    c = candles_of(1700, seed=9)
    direct = proposal_series(c, model, FLOOR, CAP)
    cache = SeriesCache()
    for n in (900, 901, 950, 1000, 1300, 1301, 1700):  # the keeper, bar after bar
        step = proposal_series(head(c, n), model, FLOOR, CAP, cache=cache)
        np.testing.assert_array_equal(step.proposal, direct.proposal[:n])
        np.testing.assert_array_equal(step.rate, direct.rate[:n])
    assert cache.tails  # the anchors' tails were reused


def test_proposal_series__cache_restarts_when_history_changes():
    c = candles_of(1200)
    cache = SeriesCache()
    proposal_series(c, MODEL, FLOOR, CAP, cache=cache)
    other = candles_of(1200, seed=4)
    out = proposal_series(other, MODEL, FLOOR, CAP, cache=cache)
    np.testing.assert_array_equal(out.proposal, proposal_series(other, MODEL, FLOOR, CAP).proposal)


def test_proposal_series__flat_candles_are_safe():
    """An exchange outage (constant closes, zero variance: residuals 0/0) at the start of the
    history, or in the middle, never breaks the model: the rate falls to the floor."""
    c = candles_of(2000)
    close = c.close.copy()
    close[:40] = close[40]  # the history starts inside a flat stretch
    close[1500:1533] = close[1499]  # 33 flat hours later on
    flat = Candles(c.timestamps, close, close, close, close)
    s = proposal_series(flat, MODEL, FLOOR, CAP)
    assert np.isfinite(s.proposal[MODEL.warmup :]).all()
    v = model_variance(flat.log_returns(), MODEL)
    assert v[0] == 0.0  # the seed variance of a flat start


def test_proposal_series__implied_volatility_blend():
    c = candles_of(1500)
    implied = np.full(len(c), 0.02)
    implied[:1000] = np.nan  # no index yet
    model = dataclasses.replace(MODEL, vol_index_weight=1.0)
    s = proposal_series(c, model, FLOOR, CAP, implied)
    hist = proposal_series(c, MODEL, FLOOR, CAP)
    np.testing.assert_allclose(s.sigma[1000:], 0.02)
    np.testing.assert_array_equal(s.sigma[:1000], hist.sigma[:1000])
    with pytest.raises(ValueError, match="implied volatilities"):
        proposal_series(c, model, FLOOR, CAP, implied[:-1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fast": 0.99}, "fast < slow"),
        ({"apc_strength": 0.2}, "EMIR art. 28"),
        ({"apc": "magic"}, "apc must be one of"),
        ({"quantile": 1.2}, "confidence"),
        ({"rise_budget": 0.0}, "rise_budget"),
        ({"vol_index_weight": 2.0}, "vol_index_weight"),
        ({"warmup": 10}, "warmup"),
    ],
)
def test_margin_model__refuses_bad_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(MODEL, **change)


def test_proposal_series__refuses_a_bad_band():
    with pytest.raises(ValueError, match="floor <= cap"):
        proposal_series(candles_of(800), MODEL, 0.05, 0.01)


def test_model_hash__follows_parameters_band_and_data_window():
    text = canonical_json(MODEL, FLOOR, CAP, 1, 2, 3)
    assert '"version":"dmm-margin/2"' in text and '"band":[0.01,0.05]' in text
    base = model_hash(MODEL, FLOOR, CAP, 1, 2, 3)
    assert base == model_hash(dataclasses.replace(MODEL), FLOOR, CAP, 1, 2, 3)
    assert base != model_hash(dataclasses.replace(MODEL, quantile=0.99), FLOOR, CAP, 1, 2, 3)
    assert base != model_hash(MODEL, FLOOR, 0.06, 1, 2, 3)
    assert base != model_hash(MODEL, FLOOR, CAP, 1, 2, 4)
