"""A running keeper, built from a bot config, lands everything the margin follows on anvil:
funding from the engine's fills, scenario groups through the relay (a hedged BTC/ETH account
pays less than its tiered sum while they are fresh, the tiered sum once stale) and account
classes (a liquidated account gets the penalty class on chain). The keeper runs in its loop in a
thread; the tests wait on its tick counter and on chain state, never on a fixed delay."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from offchain import WAD
from offchain.bots.bot_config import load_config
from offchain.bots.builders import build_keeper
from offchain.bots.keeper import Keeper, TickResult
from offchain.bots.loop import LoopConfig, run_loop
from offchain.bots.preflight import PreflightError, check_keeper_contracts, check_profile_classes
from offchain.devnet.system import USDC, System
from offchain.protocol.chain import latest_block
from offchain.protocol.portfolio_math import unpack_shocks
from offchain.risk.funding import funding_needs_push
from offchain.risk.risk_config import load_risk_config
from tests.integration.conftest import HOUR, MARKET_BTC, MARKET_ETH

BTC, ETH = 60_000.0, 3_000.0
WARM_HOURS = 800  # the scenarios need 720 joint hours before their first set
LIQUIDATED = load_risk_config().profiles.table("devnet").by_name("liquidated").class_id


def bot_file(tmp_path: Path, rpc_url: str, system: System, **extra) -> Path:
    """The bot config of the devnet system, with every new section."""
    doc = {
        "rpc": rpc_url,
        "registry": system.registry.address,
        "engine": system.engine.address,
        "markets": [
            {"id": MARKET_BTC, "name": "BTC", "feed": system.feeds[MARKET_BTC].address},
            {"id": MARKET_ETH, "name": "ETH", "feed": system.feeds[MARKET_ETH].address},
        ],
        "model": {"kind": "ewma"},
        "scenarios": {"registry": system.scenarios.address},
        "profiles": {
            "registry": system.profiles.address,
            "scale": "devnet",
            "interval_seconds": 60,
        },
        "relay": system.relay.address,
        "sender": {
            "poll_interval": 0.05,
            "backoff_initial": 0.05,
            "backoff_max": 0.4,
            "rpc_retries": 4,
            "receipt_timeout": 30,
        },
        **extra,
    }
    path = tmp_path / "bots.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def correlated_history(now: int, hours: int = WARM_HOURS, seed: int = 11) -> dict:
    """Hourly BTC and ETH prices (0.5%/h, correlation 0.8) ending an hour before ``now``."""
    rng = np.random.default_rng(seed)
    common, own = rng.standard_normal((2, hours))
    times = [now - HOUR * (hours - i) for i in range(hours)]
    out = {}
    for market, start, mix in ((MARKET_BTC, BTC, own), (MARKET_ETH, ETH, -own)):
        r = 0.005 * (0.9 * common + 0.44 * mix)
        path = start * np.exp(np.cumsum(r[::-1]))[::-1]  # ends at the start price
        out[market] = (times, [float(p) for p in path])
    return out


class Running:
    """The keeper in its loop in a thread; ``wait`` mines blocks until ``done()``."""

    def __init__(self, w3, keeper: Keeper) -> None:
        self.w3 = w3
        self.keeper = keeper
        self.results: list[TickResult] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _tick(self, block) -> TickResult:
        result = self.keeper.tick(block)
        self.results.append(result)
        return result

    def _run(self) -> None:
        config = LoopConfig(poll_interval=0.02, backoff_initial=0.05, max_consecutive_failures=2)
        try:
            run_loop("keeper", self.w3, self._tick, config, stop=self.stop)
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def wait(self, done: Callable[[], bool], timeout: float = 90) -> None:
        """Mine a block, wait for the keeper's tick on it, until ``done()``."""
        deadline = time.monotonic() + timeout
        while not done():
            assert self.error is None, f"the keeper stopped: {self.error}"
            assert time.monotonic() < deadline, "the keeper did not get there in time"
            ticks = len(self.results)
            self.w3.provider.make_request("evm_mine", [])
            while len(self.results) == ticks and self.error is None:
                assert time.monotonic() < deadline, "the keeper did not tick"
                self.stop.wait(0.02)


@pytest.fixture
def keeper_from_config(w3, system, keeper_key, rpc_url, tmp_path):
    def _make(**extra) -> Keeper:
        cfg = load_config(bot_file(tmp_path, rpc_url, system, **extra))
        check_keeper_contracts(w3, cfg, system.registry.address)
        warm = correlated_history(latest_block(w3).timestamp)
        keeper = build_keeper(cfg, w3, system.registry.address, keeper_key, False, histories=warm)
        if keeper.profiles is not None:
            check_profile_classes(keeper.profiles, "devnet")
        return keeper

    return _make


def hedged_account(system: System, maker, trader) -> None:
    """1 BTC long and 20 ETH short (60,000 USD each) on 10,000 USD."""
    system.fund(maker, 2_000_000 * USDC)
    system.fund(trader, 10_000 * USDC)
    system.trade(MARKET_BTC, maker, trader, WAD, BTC)
    system.trade(MARKET_ETH, maker, trader, -20 * WAD, ETH)


def test_keeper__scenarios_through_the_relay_give_a_hedged_book_portfolio_credit(
    w3, system, maker, traders, keeper_from_config, advance
):
    trader = traders[0]
    hedged_account(system, maker, trader)
    before = system.engine.account_details(trader, 0)
    assert before.portfolio_group == 0 and before.maintenance == before.tiered_maintenance
    keeper = keeper_from_config()
    start = latest_block(w3).number

    with Running(w3, keeper) as running:
        running.wait(lambda: system.scenarios.is_fresh(1))

    # The first tick had a risk batch and a scenario batch: one relay transaction landed both.
    landed = next(r for r in running.results if r.scenario_updates)
    assert landed.relayed and landed.sent is not None
    assert landed.sent.block_number > start
    risk = list(system.registry.RiskUpdated.range(start, latest_block(w3).number + 1))
    scen = list(system.scenarios.ScenariosUpdated.range(start, latest_block(w3).number + 1))
    assert {e.block_number for e in scen} <= {e.block_number for e in risk}
    assert int(scen[0].count) == load_risk_config().portfolio.n_scenarios == 10
    # What landed is what the keeper signed, inside the group's bounds.
    config, state = system.scenarios.group(1)
    signed = next(d for d in landed.scenarios if d.update is not None)
    assert [unpack_shocks(w, state.count) for w in state.shocks] == [list(r) for r in signed.shocks]
    assert all(abs(z) <= 6500 for row in signed.shocks for z in row)

    during = system.engine.account_details(trader, 0)
    assert during.portfolio_group == 1
    assert during.funding_reserve == 0  # no funding source configured: the keeper signs 0
    assert during.maintenance < during.tiered_maintenance
    assert during.maintenance >= -(-during.tiered_maintenance * 5 // 100)  # the 5% floor

    # The keeper stopped; past the group's heartbeat the scenarios are stale: tiered sum again.
    advance(config.heartbeat + 1)
    w3.provider.make_request("evm_mine", [])
    assert not system.scenarios.is_fresh(1)
    stale = system.engine.account_details(trader, 0)
    assert stale.portfolio_group == 0 and stale.maintenance == stale.tiered_maintenance


def test_keeper__premium_funding_lands_with_its_own_hysteresis(
    w3, system, maker, traders, keeper_from_config, advance
):
    trader = traders[1]
    system.fund(maker, 2_000_000 * USDC)
    system.fund(trader, 100_000 * USDC)
    premium = {"mode": "premium", "window_hours": 8}
    btc, eth = (
        {"id": m, "name": n, "feed": system.feeds[m].address, "funding": premium}
        for m, n in ((MARKET_BTC, "BTC"), (MARKET_ETH, "ETH"))
    )
    keeper = keeper_from_config(markets=[btc, eth])
    interest = 10**14 // 28_800

    with Running(w3, keeper) as running:
        # No fills yet: the interest term (0.01% per 8 hours) with the first update.
        running.wait(lambda: system.registry.funding_rate(MARKET_BTC) != 0)
        assert system.registry.funding_rate(MARKET_BTC) == interest
        target = system.registry.market_state(MARKET_BTC).target
        # Eight hours of fills 0.1% above the oracle.
        for _ in range(8):
            advance(HOUR)
            system.set_price(MARKET_BTC, BTC)
            system.set_price(MARKET_ETH, ETH)
            price = int(BTC * WAD) * 1001 // 1000
            system.engine.settle_trade(
                MARKET_BTC, maker, 0, trader, 0, WAD // 2, price, sender=system.exchange
            )
            ticks = len(running.results)
            running.wait(lambda ticks=ticks: len(running.results) > ticks + 1)
        running.wait(lambda: system.registry.funding_rate(MARKET_BTC) > interest)

    rate = system.registry.funding_rate(MARKET_BTC)
    quote = keeper.funding.markets[MARKET_BTC].model.quote(
        latest_block(w3).timestamp, system.registry.guardrails(MARKET_BTC).max_funding_rate
    )
    assert quote.source == "premium" and quote.premium == 10**15  # 0.1%
    assert rate == 5 * 10**14 // 28_800  # (0.1% - 0.05%) per 8 hours, per second
    assert not funding_needs_push(rate, quote.rate)
    assert 0 < rate <= system.registry.guardrails(MARKET_BTC).max_funding_rate
    # The funding moves were pushed on their own: the multiplier target did not change.
    assert system.registry.market_state(MARKET_BTC).target == target
    pushes = [d for r in running.results for d in r.decisions if d.update and d.market_id == 1]
    assert any("funding" in d.reason and d.current == d.proposed for d in pushes)
    # ETH had no fills: its rate stayed the interest term, not pushed again.
    assert system.registry.funding_rate(MARKET_ETH) == interest
    # The long pays: its maintenance carries the shipped funding reserve.
    details = system.engine.account_details(trader, 0)
    reserve_s = system.engine.funding_reserve_seconds(MARKET_BTC)
    size, _ = system.engine.position(trader, 0, MARKET_BTC)
    notional = -(-size * system.engine.mark_price(MARKET_BTC)[0] // WAD)
    assert details.funding_reserve == -(-notional * rate * reserve_s // WAD) > 0


def test_keeper__a_liquidated_account_gets_the_penalty_class_on_chain(
    w3, system, maker, traders, accounts, keeper_from_config, advance
):
    trader, liquidator = traders[2], accounts[7]
    system.fund(maker, 2_000_000 * USDC)
    system.fund(trader, 15_000 * USDC)
    system.fund(liquidator, 1_000_000 * USDC, subaccount=1)
    system.trade(MARKET_BTC, maker, trader, 4 * WAD, BTC)
    advance(60)
    system.set_price(MARKET_BTC, BTC * 0.95)
    system.engine.liquidate(trader, 0, MARKET_BTC, 4 * WAD, 1, sender=liquidator)
    assert system.profiles.profile(trader, 0).class_id == 0
    keeper = keeper_from_config()

    with Running(w3, keeper) as running:
        running.wait(lambda: system.profiles.profile(trader, 0).class_id == LIQUIDATED)

    assert system.engine.account_details(trader, 0).class_id == LIQUIDATED
    decisions = [d for r in running.results for d in r.profiles if d.update is not None]
    assert [(d.owner.lower(), d.class_id) for d in decisions][:1] == [
        (trader.address.lower(), LIQUIDATED)
    ]
    # The maker traded one way only: no class to sign (the default), nothing sent for it.
    assert system.profiles.profile(maker, 0).class_id == 0


def test_preflight__the_keeper_s_contracts_must_be_those_contracts(w3, system, rpc_url, tmp_path):
    good = load_config(bot_file(tmp_path, rpc_url, system))
    notes = check_keeper_contracts(w3, good, system.registry.address)
    assert len(notes) == 3
    swapped = load_config(
        bot_file(tmp_path, rpc_url, system, scenarios={"registry": system.profiles.address})
    )
    with pytest.raises(PreflightError, match="is 'DynamicMarginProfileRegistry', not a"):
        check_keeper_contracts(w3, swapped, system.registry.address)
    with pytest.raises(PreflightError, match="uses risk registry"):
        check_keeper_contracts(w3, good, system.engine.address)
