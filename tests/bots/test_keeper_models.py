"""The keeper's live models: finished bars, a persisted history, the backtest's numbers hour by
hour through the keeper's own code path, and a keeper started inside the 2018 exchange outage."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from offchain import WAD
from offchain.bots.bar_store import BarStore
from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket
from offchain.bots.keeper_models import CalibratedRiskModel, EwmaRiskModel, to_bars
from offchain.protocol.margin_math import MarketState, apply_update, multiplier_in_force
from offchain.risk.backtest import BacktestConfig, run_backtest
from offchain.risk.calibration import multiplier_for_rate, rate_of_multiplier
from offchain.risk.margin_model import proposal_series
from offchain.risk.prices import Candles, load_candles
from offchain.risk.risk_config import load_risk_config

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HOUR = 3600
CONFIG = load_risk_config()
BTC = CONFIG.market("BTC")
TIER0 = BTC.tiers[0].maintenance_rate
WARMUP = BTC.model.warmup
T0 = 1_600_000_000 // 86_400 * 86_400


def walk(n: int, vol: float = 0.006, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = T0 + HOUR * np.arange(n, dtype=np.int64)
    prices = 30_000 * np.exp(np.cumsum(rng.standard_t(4, n) * vol / math.sqrt(2)))
    return times, prices


def slice_of(c: Candles, lo: int, hi: int) -> Candles:
    return Candles(
        c.timestamps[lo:hi],
        c.open[lo:hi],
        c.high[lo:hi],
        c.low[lo:hi],
        c.close[lo:hi],
        c.symbol,
        c.has_ohlc,
    )


def test_to_bars__last_price_per_bucket_gaps_skipped():
    t, p = to_bars(np.array([0, 100, 3599, 3600, 10_800, 10_900]), np.arange(1.0, 7.0), HOUR)
    assert t.tolist() == [0, 3600, 10_800] and p.tolist() == [3.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="bar_seconds"):
        to_bars(np.array([1]), np.array([1.0]), 0)


def test_calibrated__the_shipped_model_on_hourly_bars():
    times, prices = walk(WARMUP + 200)
    model = CalibratedRiskModel({1: TIER0})
    now = int(times[-1]) + HOUR
    proposal = model.propose(1, times, prices, MarketState(), now)
    c = Candles(times, prices, prices, prices, prices, has_ohlc=False)
    rate = proposal_series(c, BTC.model, BTC.floor_rate, BTC.cap_rate).proposal[-1]
    assert proposal.multiplier == multiplier_for_rate(float(rate), TIER0)
    assert proposal.observed_at == now  # the close of the last finished bar
    assert BTC.guardrails.min_multiplier <= proposal.multiplier <= BTC.guardrails.max_multiplier


def test_calibrated__the_unfinished_hour_is_never_used():
    times, prices = walk(WARMUP + 100)
    model = CalibratedRiskModel({1: TIER0})
    now = int(times[-1]) + 1800  # half-way through the last bar
    a = model.propose(1, times, prices, MarketState(), now)
    shocked = prices.copy()
    shocked[-1] *= 0.5  # the forming hour crashes: not a finished bar yet
    b = CalibratedRiskModel({1: TIER0}).propose(1, times, shocked, MarketState(), now)
    assert (a.multiplier, a.model_hash, a.observed_at) == (
        b.multiplier,
        b.model_hash,
        b.observed_at,
    )
    assert a.observed_at == int(times[-2]) + HOUR
    c = CalibratedRiskModel({1: TIER0}).propose(1, times, shocked, MarketState(), now + 1800)
    assert c.multiplier > a.multiplier  # once the hour is over, it counts


def test_calibrated__warm_up_is_the_backtests_and_named():
    times, prices = walk(WARMUP)
    with pytest.raises(ValueError, match=f"warming up: {WARMUP - 1} of {WARMUP + 1} bars"):
        CalibratedRiskModel({1: TIER0}).propose(1, times, prices, MarketState(), int(times[-1]) + 1)
    with pytest.raises(ValueError, match="market 7"):
        CalibratedRiskModel({1: TIER0}).propose(7, times, prices, MarketState(), 0)
    with pytest.raises(ValueError, match="tier0_rates"):
        CalibratedRiskModel({})


def test_calibrated__history_persists_across_restarts(tmp_path):
    times, prices = walk(WARMUP + 50)
    path = tmp_path / "bars.sqlite"
    now = int(times[-1]) + HOUR
    first = CalibratedRiskModel({1: TIER0}, store=BarStore(path))
    a = first.propose(1, times, prices, MarketState(), now)
    # a restarted keeper has only a few fresh readings, but the store has the history
    restarted = CalibratedRiskModel({1: TIER0}, store=BarStore(path))
    b = restarted.propose(1, times[-3:], prices[-3:], MarketState(), now)
    assert (a.multiplier, a.model_hash) == (b.multiplier, b.model_hash)


def test_calibrated__records_a_volatility_index_reading_per_finished_bar():
    times, prices = walk(WARMUP + 5)
    seen = []
    model = CalibratedRiskModel({1: TIER0}, vol_index={1: lambda now: seen.append(now) or 55.0})
    model.propose(1, times, prices, MarketState(), int(times[-1]) + HOUR)
    _, index = model.candles(1)
    assert index[-1] == 55.0 and seen == [int(times[-1]) + HOUR]


def replay_through_keeper(candles: Candles, start: int) -> np.ndarray:
    """Feed ``candles`` hour by hour through a keeper (fake chain and feed) from ``start`` on;
    return the rate in force when each hour's loss is realised, as the backtest scores it."""
    state = {"m": MarketState()}
    registry = SimpleNamespace(
        market_state=lambda _id: state["m"], guardrails=lambda _id: BTC.guardrails
    )
    feed = SimpleNamespace(reading=None)
    feeds = SimpleNamespace(latest=lambda _address: feed.reading)
    model = CalibratedRiskModel({1: TIER0}, CONFIG)
    market = KeeperMarket(1, "0x" + "11" * 20, "BTC")
    keeper = Keeper(KeeperConfig((market,)), registry, feeds, model, None, None, 1)
    history = slice_of(candles, 0, start)
    model.seed(1, history)  # what builders does with a market's `history:` file
    keeper.warm_up(1, history.timestamps.tolist(), history.close.tolist())
    out = []
    for i in range(start, len(candles) - 1):
        now = int(candles.timestamps[i]) + HOUR  # the candle closes; its reading is the close
        feed.reading = SimpleNamespace(price=float(candles.close[i]), updated_at=now - 1)
        decision = keeper.decide_market(market, now)
        assert decision.action == "update", decision.reason
        state["m"] = apply_update(state["m"], BTC.guardrails, decision.update, now)
        end = int(candles.timestamps[i + 1]) + HOUR - 1
        out.append(rate_of_multiplier(multiplier_in_force(state["m"], BTC.guardrails, end), TIER0))
    return np.array(out)


@pytest.mark.skipif(not (DATA / "binance_btcusdt_1h_2018_2023.csv").exists(), reason="no data")
def test_keeper_path__replays_a_price_file_to_the_backtests_margins_hour_by_hour():
    full, _ = load_candles(DATA / "binance_btcusdt_1h_2018_2023.csv")
    candles = slice_of(full, 0, WARMUP + 600)  # 2018-01 to 2018-02, with a gap of 33 hours
    backtest = run_backtest(candles, BacktestConfig(BTC, candidates=False, previous=False))
    keeper = replay_through_keeper(candles, WARMUP)
    np.testing.assert_array_equal(keeper, backtest.margins["recommended"])


@pytest.mark.skipif(not (DATA / "binance_btcusdt_1h.csv").exists(), reason="no data")
def test_keeper__started_inside_the_2018_outage_keeps_signing():
    """The older Binance file holds 33 flat candles (2018-02-08 02:00 to 2018-02-09 10:00:
    the exchange was down). A keeper whose history starts there (zero variance: 0/0
    residuals) and one started in the middle of it both keep signing."""
    full, _ = load_candles(DATA / "binance_btcusdt_1h.csv")
    flat_from = int(np.searchsorted(full.timestamps, 1_518_048_000))  # 2018-02-08 00:00 UTC
    assert np.ptp(full.close[flat_from : flat_from + 34]) == 0  # a close, then 33 flat hours
    # a history that starts inside the outage
    starting_flat = slice_of(full, flat_from, flat_from + WARMUP + 24)
    model = CalibratedRiskModel({1: TIER0})
    p = model.propose(
        1,
        starting_flat.timestamps,
        starting_flat.close,
        MarketState(),
        int(starting_flat.timestamps[-1]) + HOUR,
    )
    assert BTC.guardrails.min_multiplier <= p.multiplier <= BTC.guardrails.max_multiplier
    # a keeper started mid-outage with the history before it, ticking through the flat hours
    mid = flat_from + 10
    margins = replay_through_keeper(slice_of(full, 0, mid + 40), mid)
    assert margins.size == 39 and np.all(np.isfinite(margins))


def test_ewma__shock_raises_multiplier_above_one():
    times, prices = walk(200, vol=0.002)
    quiet = EwmaRiskModel().propose(1, times, prices, MarketState(), 0)
    assert quiet.multiplier == WAD
    shocked = EwmaRiskModel().propose(
        1, np.append(times, times[-1] + 1), np.append(prices, prices[-1] * 0.8), MarketState(), 0
    )
    assert shocked.multiplier > WAD


class _Registry:
    """Counts first-tier lookups, as the keeper's registry client would make them."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.w3 = None

    def tier0_rate(self, market_id: int) -> int:
        self.calls.append(market_id)
        return TIER0


def _markets(*ids: int):
    return tuple(KeeperMarket(i, "0x" + "01" * 20, "BTC") for i in ids or (1,))


def _bot_config(model: dict, folder, ids=(1,)):
    from offchain.bots.bot_config import parse_config

    markets = [{"id": i, "feed": "0x" + "01" * 20, "name": "BTC"} for i in ids]
    return parse_config({"markets": markets, "model": model}, "keeper.yaml", folder)


def test_risk_model__calibrated_by_default_rates_read_once_on_first_use(tmp_path):
    from offchain.bots.builders import risk_model

    registry = _Registry()
    model = risk_model(_bot_config({"store": "bars.sqlite"}, tmp_path), registry, _markets())
    assert isinstance(model, CalibratedRiskModel) and registry.calls == []
    times, prices = walk(WARMUP + 10)
    model.propose(1, times, prices, MarketState(), int(times[-1]) + HOUR)
    model.propose(1, times, prices, MarketState(), int(times[-1]) + HOUR)
    assert registry.calls == [1]
    store = tmp_path / "bars.sqlite"  # relative to the config file's folder
    assert store.exists() and BarStore(store).count(1) == WARMUP + 10


def test_risk_model__keys_are_checked_and_named(tmp_path):
    from offchain.bots.builders import ConfigError, risk_model

    ewma = _bot_config({"kind": "ewma", "lam": 0.9}, tmp_path)
    assert risk_model(ewma, _Registry(), _markets()) == EwmaRiskModel(lam=0.9)
    with pytest.raises(ConfigError, match=r"model: .*'garch'"):
        _bot_config({"kind": "garch"}, tmp_path)
    with pytest.raises(ConfigError, match=r"keeper\.yaml: model\.lam: unknown key"):
        _bot_config({"lam": 0.9}, tmp_path)
    with pytest.raises(ConfigError, match=r"model\.config: .*no market with id 9"):
        risk_model(_bot_config({}, tmp_path, (9,)), _Registry(), _markets(9))
    with pytest.raises(ConfigError, match=r"model\.config: .*cannot be read"):
        risk_model(_bot_config({"config": "nope.yaml"}, tmp_path), _Registry(), _markets())
