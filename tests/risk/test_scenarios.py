"""Joint scenarios: tails along directions against a multivariate t with known quantiles, the
construction's structure and coverage, basis-point rounding, slot matching, the join."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from offchain.risk.joint_returns import common_hours, joint_history
from offchain.risk.prices import Candles
from offchain.risk.scenarios import (
    ScenarioDesign,
    StandardScenarios,
    choose_scenarios,
    cover_scales,
    coverage,
    direction_tails,
    latest_scenarios,
    match_slots,
    shocks_bps,
    sphere_directions,
    walk_forward_vectors,
    whitened_directions,
)

NU = 5
CORR = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.7], [0.6, 0.7, 1.0]])
T0 = 1_600_000_000 // 3600 * 3600


def multivariate_t(n: int, corr: np.ndarray, nu: float, seed: int) -> np.ndarray:
    """``n`` draws of a multivariate t with scale matrix ``corr`` and ``nu`` degrees of freedom."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, len(corr))) @ np.linalg.cholesky(corr).T
    w = np.sqrt(rng.chisquare(nu, n) / nu)
    return g / w[:, None]


@pytest.fixture(scope="module")
def t_pool() -> np.ndarray:
    x = multivariate_t(40_000, CORR, NU, seed=11)
    return np.concatenate((x, -x))


def test_direction_tails__quantiles_of_a_multivariate_t(t_pool):
    # -u.z of an elliptical t is sqrt(u' S u) times a univariate t_nu
    dirs = np.vstack((np.eye(3), [[1, -1, 0], [0.5, 0.5, -1], [1, 1, 1]]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    q, v = direction_tails(t_pool, dirs, 0.99)
    expected = np.sqrt(np.einsum("dm,mn,dn->d", dirs, CORR, dirs)) * stats.t.ppf(0.99, NU)
    np.testing.assert_allclose(q, expected, rtol=0.04)
    # the scenario pins the quantile exactly and points where the ellipsoid touches the plane
    np.testing.assert_allclose(-np.einsum("dm,dm->d", dirs, v), q, rtol=1e-12)
    touch = -(dirs @ CORR) * (q / np.einsum("dm,mn,dn->d", dirs, CORR, dirs))[:, None]
    np.testing.assert_allclose(v, touch, atol=0.06 * np.abs(touch).max())


def test_direction_tails__shell_shortcut_equals_the_full_computation(t_pool):
    dirs = sphere_directions(3, 10.0)
    q, v = direction_tails(t_pool, dirs, 0.99)
    # the same pool in blocks too small for the shortcut's shell, direction by direction
    k = math.ceil(len(t_pool) * 0.01)
    for u, qu, vu in zip(dirs[:20], q[:20], v[:20], strict=True):
        loss = -(t_pool @ u)
        top = np.argsort(loss)[-k:]
        assert qu == pytest.approx(loss[top].min(), rel=1e-12)
        scale = loss[top].min() / loss[top].mean()
        np.testing.assert_allclose(vu, t_pool[top].mean(axis=0) * scale, rtol=1e-9)


def test_choose_scenarios__structure_and_coverage(t_pool):
    std = choose_scenarios(t_pool, ["BTC", "ETH", "SOL"], 16, 0.99, symmetric=True)
    assert std.labels[:6] == ("BTC down", "BTC up", "ETH down", "ETH up", "SOL down", "SOL up")
    assert std.labels[6:] == tuple(f"gap{i}{s}" for i in range(1, 6) for s in "-+")
    # each one-market direction's 99% loss is the t quantile (unit scale) ...
    t99 = stats.t.ppf(0.99, NU)
    np.testing.assert_allclose(std.quantiles[0:6:2], t99, rtol=0.04)
    # ... and its scenario charges at least that, with the other markets moving along (a joint
    # move, not one market with the others frozen)
    assert np.all(-np.diag(std.vectors[0:6:2]) >= std.quantiles[0:6:2] - 1e-12)
    assert np.all(std.vectors[0, 1:] < -0.5 * t99)
    # mirrored pairs
    np.testing.assert_allclose(std.vectors[1::2], -std.vectors[0::2], atol=1e-12)
    # every grid direction is charged its 99% loss; between grid points and on other samples
    # of the same law a few percent are missing (what the residual charge is for)
    assert std.worst_coverage >= 1 - 1e-12
    fine = np.random.default_rng(2).standard_normal((3000, 3))
    fine /= np.linalg.norm(fine, axis=1, keepdims=True)
    q, _ = direction_tails(t_pool, fine, 0.99)
    assert coverage(std.vectors, fine, q).min() > 0.93
    # without the scaling each scenario pins its own direction exactly and the gaps show
    pinned = choose_scenarios(t_pool, ["BTC", "ETH", "SOL"], 16, 0.99, symmetric=True, bound=False)
    np.testing.assert_allclose(
        -np.einsum("km,km->k", pinned.directions, pinned.vectors), pinned.quantiles
    )
    assert 0.7 < pinned.worst_coverage < 0.9
    assert coverage(pinned.vectors[:6], fine, q).min() < 0.5  # the six market scenarios alone
    scale = np.linalg.norm(std.vectors, axis=1) / np.linalg.norm(pinned.vectors, axis=1)
    assert np.all(scale >= 1 - 1e-12) and np.all(scale < 1.5)


def test_cover_scales__just_enough_on_a_circle():
    # unit circle, four scenarios on the axes: the diagonals need sqrt(2)
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    grid = np.column_stack((np.cos(angles), np.sin(angles)))
    v = np.array([[-1.0, 0], [1, 0], [0, -1], [0, 1]])
    s = cover_scales(v, grid, np.ones(360))
    np.testing.assert_allclose(s, math.sqrt(2), rtol=1e-9)
    assert coverage(v * s[:, None], grid, np.ones(360)).min() >= 1 - 1e-12
    # already covering: nothing to scale
    assert cover_scales(2 * v, grid[::90], np.ones(4)).tolist() == [1.0] * 4


def test_choose_scenarios__two_markets_cover_nearly_every_direction():
    x = multivariate_t(60_000, CORR[:2, :2], NU, seed=5)
    pool = np.concatenate((x, -x))
    pinned = choose_scenarios(pool, ["BTC", "ETH"], 16, symmetric=True, bound=False)
    assert len(pinned) == 16
    assert pinned.worst_coverage > 0.95


def test_choose_scenarios__rejects_bad_k(t_pool):
    with pytest.raises(ValueError, match=r"n_scenarios must lie in \[6, 16\]"):
        choose_scenarios(t_pool, ["A", "B", "C"], 4)
    with pytest.raises(ValueError, match="2 market names for 3 columns"):
        choose_scenarios(t_pool, ["A", "B"], 16)


def test_whitened_directions__even_where_coverage_moves_fastest(t_pool):
    u = whitened_directions(t_pool, 8.0)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0)
    # in the whitened space the neighbours are about 8 degrees apart
    chol = np.linalg.cholesky(t_pool.T @ t_pool / len(t_pool))
    a = u @ chol
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    nearest = np.sort(np.degrees(np.arccos(np.clip(a @ a.T, -1, 1))), axis=1)[:, 1]
    assert 4 < np.median(nearest) < 12


def test_shocks_bps__rounded_away_from_zero():
    v = np.array([[1.0, -1.0], [0.0, 2.0]])
    sigma = np.array([0.01, math.log(1.01)])
    out = shocks_bps(v, sigma)
    # e^0.01 - 1 = 100.50 bps -> 101; 1/1.01 - 1 = -99.01 bps -> -100;
    # 1.01^2 - 1 = 201 bps exactly (up to floating point) stays 201
    assert out.tolist() == [[101, -100], [0, 201]]
    # square root of time, and int16 saturation of an absurd move
    assert shocks_bps(np.array([[1.0]]), np.array([0.01]), horizon=4).tolist() == [[203]]
    assert shocks_bps(np.array([[50.0, -500.0]]), np.array([0.1, 0.1])).tolist() == [
        [32767, -10000]
    ]


def _set(vectors: np.ndarray, labels: tuple[str, ...]) -> StandardScenarios:
    k, m = vectors.shape
    return StandardScenarios(vectors, np.zeros((k, m)), np.ones(k), labels, math.nan)


def test_match_slots__fillers_keep_their_slots():
    fixed = np.array([[-1.0, -1.0], [1.0, 1.0]])
    a, b, c = np.array([-2.0, 0.5]), np.array([0.3, -2.0]), np.array([1.5, 1.5])
    old = _set(np.vstack((fixed, a, -a, b, -b, c, -c)), tuple("ffaAbBcC"))
    # the new estimate found the same gaps in another order, one pair flipped
    new = _set(
        np.vstack((fixed, -c * 1.01, c * 1.01, a * 0.99, -a * 0.99, b, -b)), tuple("fFCcaAbB")
    )
    got = match_slots(new, old, fixed=2)
    assert got.labels == ("f", "F", "a", "A", "b", "B", "c", "C")
    np.testing.assert_allclose(got.vectors[6:], np.vstack((c * 1.01, -c * 1.01)))
    # nothing to match with fewer than two pairs after the fixed slots
    assert match_slots(new, old, fixed=6) is new


def candles(times: list[int], closes: list[float], symbol: str) -> Candles:
    t = np.array(times, dtype=np.int64)
    c = np.array(closes, dtype=np.float64)
    return Candles(t, c, c, c, c, symbol, has_ohlc=False)


def test_joint_history__joins_on_the_hour_and_drops_vectors_across_a_gap():
    hours = [T0 + 3600 * i for i in range(8)]
    a = candles(hours, [100, 101, 99, 100, 102, 101, 100, 103], "A/USDT")
    b_hours = hours[:3] + hours[4:]  # B misses the fourth hour
    b = candles(b_hours, [50, 51, 50, 52, 51, 50, 52], "B/USDT")
    assert common_hours([a, b]).tolist() == b_hours
    h = joint_history([a, b])
    assert h.markets == ("A/USDT", "B/USDT")
    assert len(h) == 7
    # row 2 -> row 3 spans two hours: no joint vector; the last row has no next candle
    assert h.valid.tolist() == [True, True, False, True, True, True, False]
    # the residuals are each market's own log return over its own volatility forecast
    assert h.residual[1, 0] * h.sigma[1, 0] == pytest.approx(math.log(99 / 101))
    assert h.residual[3, 1] * h.sigma[3, 1] == pytest.approx(math.log(51 / 52))
    with pytest.raises(ValueError, match="need at least two markets"):
        joint_history([a])
    far = candles([T0 + 3600 * (100 + i) for i in range(5)], [1, 2, 3, 4, 5], "C")
    with pytest.raises(ValueError, match="share 0 hours"):
        joint_history([a, far])


def head(c: Candles, n: int) -> Candles:
    return Candles(c.timestamps[:n], c.open[:n], c.high[:n], c.low[:n], c.close[:n], c.symbol)


def _random_walks(n: int, seed: int) -> list[Candles]:
    x = multivariate_t(n, CORR[:2, :2], NU, seed) * 0.01
    close = 100 * np.exp(np.cumsum(x, axis=0))
    times = [T0 + 3600 * i for i in range(n)]
    return [candles(times, close[:, i].tolist(), s) for i, s in enumerate(("A", "B"))]


def test_walk_forward_vectors__causal_and_refreshed():
    design = ScenarioDesign(n_scenarios=8, refresh=24, min_obs=300)
    full = joint_history(_random_walks(900, seed=3))
    by_k, ready, sets = walk_forward_vectors(full, design, ks=[4])
    assert set(by_k) == {4, 8}
    vectors = by_k[8]
    first = int(np.argmax(ready))
    assert first == 300 and not ready[:first].any() and ready[first:].all()
    assert len(sets) == math.ceil((900 - 300) / 24)
    # hour 500's scenarios only use data up to its refresh (492): cutting the future off
    # changes nothing
    cut = joint_history([head(c, 501) for c in _random_walks(900, seed=3)])
    v_cut, _, _ = walk_forward_vectors(cut, design)
    np.testing.assert_allclose(v_cut[8][500], vectors[500])
    # and the latest set is what the keeper computes at that hour (slots may be reordered)
    std, bps = latest_scenarios(full, design, 492)
    np.testing.assert_allclose(np.sort(std.vectors, axis=0), np.sort(vectors[492], axis=0))
    assert bps.shape == (8, 2)
