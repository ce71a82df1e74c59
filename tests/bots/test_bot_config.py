"""The bots' configuration, keys and warm-up histories: each mistake is one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from eth_account import Account

from offchain.bots.bot_config import ConfigError, load_config, parse_config
from offchain.bots.builders import config_histories, decrypt_keyfile, load_key, read_history
from offchain.bots.preflight import history_problem
from offchain.protocol.chain import FeedReading
from offchain.protocol.tx_sender import GWEI

EXAMPLE = Path(__file__).resolve().parents[2] / "offchain" / "bots" / "keeper.example.yaml"
FEED = "0x" + "22" * 20
BASE = {"registry": "0x" + "11" * 20, "markets": [{"id": 1, "feed": FEED, "name": "BTC"}]}


def config(**changes) -> dict:
    return {**BASE, **changes}


def test_example_config__passes_and_builds_every_section():
    cfg = load_config(EXAMPLE)
    assert [m.market_id for m in cfg.markets()] == [1, 2]
    assert cfg.keeper_config().hysteresis == 0.05
    assert cfg.liquidator_config().liquidator_subaccount == 1
    assert cfg.sender_config().priority_fee == 1 * GWEI
    assert cfg.loop_config().outage_tolerance_seconds == 300
    assert (cfg.metrics_port("keeper"), cfg.metrics_port("liquidator")) == (9101, 9102)
    assert [m.funding.mode for m in cfg.file.markets] == ["premium", "reference"]
    assert cfg.file.scenarios is not None and cfg.file.scenarios.refresh_fraction == 0.5
    assert cfg.file.profiles is not None and cfg.file.profiles.scale == "testnet"
    assert cfg.file.relay == "0x8888888888888888888888888888888888888888"


def test_example_config__funding_sources_built_as_the_models_read_them():
    from web3 import Web3

    from offchain.bots.builders import funding_planner
    from offchain.risk.funding import PremiumFundingModel, ReferenceFundingModel

    cfg = load_config(EXAMPLE)
    planner = funding_planner(cfg, Web3(), None)
    assert planner is not None
    btc, eth = planner.markets[1], planner.markets[2]
    assert isinstance(btc.model, PremiumFundingModel) and btc.model.interest_8h == 10**14
    assert btc.model.min_window_notional == 100_000 * 10**18
    assert isinstance(eth.model, ReferenceFundingModel) and eth.model.max_age_s == 9 * 3600
    assert eth.feed == "0x5555555555555555555555555555555555555555"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (config(markets=[{"feed": FEED}]), "markets[0].id: required"),
        (config(markets=[{"id": "BTC", "feed": FEED}]), "markets[0].id: Input should be a valid"),
        (config(markets=[{"id": 1.5, "feed": FEED}]), "markets[0].id: Input should be a valid"),
        (config(markets=[{"id": 1}]), "markets[0].feed: required"),
        (config(keeper={"hysteresis": "abc"}), "keeper.hysteresis: Input should be a valid number"),
        (config(keeper={"hysteresis": float("nan")}), "keeper.hysteresis: Input should be a fin"),
        (config(keeper={"hysteresys": 0.1}), "keeper.hysteresys: unknown key; did you mean"),
        (config(model={"kind": "ewma", "lam": "0.9"}), "model.lam: Input should be a valid number"),
        (config(liquidator={"subaccount": -1}), "liquidator.subaccount: Input should be greater"),
        (config(loop={"max_ticks": True}), "loop.max_ticks: Input should be a valid integer"),
        (config(metrics_port=9101), "metrics_port: set keeper.metrics_port and liquidator"),
        (
            config(keeper={"metrics_port": 9101}, liquidator={"metrics_port": 9101}),
            "are both 9101: the second bot would fail with 'Address already in use'",
        ),
        (config(rpc="127.0.0.1:8545"), "rpc: '127.0.0.1:8545' is not an http(s) URL"),
        (config(registry="0x1234"), "registry: '0x1234' is not an address"),
        (config(exchange="x"), "exchange: unknown key"),
        (
            config(markets=[{"id": 1, "feed": FEED, "funding": {"mode": "premium"}}]),
            "markets[0].funding: premium mode reads the engine's fills: set 'engine'",
        ),
        (
            config(markets=[{"id": 1, "feed": FEED, "funding": {"mode": "reference"}}]),
            "funding.feed: required with mode: reference",
        ),
        (
            config(markets=[{"id": 1, "feed": FEED, "funding": {"mode": "weekly"}}]),
            "markets[0].funding.mode: Input should be 'premium', 'reference' or 'zero'",
        ),
        (config(profiles={"registry": FEED}), "profiles: account records are the engine's"),
        (config(relay=FEED), "relay: the relay lands risk and scenario batches together"),
        (
            config(scenarios={"registry": FEED, "groups": [0]}),
            "scenarios.groups[0]: Input should be greater",
        ),
        (config(scenarios={"registry": FEED, "refresh": 1}), "scenarios.refresh: unknown key"),
    ],
)
def test_parse_config__mistakes_named_by_key_path(raw, message):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw, "bots.yaml")
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith("bots.yaml: ") and "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("keeper", {"hysteresis": 2.0}, "bots.yaml: keeper: hysteresis must lie in [0, 1)"),
        ("keeper", {"cosign_granularity": 600}, "keeper: cosign_granularity must lie in"),
        ("loop", {"outage_tolerance_seconds": -5}, "loop: outage_tolerance_seconds must not"),
        ("sender", {"stuck_blocks": 0}, "sender: stuck_blocks must be at least 1"),
        ("liquidator", {"throttle_after": 0}, "liquidator: max_actions_per_tick and"),
    ],
)
def test_sections__the_components_own_checks_reported_by_section(section, values, message):
    cfg = parse_config(config(**{section: values}), "bots.yaml")
    build = {
        "keeper": cfg.keeper_config,
        "loop": cfg.loop_config,
        "sender": cfg.sender_config,
        "liquidator": cfg.liquidator_config,
    }[section]
    if section == "liquidator":
        message = "liquidator: throttle_after and throttle_blocks must be >= 1"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        build()


def test_sender__gwei_or_wei_not_both():
    cfg = parse_config(config(sender={"priority_fee_gwei": 2, "max_fee_cap_gwei": 50.5}))
    assert cfg.sender_config().priority_fee == 2 * GWEI
    assert cfg.sender_config().max_fee_cap == int(50.5 * GWEI)
    both = parse_config(config(sender={"priority_fee_gwei": 2, "priority_fee": 5}))
    with pytest.raises(ConfigError, match="give priority_fee or priority_fee_gwei, not both"):
        both.sender_config()


def test_load_config__yaml_problems_one_line(tmp_path):
    cases = {
        "bin.yaml": b"rpc: x\x00",
        "latin.yaml": b"registry: caf\xe9\n",
        "nan.yaml": b"keeper: {hysteresis: .nan}\n",
        "twice.yaml": b"rpc: http://a\nrpc: http://b\n",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError) as excinfo:
            load_config(tmp_path / name)
        assert str(excinfo.value).startswith(str(tmp_path / name)), name
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


# ---------------------------------------------------------------------------------------------
# Histories


def test_history__relative_to_the_config_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "btc.csv").write_text("unix,close\n3600,100\n7200,101\n")
    raw = config(markets=[{"id": 1, "feed": FEED, "history": "data/btc.csv"}])
    (tmp_path / "bots.yaml").write_text(yaml.safe_dump(raw))

    histories = config_histories(load_config(tmp_path / "bots.yaml"))

    assert histories == {1: ([3600, 7200], [100.0, 101.0])}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such history file"),
        (b"", "empty file"),
        (b"unix,close\n", "no usable price rows"),
        (b"unix,close\n1,nan\n2,-1\n", "no usable price rows"),
        (b"time,volume\n1,2\n", "needs a unix/timestamp column and a close/price column"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary data"),
        (b"unix,close\n1,caf\xe9\n", "not UTF-8 text"),
        ("dir", "is a directory"),
    ],
)
def test_read_history__bad_files_one_line(tmp_path, content, message):
    path = tmp_path / "h.csv"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as excinfo:
        read_history(path, "bots.yaml: markets[0].history")
    text = str(excinfo.value)
    assert text.startswith("bots.yaml: markets[0].history: ") and message in text
    assert "\n" not in text


def _reading(price: float, updated_at: int) -> FeedReading:
    return FeedReading(FEED, 1, round(price * 1e8), 8, updated_at)


def test_history_problem__time_and_price_gaps_with_figures():
    day = 86_400
    times, prices = [0, 3600], [100.0, 101.0]
    assert history_problem(times, prices, _reading(102.0, 7200), 3 * 3600, 0.2) is None
    old = history_problem(times, prices, _reading(101.0, 5 * 365 * day), 3 * 3600, 0.2)
    assert old is not None
    assert "ends 1970-01-01 01:00 UTC, 5.0 years before the feed's last answer" in old
    moved = history_problem(times, prices, _reading(160.0, 7200), 3 * 3600, 0.2)
    assert moved == (
        "the warm-up history ends at 101.00, the feed answers 160.00 (+58.4%; allowed 20%)"
    )
    future = history_problem([0, 10 * day], [1.0, 1.0], _reading(1.0, 0), 3600, 0.2)
    assert future is not None and "10.0 days after the feed's last answer" in future


# ---------------------------------------------------------------------------------------------
# Keys


@pytest.fixture
def keystore(tmp_path, monkeypatch):
    key = Account.from_key(b"\x05" * 32)
    (tmp_path / "accounts").mkdir()
    path = tmp_path / "accounts" / "keeper.json"
    path.write_text(json.dumps(Account.encrypt(key.key, "correct horse", iterations=2)))
    monkeypatch.setenv("APE_DATA_FOLDER", str(tmp_path))
    monkeypatch.delenv("DMM_KEEPER_KEY", raising=False)
    return key, path


def test_load_key__alias_or_file_with_passphrase(keystore, monkeypatch):
    key, path = keystore
    monkeypatch.setenv("DMM_PASSPHRASE", "correct horse")
    assert load_key("keeper", "DMM_KEEPER_KEY").address == key.address
    assert load_key(str(path), "DMM_KEEPER_KEY").address == key.address
    assert load_key(None, "DMM_KEEPER_KEY") is None  # no alias, no variable: dry run


def test_load_key__wrong_passphrase_one_line(keystore, monkeypatch):
    monkeypatch.setenv("DMM_PASSPHRASE", "wrong")
    with pytest.raises(ConfigError, match=r"keeper\.json: wrong passphrase"):
        load_key("keeper", "DMM_KEEPER_KEY")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not a key file (invalid JSON"),
        (b'{"address": "x"}', "not an encrypted key file (no 'crypto' section)"),
        (b'{"crypto": {"cipher": "x"}}', "key.json: "),
        (b"\x00\x01\x02", "binary data"),
    ],
)
def test_decrypt_keyfile__corrupt_files_one_line(tmp_path, content, message):
    path = tmp_path / "key.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as excinfo:
        decrypt_keyfile(path, "pw")
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_load_key__directory_or_missing_key_file(tmp_path, monkeypatch):
    monkeypatch.setenv("APE_DATA_FOLDER", str(tmp_path))
    monkeypatch.setenv("DMM_PASSPHRASE", "pw")
    with pytest.raises(ConfigError, match="--account ghost: no key file at"):
        load_key("ghost", "DMM_KEEPER_KEY")
    (tmp_path / "accounts" / "dir.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is a directory, not a key file"):
        load_key("dir", "DMM_KEEPER_KEY")


def test_load_key__bad_environment_key_never_echoed(monkeypatch):
    monkeypatch.setenv("DMM_KEEPER_KEY", "0xsecretbutmalformed")
    with pytest.raises(ConfigError) as excinfo:
        load_key(None, "DMM_KEEPER_KEY")
    assert str(excinfo.value) == (
        "DMM_KEEPER_KEY: not a private key (expected 32 bytes as 64 hex digits)"
    )
