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
