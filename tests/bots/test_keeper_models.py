"""The keeper's live risk models: bars from readings, the calibrated model, the EWMA fallback."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from offchain import WAD
from offchain.bots.keeper_models import CalibratedRiskModel, EwmaRiskModel, to_bars
from offchain.protocol.margin_math import MarketState
from offchain.risk.calibration import (
    RECOMMENDED_MODEL,
    multiplier_for_rate,
    snapshot_at,
    target_series,
)
from offchain.risk.prices import Candles

TIER0 = 5 * 10**15  # 0.5%
HOUR = 3600


def _walk(n: int, vol: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = 1_600_000_000 + HOUR * np.arange(n, dtype=np.int64)
    prices = 30_000 * np.exp(np.cumsum(rng.standard_t(4, n) * vol / math.sqrt(2)))
    return times, prices


def test_to_bars__last_price_per_bucket_gaps_skipped():
    times = np.array([0, 100, 3599, 3600, 10_800, 10_900])
    prices = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    t, p = to_bars(times, prices, HOUR)
    assert t.tolist() == [0, 3600, 10_800]
    assert p.tolist() == [3.0, 4.0, 6.0]


def test_to_bars__one_second_bars_keep_every_reading():
    times = np.array([5, 6, 7])
    t, p = to_bars(times, np.array([1.0, 2.0, 3.0]), 1)
    assert t.tolist() == [5, 6, 7]
    assert p.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("bad", [0, -1])
def test_to_bars__rejects_non_positive_bar(bad):
    with pytest.raises(ValueError, match="bar_seconds"):
        to_bars(np.array([1]), np.array([1.0]), bad)


def test_calibrated__equals_the_backtested_pipeline_on_hourly_bars():
    # 1 + 60 days: an hour at which the walk-forward series refreshes its tails and floor, so
    # its last value is the keeper's "refresh everything now" value.
    times, prices = _walk(1 + 24 * 60, 0.01)
    model = CalibratedRiskModel({1: TIER0})
    proposal = model.propose(1, times, prices, MarketState(), int(times[-1]))
    candles = Candles(times, prices, prices, prices, prices, has_ohlc=False)
    snap = snapshot_at(target_series(candles, RECOMMENDED_MODEL), -1, int(times[-1]))
    expected = multiplier_for_rate(snap.target_rate, TIER0)
    assert proposal.multiplier == pytest.approx(expected, rel=1e-12)  # float summation order
    assert expected > WAD
    # The first tier's rate under the multiplier covers the rate; one wei less would not.
    exact = Fraction(snap.target_rate) * WAD * WAD
    assert TIER0 * expected >= exact
    assert TIER0 * (expected - 1) < exact


def test_calibrated__crash_raises_the_proposal():
    times, prices = _walk(1500, 0.005)
    model = CalibratedRiskModel({1: TIER0})
    calm = model.propose(1, times, prices, MarketState(), int(times[-1]))
    crash_t = np.append(times, times[-1] + HOUR * np.arange(1, 4))
    crash_p = np.append(prices, prices[-1] * 0.9 ** np.arange(1, 4))
    shocked = model.propose(1, crash_t, crash_p, MarketState(), int(crash_t[-1]))
    assert shocked.multiplier > 2 * calm.multiplier
    assert shocked.model_hash != calm.model_hash  # a new data window is a new provenance


def test_calibrated__same_data_same_hash_and_multiplier():
    times, prices = _walk(800, 0.01)
    model = CalibratedRiskModel({1: TIER0})
    a = model.propose(1, times, prices, MarketState(), 0)
    b = model.propose(1, times.copy(), prices.copy(), MarketState(), 0)
    assert (a.multiplier, a.model_hash) == (b.multiplier, b.model_hash)


def test_calibrated__unknown_market_is_named():
    times, prices = _walk(800, 0.01)
    with pytest.raises(ValueError, match="market 7"):
        CalibratedRiskModel({1: TIER0}).propose(7, times, prices, MarketState(), 0)


def test_calibrated__rejects_bad_tier_rate():
    times, prices = _walk(800, 0.01)
    with pytest.raises(ValueError, match="tier-0 rate 0 not in"):
        CalibratedRiskModel({1: 0}).propose(1, times, prices, MarketState(), 0)
    with pytest.raises(ValueError, match="tier0_rates"):
        CalibratedRiskModel({})


def test_ewma__shock_raises_multiplier_above_one():
    times, prices = _walk(200, 0.002)
    quiet = EwmaRiskModel().propose(1, times, prices, MarketState(), 0)
    assert quiet.multiplier == WAD  # floored at 1
    shocked = EwmaRiskModel().propose(
        1, np.append(times, times[-1] + 1), np.append(prices, prices[-1] * 0.8), MarketState(), 0
    )
    assert shocked.multiplier > WAD


class _Registry:
    """Counts first-tier lookups, as the keeper's registry client would make them."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def tier0_rate(self, market_id: int) -> int:
        self.calls.append(market_id)
        return TIER0


def _markets():
    from offchain.bots.keeper import KeeperMarket

    return (KeeperMarket(1, "0x" + "01" * 20, "BTC"),)


def test_risk_model__calibrated_by_default_rates_read_once_on_first_use():
    from offchain.bots.bot_config import parse_config
    from offchain.bots.builders import risk_model

    registry = _Registry()
    model = risk_model(parse_config({}), registry, _markets())
    assert isinstance(model, CalibratedRiskModel)
    assert registry.calls == []  # nothing read at start-up
    times, prices = _walk(800, 0.01)
    model.propose(1, times, prices, MarketState(), 0)
    model.propose(1, times, prices, MarketState(), 0)
    assert registry.calls == [1]


def test_risk_model__ewma_and_unknown_kind():

    from offchain.bots.bot_config import parse_config
    from offchain.bots.builders import ConfigError, risk_model

    def build(model: dict):
        return risk_model(parse_config({"model": model}), _Registry(), _markets())

    assert build({"kind": "ewma", "lam": 0.9}) == EwmaRiskModel(lam=0.9)
    with pytest.raises(ConfigError, match="model: kind 'garch' is not one of 'calibrated', 'ewma'"):
        build({"kind": "garch"})
    with pytest.raises(ConfigError, match=r"model\.lam: unknown key"):
        build({"lam": 0.9})  # the calibrated model (the default) has no lam
