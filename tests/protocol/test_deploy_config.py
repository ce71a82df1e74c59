"""The deployment file's checks: the example passes; each setting the contracts would revert on,
or that is unsafe, is refused by its key path before anything is sent."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from offchain import WAD
from offchain.protocol import deploy_config as dc
from offchain.protocol.deploy_config import DeployConfigError, load_deploy_spec, parse_deploy_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "testnet.example.yaml"
DEVNET = ROOT / "deploy" / "devnet.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_load_deploy_spec__example_file_passes():
    spec = load_deploy_spec(EXAMPLE)
    assert spec.chain_id == 11155111
    assert spec.signer_threshold == 2
    assert [m.market_id for m in spec.markets] == [1, 2]
    btc = spec.markets[0]
    assert btc.tiers[0].maintenance_rate == 5 * 10**15
    assert btc.tiers[2].notional_floor == 10_000_000 * WAD
    assert btc.guardrails.max_funding_rate == 190_000_000_000  # 1.9e-7 per second
    assert btc.funding_reserve_seconds == 7200
    assert [g.markets for g in spec.scenario_groups] == [(1, 2)]
    assert spec.profiles is not None and len(spec.profiles.classes) == 6
    assert btc.engine_config()[2] == 2 * 10**16
    assert btc.price_bounds == (10**8, 10**17)
    assert spec.markets[1].price_bounds is None


def test_load_deploy_spec__devnet_system_with_mocks_passes():
    doc = yaml.safe_load(DEVNET.read_text())
    spec = parse_deploy_spec(doc["system"])
    assert spec.collateral is None and spec.mock_collateral is not None
    assert spec.mock_collateral.decimals == 6
    assert [m.mock_feed.answer for m in spec.markets] == [60_000 * 10**8, 3_000 * 10**8]


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
        # the project's own safety rules
        (["signer_threshold"], 1, "single leaked key"),
        (["markets", 0, "engine", "liquidation_fee"], "0.01", "bad debt"),
        (["markets", 0, "engine", "price_band"], "0.2", "markets[0].engine.price_band"),
        (["markets", 0, "engine", "max_price_age"], 0, "markets[0].engine.max_price_age"),
        (["markets", 0, "engine", "oi_cap_usd"], 0, "zero caps every trade"),
        (["markets", 0, "guardrails", "stale_multiplier"], 2, "conservative multiplier"),
        (["markets", 0, "guardrails", "heartbeat"], 600, "increase ramp longer than heartbeat"),
        # bounds the contracts enforce
        (["signer_threshold"], 4, "above the 3 keepers"),
        (["signer_threshold"], 9, "signer_threshold: Input should be less than or equal to 8"),
        (["keepers", 1], "0x1111111111111111111111111111111111111111", "listed twice"),
        (["keepers", 0], "0x" + "00" * 20, "keepers[0]: the zero address"),
        (["markets", 0, "id"], 2**40, "markets[0].id: Input should be less than or equal to"),
        (["markets", 0, "id"], 0, "markets[0].id: Input should be greater than or equal to 1"),
        (["markets", 0, "engine", "oi_cap_usd"], "1e60", "does not fit the engine's uint256"),
        (
            ["markets", 0, "engine", "feed"],
            "0x" + "00" * 20,
            "markets[0].engine.feed: the zero address",
        ),
        (["markets", 0, "engine", "liquidation_fee"], "0.3", "markets[0].engine.liquidation_fee"),
        (["markets", 0, "guardrails", "max_decrease"], "1", "max decrease out of range"),
        (["markets", 0, "guardrails", "max_multiplier"], 20, "max multiplier too large"),
        (["markets", 0, "initial_ratio"], "0.5", "initial_ratio: below 1"),
        (["markets", 0, "tiers", 1, "maintenance_rate"], "0.001", "tier rates decreasing"),
        (["markets", 0, "tiers", 0, "notional_floor_usd"], 1, "first tier floor must be 0"),
        (["markets", 0, "engine", "min_answer"], 10**17, "must be >= 0 and below max_answer"),
        # the file's types
        (["markets", 0, "tiers", 0, "maintenance_rate"], "0.0000000000000000001", "18 decimals"),
        (["markets", 0, "tiers", 0, "maintenance_rate"], "NaN", "is not a finite number"),
        (["markets", 0, "tiers", 0, "maintenance_rate"], "-0.01", "is negative"),
        (["markets", 0, "tiers", 0, "maintenance_rate"], True, "True is not a number"),
        (["markets", 0, "engine", "max_answer"], "1e9", "max_answer: Input should be a valid"),
        (["markets", 1, "id"], 1, "two markets share an id"),
        (["collateral"], "0x1234", "collateral: '0x1234' is not an address"),
        (["collateral"], "0x1C7D4B196Cb0C7B01d743Fbc6116a902379C7238", "wrong EIP-55 checksum"),
        (["allow_single_signer"], "false", "allow_single_signer: Input should be a valid boolean"),
        (["chain_id"], KeyError, "chain_id: required"),
        (["markets", 0, "engine", "max_price_age"], 3600.0, "a valid integer, got 3600.0"),
    ],
)
def test_parse_deploy_spec__refuses_by_key_path(raw, path, value, message):
    with pytest.raises(DeployConfigError) as excinfo:
        parse_deploy_spec(_mutated(raw, path, value))
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_parse_deploy_spec__heartbeat_below_a_minute_refused(raw):
    data = _mutated(raw, ["markets", 0, "guardrails", "increase_ramp"], 0)
    with pytest.raises(DeployConfigError, match=r"guardrails\.heartbeat: below 60 s"):
        parse_deploy_spec(_mutated(data, ["markets", 0, "guardrails", "heartbeat"], 30))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["markets"][0]["engine"].__setitem__("min_anwser", 1), "did you mean"),
        (
            lambda d: d.__setitem__("exchange", []),
            "exchange: unknown key; did you mean 'exchanges'",
        ),
        (lambda d: d["markets"][0]["engine"].pop("max_answer"), "give both min_answer and max"),
        (lambda d: d["markets"][0]["engine"].__setitem__("mock_feed", {"price": 1}), "exactly one"),
    ],
)
def test_parse_deploy_spec__misspelt_or_conflicting_keys_refused(raw, edit, message):
    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(DeployConfigError, match=re.escape(message)):
        parse_deploy_spec(data)


def test_parse_deploy_spec__single_signer_allowed_when_declared(raw):
    data = _mutated(raw, ["signer_threshold"], 1)
    data["allow_single_signer"] = True
    assert parse_deploy_spec(data).signer_threshold == 1


def test_load_deploy_spec__bad_files_one_line(tmp_path):
    cases = {
        "bad.yaml": (b"markets: [\n", "invalid YAML at line 2"),
        "nan.yaml": (EXAMPLE.read_bytes().replace(b'"0.02"', b".nan", 1), "is not a finite"),
        "bin.yaml": (b"chain_id: 1\x00", "binary data"),
        "list.yaml": (b"- 1\n", "expected a mapping"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DeployConfigError) as excinfo:
            load_deploy_spec(path)
        assert message in str(excinfo.value) and str(path) in str(excinfo.value), name
        assert "\n" not in str(excinfo.value)


def test_config_hash__follows_values_not_layout(raw, tmp_path):
    spec = parse_deploy_spec(raw)
    commented = tmp_path / "c.yaml"
    commented.write_text("# reviewed by two people\n" + EXAMPLE.read_text())
    assert load_deploy_spec(commented).config_hash() == spec.config_hash()
    changed = _mutated(raw, ["markets", 0, "engine", "oi_cap_usd"], 50_000_001)
    assert parse_deploy_spec(changed).config_hash() != spec.config_hash()


def test_risk_config__markets_take_tiers_and_guardrails_from_it(raw, tmp_path):
    btc = raw["markets"][0]
    risk = {
        "markets": [
            {
                "name": "BTC",
                "id": 1,
                "tiers": btc["tiers"],
                "initial_ratio": 3,
                "guardrails": {**btc["guardrails"], "max_multiplier": 8, "stale_multiplier": 4},
                "model": {"name": "whatever the risk model reads"},
            }
        ]
    }
    (tmp_path / "risk.yaml").write_text(yaml.safe_dump(risk))
    data = copy.deepcopy(raw)
    data["risk_config"] = "risk.yaml"
    for key in ("tiers", "initial_ratio", "guardrails"):
        del data["markets"][0][key]
    data["markets"][0]["risk"] = "btc"
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))

    spec = load_deploy_spec(tmp_path / "d.yaml")

    assert spec.markets[0].initial_ratio == 3 * WAD
    assert spec.markets[0].guardrails.max_multiplier == 8 * WAD
    data["markets"][0]["initial_ratio"] = 2  # written in both places: refused
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployConfigError, match=r"markets\[0\].initial_ratio: comes from"):
        load_deploy_spec(tmp_path / "d.yaml")
    data["markets"][0].pop("initial_ratio")
    data["markets"][0]["risk"] = "SOL"
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployConfigError, match=r"markets\[0\].risk: no market 'SOL'"):
        load_deploy_spec(tmp_path / "d.yaml")


def _constant(source: str, name: str) -> int:
    match = re.search(rf"^{name}: constant\(u?int256\) = (.+)$", source, re.M)
    assert match, name
    return int(eval(match.group(1), {"__builtins__": {}}))  # "2**32 - 1", "2 * 10**17"


def test_bounds__mirror_the_contracts_constants():
    # The engine's configuration bounds live in its governance part.
    engine = (ROOT / "contracts" / "EngineGovernance.vy").read_text()
    registry = (ROOT / "contracts" / "RiskParameterRegistry.vy").read_text()
    assert _constant(engine, "MAX_MARKET_ID") == dc.MAX_MARKET_ID
    assert _constant(engine, "MAX_PRICE_BAND") == dc.ENGINE_MAX_PRICE_BAND
    assert _constant(engine, "MAX_LIQUIDATION_FEE") == dc.ENGINE_MAX_LIQUIDATION_FEE
    assert _constant(engine, "MAX_PRICE_AGE") == dc.ENGINE_MAX_PRICE_AGE
    assert _constant(engine, "MASK_128") == dc.MAX_PRICE_BOUND_WAD
    assert _constant(registry, "MAX_SIGNATURES") == dc.MAX_SIGNATURES
    assert _constant(registry, "MAX_INITIAL_RATIO") == dc.MAX_INITIAL_RATIO
    assert '"engine: zero feed"' in engine and '"registry: keeper is the zero address"' in registry
