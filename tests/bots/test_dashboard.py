"""The risk page without a chain: the margin line by the registry's rules, the health buckets,
the cache that survives a dead node, the app's routes and the ``dashboard:`` section."""

from __future__ import annotations

import doctest
import math

import pytest
from starlette.testclient import TestClient

from offchain import WAD
from offchain.bots import dashboard_charts
from offchain.bots.bot_config import ConfigError, parse_config
from offchain.bots.dashboard import (
    DashboardConfig,
    SnapshotCache,
    describe_failure,
    health_distribution,
    margin_series,
    nearest_liquidation,
)
from offchain.bots.dashboard_app import create_app
from offchain.bots.dashboard_charts import bar_chart_svg, line_chart_svg, nice_ticks
from offchain.protocol.chain import CallFailed, Health, RpcUnavailable, Subaccount
from offchain.protocol.margin_math import Guardrails

G = Guardrails(
    min_multiplier=WAD,
    max_multiplier=10 * WAD,
    max_increase=WAD // 2,
    max_decrease=WAD // 10,
    min_decrease_interval=3600,
    heartbeat=7200,
    stale_multiplier=4 * WAD,
    increase_ramp=600,
    max_funding_rate=10**12,
)
TIER0 = 5 * 10**15  # 0.5%
FEED = "0x" + "22" * 20


def logged(old: float, new: float, observed_at: int) -> dict:
    return {
        "market_id": 1,
        "old_multiplier": int(old * WAD),
        "new_multiplier": int(new * WAD),
        "new_funding_rate": 0,
        "observed_at": observed_at,
        "model_hash": b"\x01" * 32,
    }


def at(series, t):
    return dict(series)[t]


def test_margin_series__follows_the_registry_ramp_stale_fallback_and_decay():
    updates = [(1_000, logged(0, 2.0, 990)), (2_000, logged(2.0, 3.0, 1_990))]
    now = 2_000 + 7_200 + 3 * 3_600 + 10

    series = margin_series(updates, G, TIER0, now, start=0)

    assert at(series, 0) == pytest.approx(2.0)  # before any update: stale multiplier 4 x 0.5%
    assert at(series, 1_000) == pytest.approx(1.0)  # first update: 2x at once
    assert at(series, 1_999) == pytest.approx(1.0)
    assert at(series, 2_000) == pytest.approx(1.0)  # the increase starts its 600 s ramp
    assert at(series, 2_600) == pytest.approx(1.5)  # ...and ends at 3x
    assert at(series, 2_000 + 7_200) == pytest.approx(1.5)  # fresh up to the heartbeat
    assert at(series, 2_000 + 7_201) == pytest.approx(2.0)  # stale: max(4x, 3x decayed) = 4x
    assert [t for t, _ in series] == sorted(t for t, _ in series)
    assert series[-1][0] == now


def test_margin_series__no_update_is_the_stale_multiplier():
    series = margin_series([], G, TIER0, now=10_000)
    assert all(v == pytest.approx(2.0) for _, v in series)
    assert series[0][0] == 10_000 - 3600 and series[-1][0] == 10_000


def health(equity: float, maintenance: float, sub: int = 0) -> Health:
    e, m = int(equity * WAD), int(maintenance * WAD)
    return Health(Subaccount("0x" + "ab" * 20, sub), e, m, 0, e < m)


def test_health_distribution_and_nearest__bucket_edges_and_order():
    rows = [health(-1, 10, 0), health(5, 10, 1), health(10, 10, 2), health(30, 10, 3)]
    rows.append(health(1, 0, 4))  # no maintenance: as healthy as it gets

    counts = [r["count"] for r in health_distribution(rows)]
    nearest = nearest_liquidation(rows, 3)

    assert counts == [1, 1, 1, 0, 0, 1, 1]
    assert [(n["subaccount"], n["liquidatable"]) for n in nearest] == [
        (0, True),
        (1, True),
        (2, False),
    ]
    assert nearest[0]["equity_wei"] == str(-WAD) and nearest[0]["ratio"] == pytest.approx(-0.1)
    assert nearest_liquidation([rows[-1]], 1)[0]["ratio"] is None  # infinite: no number


def test_describe_failure__one_line_naming_what_failed():
    refused = RpcUnavailable("ConnectionError: ... [Errno 111] Connection refused ...\nmore")
    assert (
        describe_failure(refused, "http://n:8545")
        == "the node at http://n:8545 did not answer (connection refused)"
    )
    call = CallFailed("engine.count() at 0xabc: no answer (no engine contract at that address?)")
    assert describe_failure(call, "u") == str(call)
    assert describe_failure(ValueError("bad\nthing"), "u") == "ValueError: bad thing"


class Reader:
    """Answers snapshots until ``fail`` is set, then raises it."""

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.reads = 0

    def __call__(self) -> dict:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return snapshot(block=self.reads)


def snapshot(block: int) -> dict:
    return {
        "block": block,
        "time": 1_700_000_000,
        "markets": [
            {
                "id": 1,
                "name": "BTC",
                "configured": True,
                "price": 60_000.0,
                "feed_age_seconds": 3,
                "multiplier": 2.0,
                "multiplier_wei": str(2 * WAD),
                "target": 2.0,
                "target_wei": str(2 * WAD),
                "stale": False,
                "last_update_age_seconds": 10,
                "ramp": None,
                "funding_rate_per_second": 0.0,
                "funding_rate_wei": "0",
                "funding_8h_pct": 0.0,
                "maintenance_tier0_pct": 1.0,
                "margin_history": [(1_699_990_000, 1.0), (1_700_000_000, 1.0)],
                "update_points": [(1_699_990_000, 1.0, 2 * WAD)],
            },
            {"id": 7, "name": "SOL", "configured": False},
        ],
        "accounts": {
            "with_positions": 1,
            "read": 1,
            "liquidatable": 0,
            "distribution": health_distribution([health(30, 10)]),
            "nearest": nearest_liquidation([health(30, 10)], 10),
        },
        "insurance_fund_usd": 1.5,
        "insurance_fund_wei": str(3 * WAD // 2),
        "bad_debt_usd": 0.0,
        "bad_debt_wei": "0",
        "deficit_usd": 0.0,
        "deficit_wei": "0",
        "events": [],
    }


def test_snapshot_cache__reads_at_most_once_per_interval_and_keeps_the_last_good():
    reader, clock = Reader(), [0.0]
    cache = SnapshotCache(reader, "http://n", min_interval=1.0, clock=lambda: clock[0])

    first, again = cache.get(), cache.get()
    clock[0] = 1.0
    reader.fail = RpcUnavailable("Connection refused")
    failed = cache.get()

    assert reader.reads == 2 and first["snapshot"]["block"] == again["snapshot"]["block"] == 1
    assert failed["ok"] is False
    assert failed["error"] == "the node at http://n did not answer (connection refused)"
    assert failed["snapshot"]["block"] == 1  # the last good numbers stay on the page


def test_app__page_fragment_json_and_health_in_both_states():
    reader, clock = Reader(), [0.0]
    cache = SnapshotCache(reader, "http://n", min_interval=1.0, clock=lambda: clock[0])
    client = TestClient(create_app(cache, DashboardConfig(refresh_seconds=2)))

    page = client.get("/")
    assert page.status_code == 200
    assert 'data-refresh-ms="2000"' in page.text and "<svg" in page.text
    assert '<td class="num multiplier" data-wei="2000000000000000000">2.0000</td>' in page.text
    assert 'id="market-7" data-configured="false"' in page.text
    assert "http://" not in page.text.replace("http://n", "").replace(
        "http://www.w3.org/2000/svg", ""
    )  # nothing loaded from elsewhere
    assert client.get("/api/snapshot").json()["snapshot"]["markets"][0]["target_wei"] == str(
        2 * WAD
    )
    assert client.get("/healthz").text == "ok: block 1\n"

    clock[0] = 5.0
    reader.fail = RpcUnavailable("timed out")
    fragment = client.get("/fragment")
    json_answer = client.get("/api/snapshot")

    assert fragment.status_code == 200 and fragment.headers["cache-control"] == "no-store"
    assert '<span id="error">the node at http://n did not answer (timed out)</span>' in (
        fragment.text
    )
    assert "the numbers below are from block 1" in fragment.text
    assert json_answer.status_code == 503 and json_answer.json()["ok"] is False
    assert client.get("/healthz").status_code == 503


def test_doctests__run() -> None:
    assert doctest.testmod(dashboard_charts).failed == 0


def test_charts__ticks_and_empty_series():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.5, 1.0]
    assert nice_ticks(0.0, 1.0, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0, 7.3, 4) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert nice_ticks(0.0, math.nan) == []
    assert "no data yet" in line_chart_svg([])
    svg = line_chart_svg([(0, 1.0), (100, 2.0)], [(50, 1.5, "<keeper>")])
    assert svg.count("<polyline") == 1 and "&lt;keeper&gt;" in svg  # titles escaped
    assert bar_chart_svg([("a", 0), ("b", 3)]).count("<rect") == 2


@pytest.mark.parametrize(
    ("dashboard", "message"),
    [
        ({"port": "9103"}, "dashboard.port: Input should be a valid integer"),
        ({"port": 70000}, "dashboard: port must lie in [1, 65535], not 70000"),
        ({"refresh_seconds": 0}, "dashboard: refresh_seconds must lie in [0.2, 3600], not 0"),
        ({"prot": 1}, "dashboard.prot: unknown key; did you mean 'port'?"),
        ({"nearest": 0}, "dashboard: nearest must be at least 1, not 0"),
        ({"port": 9101}, "dashboard.port and keeper.metrics_port are both 9101"),
    ],
)
def test_dashboard_section__mistakes_named_by_key_path(dashboard, message):
    raw = {
        "markets": [{"id": 1, "feed": FEED}],
        "keeper": {"metrics_port": 9101},
        "dashboard": dashboard,
    }
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw, "bots.yaml").dashboard_config()
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_dashboard_section__defaults():
    cfg = parse_config({"markets": [{"id": 1, "feed": FEED}]}).dashboard_config()
    assert (cfg.host, cfg.port, cfg.refresh_seconds) == ("127.0.0.1", 9103, 5.0)
