"""The written selection rule: its objective, its search, and that it never sees the future."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offchain import WAD
from offchain.risk.prices import Candles
from offchain.risk.risk_config import load_risk_config
from offchain.risk.selection import (
    GRID,
    START,
    Figures,
    Goals,
    market_from_params,
    neighbours,
    score,
    select,
)

T0 = 1_600_000_000 // 86_400 * 86_400
SHIPPED = load_risk_config()


def synthetic(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n - 1) // 500) % 2 == 0, 0.004, 0.012)
    r = vol * rng.standard_t(3, n - 1) / math.sqrt(3)
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    return Candles(T0 + 3600 * np.arange(n, dtype=np.int64), close, close, close, close)


def figs(breach=(0.01, 0.01), ind=(0.5, 0.5), dq=(0.5, 0.5), pt=4.0, rise=0.02, sf=1.0) -> Figures:
    return Figures(1000, breach, ind, dq, pt, rise, sf, 0.02)


def test_figures_checks__each_declared_constraint():
    goals = Goals()
    assert all(figs().checks(goals).values())
    bad = figs(breach=(0.0079, 0.0121), ind=(0.04, 0.5), dq=(0.5, 0.009), pt=5.01, rise=0.0301)
    assert bad.checks(goals) == {
        "breach_long": False,
        "independence_long": False,
        "dq_long": True,
        "breach_short": False,
        "independence_short": True,
        "dq_short": False,
        "peak_to_trough": False,
        "rise_1d": False,
    }


def test_score__failures_first_then_shortfall_relative_to_the_previous_model():
    goals = Goals()
    ref = {"A": 2.0, "B": 4.0}
    one_fail = score({"A": figs(ind=(0.01, 0.5), sf=0.1), "B": figs(sf=0.1)}, ref, goals)
    clean = score({"A": figs(sf=1.0), "B": figs(sf=2.0)}, ref, goals)
    assert one_fail == (1, pytest.approx(0.075))
    assert clean == (0, pytest.approx(1.0))  # each market weighs the same
    assert clean < one_fail


def test_neighbours__one_grid_step_either_way():
    assert neighbours(GRID, 0.985, "quantile") == [0.98, 0.99]
    assert neighbours(GRID, 0.975, "quantile") == [0.98]
    assert neighbours(GRID, 0.5, "quantile") == []


def test_market_from_params__floor_cap_and_stale_follow_the_rule():
    btc = SHIPPED.market("BTC")
    m = market_from_params(btc, START, 0.0125)
    assert m.floor_rate == pytest.approx(0.0125)
    assert m.guardrails.max_multiplier == round(START["cap_ratio"] * m.guardrails.min_multiplier)
    assert m.guardrails.stale_multiplier * 4 >= m.guardrails.max_multiplier
    capped = market_from_params(btc, dict(START, cap_ratio=5.0), 0.025)
    assert capped.guardrails.max_multiplier == 18 * WAD  # the registry packs 64 bits (18.4x)


TINY = {k: (START[k],) for k in GRID} | {"floor": (0.01, 0.015), "quantile": (0.98, 0.99)}


def test_select__never_sees_data_after_through():
    a = synthetic(3400, seed=1)
    close = a.close.copy()
    close[3000:] *= np.exp(np.cumsum(np.full(400, 0.01)))  # a different future
    b = Candles(a.timestamps, close, close, close, close)
    through = int(a.timestamps[3000])
    bases = {"BTC": SHIPPED.market("BTC")}
    one = select({"BTC": a}, bases, through, grid=TINY, min_hours=1000)
    two = select({"BTC": b}, bases, through, grid=TINY, min_hours=1000)
    assert (one.params, one.floors, one.score) == (two.params, two.floors, two.score)
    assert one.trail[0]["param"] == "start"
    assert one.floors["BTC"] in TINY["floor"] and one.params["quantile"] in TINY["quantile"]


def test_select__a_market_with_too_little_history_is_left_out():
    bases = {"BTC": SHIPPED.market("BTC"), "SOL": SHIPPED.market("SOL")}
    candles = {"BTC": synthetic(3000, seed=1), "SOL": synthetic(900, seed=2)}
    chosen = select(
        candles, bases, int(candles["BTC"].timestamps[-1]) + 3600, grid=TINY, min_hours=1000
    )
    assert set(chosen.figures) == {"BTC"}  # scored on BTC only
    assert set(chosen.markets) == {"BTC", "SOL"}  # SOL keeps the shared parameters
    with pytest.raises(ValueError, match="no market has"):
        select(candles, bases, T0 + 3600 * 100, grid=TINY)


def test_to_yaml__the_frozen_file_reads_back_as_the_rules_choice(tmp_path):
    """`dmm calibrate --write-config` writes exactly what the rule chose."""
    from offchain.risk.calibration_run import CalibrationRun, to_markdown, to_yaml
    from offchain.risk.risk_config import load_risk_config as load

    candles = {"BTC": synthetic(3000, seed=1)}
    bases = {"BTC": SHIPPED.market("BTC")}
    chosen = select(
        candles, bases, int(candles["BTC"].timestamps[-1]) + 3600, grid=TINY, min_hours=1000
    )
    run = CalibrationRun(chosen, [], {"weight": 0.5}, [], [], {}, Goals())
    path = tmp_path / "risk.yaml"
    path.write_text(to_yaml(run, SHIPPED))
    again = load(path)
    assert again.markets == (chosen.markets["BTC"],)
    assert again.dvol_weight == 0.5
    assert "| `quantile` |" in to_markdown(run)
