"""The deployment file's checks: the example passes, each unsafe setting is refused by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from offchain import WAD
from offchain.protocol.deploy_config import DeployConfigError, load_deploy_spec, parse_deploy_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "testnet.example.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_load_deploy_spec__example_file_passes():
    spec = load_deploy_spec(EXAMPLE)
    assert spec.signer_threshold == 2
    assert [m.market_id for m in spec.markets] == [1, 2]
    btc = spec.markets[0]
    assert btc.tiers[0].maintenance_rate == 5 * 10**15
    assert btc.tiers[2].notional_floor == 10_000_000 * WAD
    assert btc.guardrails.max_funding_rate == 10**12
    assert btc.engine_config()[2] == 2 * 10**16
    assert btc.price_bounds == (10**8, 10**17)
    assert spec.markets[1].price_bounds is None


def _mutated(raw: dict, path: list, value) -> dict:
    data = copy.deepcopy(raw)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["signer_threshold"], 1, "single leaked key"),
        (["signer_threshold"], 4, "above the 3 keepers"),
        (["keepers", 1], "0x1111111111111111111111111111111111111111", "listed twice"),
        (["collateral"], "0x1234", "not an address"),
        (["markets", 0, "engine", "liquidation_fee"], "0.01", "bad debt"),  # = the 1% floor
        (["markets", 0, "engine", "price_band"], "0.2", "price_band"),
        (["markets", 0, "engine", "max_price_age"], 0, "max_price_age"),
        (["markets", 0, "engine", "oi_cap_usd"], 0, "oi_cap_usd"),
        (["markets", 0, "guardrails", "stale_multiplier"], 2, "conservative multiplier"),
        (["markets", 0, "guardrails", "max_decrease"], "1", "max decrease out of range"),
        (["markets", 0, "guardrails", "heartbeat"], 30, "heartbeat"),
        (["markets", 0, "initial_ratio"], "0.5", "initial_ratio"),
        (["markets", 0, "tiers", 1, "maintenance_rate"], "0.001", "tier rates decreasing"),
        (["markets", 0, "tiers", 0, "maintenance_rate"], "0.0000000000000000001", "18 decimals"),
        (["markets", 1, "id"], 1, "share an id"),
        (["markets", 0, "engine", "min_answer"], 10**17, "must be >= 0 and below"),
        (["markets", 0, "engine", "max_answer"], "1e9", "whole numbers"),
    ],
)
def test_parse_deploy_spec__refuses_unsafe_setting(raw, path, value, message):
    with pytest.raises(DeployConfigError, match=message):
        parse_deploy_spec(_mutated(raw, path, value))


def test_parse_deploy_spec__single_signer_allowed_when_declared(raw):
    data = _mutated(raw, ["signer_threshold"], 1)
    data["allow_single_signer"] = True
    assert parse_deploy_spec(data).signer_threshold == 1


def test_load_deploy_spec__malformed_yaml_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("markets: [\n")
    with pytest.raises(DeployConfigError, match="not valid YAML"):
        load_deploy_spec(bad)
