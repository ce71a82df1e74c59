"""One source for the shipped configuration: the backtest, the keeper, the devnet and the deploy
example read the same guardrails, tiers and model, and a mistake in the file is named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from offchain.protocol.deploy_config import load_deploy_spec
from offchain.risk.risk_config import (
    DEFAULT_CONFIG_PATH,
    RiskConfigError,
    load_risk_config,
    parse_risk_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_EXAMPLE = ROOT / "deploy" / "testnet.example.yaml"
KEEPER_EXAMPLE = ROOT / "offchain" / "bots" / "keeper.example.yaml"


@pytest.fixture(scope="module")
def shipped():
    return load_risk_config()


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def test_shipped_config__is_deploy_risk_yaml_with_btc_eth_sol(shipped):
    assert DEFAULT_CONFIG_PATH == ROOT / "deploy" / "risk.yaml"
    assert [m.name for m in shipped.markets] == ["BTC", "ETH", "SOL"]
    assert [m.market_id for m in shipped.markets] == [1, 2, 3]
    for m in shipped.markets:
        assert m.floor_rate * 5 >= m.cap_rate * (1 - 1e-9)  # peak/trough <= 5 by construction
        assert m.guardrails.stale_multiplier * 4 >= m.guardrails.max_multiplier


def test_devnet__deploys_the_shipped_guardrails_and_tiers(shipped):
    from offchain.devnet.system import (
        DEVNET_GUARDRAILS,
        DEVNET_INITIAL_RATIO,
        DEVNET_TIERS,
        DevnetMarket,
    )
    from offchain.devnet.system import (
        shipped as devnet_shipped,
    )

    btc = shipped.market("BTC")
    assert btc.guardrails == DEVNET_GUARDRAILS
    assert tuple(DEVNET_TIERS) == btc.tiers
    assert btc.initial_ratio == DEVNET_INITIAL_RATIO
    assert DevnetMarket(1, "BTC", 60_000.0).guardrails == btc.guardrails
    assert devnet_shipped("ETH") == shipped.market("ETH")


def test_deploy_example__guardrails_tiers_and_ratio_equal_the_shipped_ones(shipped):
    spec = load_deploy_spec(DEPLOY_EXAMPLE)
    assert spec.markets, "the deploy example lists no market"
    for market in spec.markets:
        mine = shipped.by_id(market.market_id)
        assert market.guardrails == mine.guardrails, market.name
        assert tuple(market.tiers) == mine.tiers, market.name
        assert market.initial_ratio == mine.initial_ratio, market.name
    assert "deploy/risk.yaml" in DEPLOY_EXAMPLE.read_text()


def test_keeper_and_backtest__read_the_shipped_file_by_default(shipped):
    from offchain.bots.keeper_models import CalibratedRiskModel

    model = CalibratedRiskModel({1: shipped.market("BTC").tiers[0].maintenance_rate})
    assert model.config == shipped and model.market(1) == shipped.market("BTC")
    assert "deploy/risk.yaml" in KEEPER_EXAMPLE.read_text()


def test_market__matched_by_name_or_by_a_price_files_asset(shipped):
    assert shipped.market("btc").name == "BTC"
    assert shipped.market("BTC/USDT").name == "BTC"
    assert shipped.market("binance_solusdt_1h_2020_2023").name == "SOL"
    with pytest.raises(RiskConfigError, match="no market for 'DOGE/USDT'"):
        shipped.market("DOGE/USDT")


def _mutated(raw: dict, path: list, value) -> dict:
    data = copy.deepcopy(raw)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["markets", 0, "guardrails", "max_decrease"], "1", "max decrease out of range"),
        (["markets", 0, "guardrails", "heartbeat"], KeyError, "missing \\['heartbeat'\\]"),
        (["markets", 0, "guardrails", "surprise"], 1, "unknown \\['surprise'\\]"),
        (["markets", 0, "model", "apc_strength"], 0.1, "markets.BTC.model: apc_strength"),
        (["markets", 0, "model", "colour"], "red", "unknown key\\(s\\) \\['colour'\\]"),
        (["markets", 0, "model", "quantile"], "high", "quantile: 'high' is not a number"),
        (["markets", 0, "tiers", 0, "maintenance_rate"], "0", "first tier rate is zero"),
        (["markets", 1, "id"], 1, "share an id"),
        (["markets", 0, "id"], KeyError, "markets.BTC: missing 'id'"),
        (["markets", 0, "initial_ratio"], "0.5", "initial_ratio: below 1"),
        (["confidence"], 1.5, "confidence"),
    ],
)
def test_parse_risk_config__names_what_is_wrong(raw, path, value, message):
    with pytest.raises(RiskConfigError, match=message):
        parse_risk_config(_mutated(raw, path, value))


def test_load_risk_config__unreadable_and_malformed_files(tmp_path):
    with pytest.raises(RiskConfigError, match="cannot be read"):
        load_risk_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("markets: [\n")
    with pytest.raises(RiskConfigError, match="not valid YAML"):
        load_risk_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    with pytest.raises(RiskConfigError, match="'markets' list"):
        load_risk_config(empty)


# ---------------------------------------------------------------------------------------------
# The other margin inputs: funding bound and reserve, scenario groups, account classes


DEVNET_FILE = ROOT / "deploy" / "devnet.yaml"


def _devnet_system_spec():
    from offchain.protocol.deploy_config import parse_deploy_spec

    return parse_deploy_spec(yaml.safe_load(DEVNET_FILE.read_text())["system"], str(DEVNET_FILE))


def _groups_of(shipped, market_ids):
    """The shipped groups of ``market_ids`` as (id, markets, bounds, steps, heartbeat, c, phi,
    r_g), built here from the configuration alone."""
    p = shipped.portfolio
    params = p.group_params()
    out = []
    for g in shipped.groups:
        ids = tuple(shipped.market(n).market_id for n in g.markets)
        if set(ids) <= set(market_ids):
            bounds = tuple(dict(p.max_shock_bps).get(n, p.default_max_shock_bps) for n in g.markets)
            out.append(
                (
                    g.group_id,
                    ids,
                    bounds,
                    (p.max_step_bps,) * len(ids),
                    p.heartbeat,
                    params.residual,
                    params.floor,
                    params.initial_ratio,
                )
            )
    return out


def _as_rows(groups):
    return [
        (
            g.group_id,
            tuple(g.markets),
            tuple(g.max_shocks),
            tuple(g.max_steps),
            g.heartbeat,
            g.residual,
            g.floor,
            g.initial_ratio,
        )
        for g in groups
    ]


def _classes_of(shipped, scale):
    table = shipped.profiles.table(scale)
    return [(c.class_id, c.multiplier, c.min_volume, c.min_equity) for c in table.classes]


def test_shipped_funding__the_study_s_frozen_bound_and_reserve_in_every_market(shipped):
    from offchain.risk.funding_study import CHOSEN_FUNDING_RESERVE_S, CHOSEN_MAX_FUNDING_RATE

    assert CHOSEN_MAX_FUNDING_RATE == 190_000_000_000  # 1.9e-7 per second
    for m in shipped.markets:
        assert m.guardrails.max_funding_rate == CHOSEN_MAX_FUNDING_RATE, m.name
        assert m.funding_reserve_seconds == CHOSEN_FUNDING_RESERVE_S == 7200, m.name


def test_shipped_portfolio__equals_the_frozen_rule_output(shipped):
    from offchain.risk.portfolio_config import FROZEN_PORTFOLIO

    assert shipped.portfolio == FROZEN_PORTFOLIO
    assert (shipped.portfolio.n_scenarios, shipped.portfolio.residual) == (10, 0.1)
    assert [(g.group_id, g.markets) for g in shipped.groups] == [(1, ("BTC", "ETH"))]


def test_shipped_profiles__the_class_table_in_both_scales(shipped):
    p = shipped.profiles
    assert p.heartbeat == 7 * 86_400
    for scale in ("testnet", "devnet"):
        table = p.table(scale)
        names = {c.name: c.multiplier / 10**18 for c in table.classes}
        assert names == {
            "maker": 0.8,
            "active": 0.9,
            "dominant": 1.25,
            "liquidated": 1.25,
            "repeat_liquidated": 1.5,
            "backstopped": 2.0,
        }
    with pytest.raises(KeyError, match="no profile table 'mainnet'"):
        p.table("mainnet")


def test_deploy_example__funding_groups_and_classes_equal_the_shipped_ones(shipped):
    spec = load_deploy_spec(DEPLOY_EXAMPLE)
    for market in spec.markets:
        mine = shipped.by_id(market.market_id)
        assert market.funding_reserve_seconds == mine.funding_reserve_seconds, market.name
    ids = [m.market_id for m in spec.markets]
    assert _as_rows(spec.scenario_groups) == _groups_of(shipped, ids) != []
    assert spec.profiles is not None
    assert spec.profiles.heartbeat == shipped.profiles.heartbeat
    assert (spec.profiles.min_multiplier, spec.profiles.max_multiplier) == (
        shipped.profiles.min_multiplier,
        shipped.profiles.max_multiplier,
    )
    got = [(c.class_id, c.multiplier, c.min_volume, c.min_equity) for c in spec.profiles.classes]
    assert got == _classes_of(shipped, "testnet")


def test_devnet_file__funding_groups_and_classes_equal_the_shipped_ones(shipped):
    spec = _devnet_system_spec()
    for market in spec.markets:
        mine = shipped.by_id(market.market_id)
        assert market.guardrails.max_funding_rate == mine.guardrails.max_funding_rate
        assert market.funding_reserve_seconds == mine.funding_reserve_seconds
    ids = [m.market_id for m in spec.markets]
    assert _as_rows(spec.scenario_groups) == _groups_of(shipped, ids) != []
    got = [(c.class_id, c.multiplier, c.min_volume, c.min_equity) for c in spec.profiles.classes]
    assert got == _classes_of(shipped, "devnet")
    assert spec.profiles.heartbeat == shipped.profiles.heartbeat


def test_devnet_system__deploys_the_shipped_funding_groups_and_classes(shipped):
    from offchain.devnet.system import DevnetMarket, devnet_spec, shipped_profiles
    from offchain.protocol.deploy_plan import plan

    markets = [DevnetMarket(1, "BTC", 60_000.0), DevnetMarket(2, "ETH", 3_000.0)]
    spec = devnet_spec(markets, [], "0x" + "11" * 20, "0x" + "22" * 20, None, shipped_profiles())
    assert [m.funding_reserve_seconds for m in spec.markets] == [7200, 7200]
    assert _as_rows(spec.scenario_groups) == _groups_of(shipped, [1, 2])
    got = [(c.class_id, c.multiplier, c.min_volume, c.min_equity) for c in spec.profiles.classes]
    assert got == _classes_of(shipped, "devnet")
    steps = {s.key: s for s in plan(spec)}
    assert steps["market:1:funding_reserve"].args == (1, 7200)
    assert steps["group:1"].args[1][0] == [1, 2]
    assert steps["profiles"].args[2] == shipped.profiles.heartbeat
    assert [k for k in steps if k.startswith("profiles:class:")] == [
        f"profiles:class:{i}" for i in range(1, 7)
    ]
    # One market alone: no group (a group needs every one of its markets deployed).
    alone = devnet_spec(markets[:1], [], "0x" + "11" * 20, "0x" + "22" * 20)
    assert alone.scenario_groups == [] and alone.profiles is None


def test_calibrate_writer__keeps_the_portfolio_and_profile_sections(shipped, tmp_path):
    from types import SimpleNamespace

    from offchain.risk.calibration_run import to_yaml

    # The writer reads the selection's markets and parameters only.
    selection = SimpleNamespace(
        params={}, floors={}, score=(0, 0.0), markets={m.name: m for m in shipped.markets}
    )
    run = SimpleNamespace(selection=selection, dvol={})
    path = tmp_path / "risk.yaml"
    path.write_text(to_yaml(run, shipped))
    again = load_risk_config(path)
    assert again.markets == shipped.markets
    assert again.portfolio == shipped.portfolio and again.groups == shipped.groups
    assert again.profiles == shipped.profiles


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["portfolio", "n_scenarios"], 20, "n_scenarios must lie in \\[2, 16\\]"),
        (["portfolio", "floor"], "x", "portfolio.floor: 'x' is not a number"),
        (["portfolio", "groups", 0, "markets"], ["BTC", "DOGE"], "names \\['DOGE'\\]"),
        (["portfolio", "surprise"], 1, "unknown \\['surprise'\\]"),
        (["profiles", "classes", 0, "multiplier"], "3", "maker: multiplier 3.0x outside"),
        (["profiles", "class_bounds", "max_multiplier"], "1.5", "outside the class bounds"),
        (["profiles", "heartbeat"], -1, "profiles.heartbeat: -1"),
        (["profiles", "eligibility", "devnet", "maker"], {"min_volume_usd": 1}, "maker: expected"),
        (["markets", 0, "funding_reserve_seconds"], 100_000, "above the engine's one day"),
        (["colour"], "red", "unknown key\\(s\\) \\['colour'\\]"),
    ],
)
def test_parse_risk_config__names_what_is_wrong_in_the_new_sections(raw, path, value, message):
    with pytest.raises(RiskConfigError, match=message):
        parse_risk_config(_mutated(raw, path, value))
