"""Pure decision logic of the keeper, the liquidator and the transaction sender (no chain)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offchain import WAD
from offchain.bots.keeper import (
    KeeperConfig,
    KeeperMarket,
    check_reading,
    decide,
    read_history_csv,
)
from offchain.bots.keeper_models import EwmaRiskModel, Proposal
from offchain.bots.liquidator import worst_first
from offchain.bots.metrics import Watchdog
from offchain.devnet.replay import CrashScenario, crash_scenario
from offchain.protocol.chain import Health, Subaccount
from offchain.protocol.margin_math import MarketState
from offchain.protocol.tx_sender import SenderConfig, backoff_delays, bump_fee
from tests.conftest import DEFAULT_GUARDRAILS as GUARDRAILS

NOW = 1_800_000_000
CONFIG = KeeperConfig((KeeperMarket(1, "0x" + "11" * 20, "BTC"),))
HASH = b"\x01" * 32


@pytest.mark.parametrize(
    ("price", "updated_at", "last", "reason"),
    [
        (math.nan, NOW, 100.0, "not a finite number"),
        (math.inf, NOW, 100.0, "not a finite number"),
        (0.0, NOW, 100.0, "zero or negative"),
        (-5.0, NOW, 100.0, "zero or negative"),
        (1_000.0, NOW, 100.0, "price moved x10"),
        (9.99, NOW, 100.0, "price moved x0.0999"),
        (100.0, NOW - 3601, 100.0, "feed is stale: last update 3601 s ago"),
        (100.0, NOW + 1, 100.0, "in the future"),
    ],
)
def test_check_reading__bad_data_refused_with_reason(price, updated_at, last, reason):
    result = check_reading(price, updated_at, NOW, last, max_age=3600, max_jump=10.0)
    assert result is not None and reason in result


def test_check_reading__ordinary_reading_accepted():
    assert check_reading(95.0, NOW - 10, NOW, 100.0, max_age=3600, max_jump=10.0) is None


def _state(target: int, observed_at: int = NOW - 100, updated_at: int = NOW - 100) -> MarketState:
    return MarketState(
        target=target, ramp_from=target, updated_at=updated_at, observed_at=observed_at
    )


def test_decide__increase_clamped_to_max_increase():
    d = decide(1, Proposal(5 * WAD, 0, HASH), _state(2 * WAD), GUARDRAILS, NOW, NOW, CONFIG)
    assert d.action == "update" and d.update is not None
    assert d.update.multiplier == 3 * WAD  # +50%
    assert "clamped from 5.0000" in d.reason


def test_decide__small_change_skipped_inside_hysteresis():
    d = decide(
        1,
        Proposal(2 * WAD + WAD // 50, 0, HASH),
        _state(2 * WAD),
        GUARDRAILS,
        NOW,
        NOW,
        CONFIG,
    )
    assert d.action == "skip" and "inside hysteresis" in d.reason


def test_decide__small_change_pushed_when_refresh_due():
    old = NOW - GUARDRAILS.heartbeat // 2
    state = _state(2 * WAD, observed_at=old, updated_at=old)
    d = decide(1, Proposal(2 * WAD, 0, HASH), state, GUARDRAILS, NOW, NOW, CONFIG)
    assert d.action == "update" and d.update is not None and d.update.multiplier == 2 * WAD


def test_decide__no_new_observation_skipped():
    state = _state(2 * WAD, observed_at=NOW - 5)
    d = decide(1, Proposal(3 * WAD, 0, HASH), state, GUARDRAILS, NOW, NOW - 5, CONFIG)
    assert d.action == "skip" and "nothing observed since the last update" in d.reason


def test_decide__decrease_inside_min_interval_held():
    state = MarketState(
        target=2 * WAD,
        ramp_from=2 * WAD,
        updated_at=NOW - 100,
        observed_at=NOW - 100,
        last_decrease_at=NOW - 100,
    )
    d = decide(1, Proposal(WAD, 0, HASH), state, GUARDRAILS, NOW, NOW, CONFIG)
    assert d.action == "skip"  # clamped back to the target: nothing to push
    assert d.proposed == 2 * WAD


def test_ewma_model__shock_raises_multiplier():
    model = EwmaRiskModel()
    times = np.arange(50) * 3600
    calm = 100 * (1 + 0.004 * (-1.0) ** np.arange(50))
    shocked = np.append(calm, calm[-1] * 0.8)
    quiet = model.propose(1, times, calm, MarketState(), NOW).multiplier
    loud = model.propose(
        1, np.append(times, times[-1] + 12), shocked, MarketState(), NOW
    ).multiplier
    assert quiet == WAD
    assert loud > 2 * WAD


def test_bump_fee__at_least_one_eighth():
    for fee in (0, 1, 7, 8, 10**9, 123_456_789_012):
        assert bump_fee(fee) * 8 >= fee * 9
        assert bump_fee(fee) > fee


def test_backoff_delays__double_and_cap():
    config = SenderConfig(rpc_retries=6, backoff_initial=0.5, backoff_max=3.0)
    assert backoff_delays(config) == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_crash_scenario__seeded_and_falls_by_crash_pct():
    s = CrashScenario(calm_steps=4, crash_pct=0.3, crash_steps=3, rebound_steps=0, seed=3)
    a, b = crash_scenario(s), crash_scenario(s)
    assert a == b
    assert a[-1] == pytest.approx(a[3] * 0.7)
    assert crash_scenario(CrashScenario(seed=4)) != crash_scenario(CrashScenario(seed=5))


def test_worst_first__underwater_then_lowest_ratio():
    def h(sub: int, equity: int, maintenance: int) -> Health:
        return Health(Subaccount("0x" + "22" * 20, sub), equity, maintenance, 0, True)

    ordered = worst_first([h(1, 50, 100), h(2, -10, 100), h(3, 10, 100), h(4, -50, 100)])
    assert [x.account.subaccount for x in ordered] == [4, 2, 3, 1]


def test_watchdog__unhealthy_when_last_tick_is_old():
    dog = Watchdog(max_age=30.0, clock=lambda: 1_000.0)
    assert not dog.healthy()  # never ticked
    dog.beat(980.0)
    assert dog.healthy()
    assert not dog.healthy(now=1_011.0)


def test_keeper_config__rejects_duplicate_markets():
    market = KeeperMarket(1, "0x" + "11" * 20)
    with pytest.raises(ValueError, match="market ids must be distinct"):
        KeeperConfig((market, market))


def test_read_history_csv__cryptodatadownload_layout_oldest_first(tmp_path):
    path = tmp_path / "btc.csv"
    path.write_text(
        "https://www.CryptoDataDownload.com\n"
        "unix,date,symbol,open,high,low,close,Volume BTC,Volume USDT,tradecount\n"
        "1623283200000,2021-06-10 00:00:00,BTC/USDT,1,1,1,37584.76,1,1,1\n"
        "1623279600000,2021-06-09 23:00:00,BTC/USDT,1,1,1,NaN,1,1,1\n"
        "1623276000000,2021-06-09 22:00:00,BTC/USDT,1,1,1,37098.31,1,1,1\n"
    )

    times, prices = read_history_csv(path)

    assert times == [1623276000, 1623283200]
    assert prices == [37098.31, 37584.76]


def test_load_key__ape_alias_decrypted_with_passphrase(tmp_path, monkeypatch):
    import json

    from eth_account import Account

    from offchain.bots.builders import load_key

    keeper = Account.from_key(b"\x05" * 32)
    (tmp_path / "accounts").mkdir()
    keyfile = Account.encrypt(keeper.key, "correct horse")
    (tmp_path / "accounts" / "keeper.json").write_text(json.dumps(keyfile))
    monkeypatch.setenv("APE_DATA_FOLDER", str(tmp_path))
    monkeypatch.setenv("DMM_PASSPHRASE", "correct horse")
    monkeypatch.delenv("DMM_KEEPER_KEY", raising=False)

    loaded = load_key("keeper", "DMM_KEEPER_KEY")

    assert loaded is not None and loaded.address == keeper.address
    assert load_key(None, "DMM_KEEPER_KEY") is None  # no alias, no variable: dry run


def test_batch_deadline__rounded_to_the_minute_only_when_cosigning():
    from dataclasses import replace

    from offchain.bots.keeper import batch_deadline

    assert batch_deadline(NOW + 17, CONFIG) == NOW + 17 + CONFIG.deadline_seconds
    cosign = replace(CONFIG, cosign_dir="/tmp/cosign")
    assert NOW % 60 == 0  # a whole minute
    for t in (NOW, NOW + 1, NOW + 59):  # blocks within the same minute sign the same deadline
        assert batch_deadline(t, cosign) == NOW + cosign.deadline_seconds
    assert batch_deadline(NOW + 60, cosign) == NOW + 60 + cosign.deadline_seconds


def test_keeper_config__cosign_granularity_below_deadline():
    from dataclasses import replace

    with pytest.raises(ValueError, match="cosign_granularity"):
        replace(CONFIG, cosign_granularity=CONFIG.deadline_seconds)
