"""The live risk page in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
``dmm dashboard`` as a process against the anvil devnet shows what the chain holds, and follows
a price move, the keeper's update and a liquidation without a reload; a dead node is one line on
the page, not a crash."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from offchain import WAD
from offchain.bots.dashboard import HEALTH_BUCKETS
from offchain.devnet.system import DEVNET_GUARDRAILS, USDC
from offchain.protocol.chain import latest_block
from tests.integration.conftest import MARKET_BTC, MARKET_ETH, free_port, wait_until, warm_up

ROOT = Path(__file__).resolve().parents[2]
BTC = 60_000.0
WAIT_MS = 20_000  # the page refreshes every 0.5 s; this only bounds a failure


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError("chromium is not installed (make test installs Debian's package)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def start_dashboard(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "offchain.cli", "dashboard", "--config", str(config)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def write_config(tmp_path: Path, rpc: str, system, port: int) -> Path:
    config = tmp_path / "bots.yaml"
    config.write_text(
        f"rpc: {rpc}\nrpc_timeout: 2\n"
        f"registry: '{system.registry.address}'\nengine: '{system.engine.address}'\n"
        "markets:\n"
        f"  - {{id: 1, name: BTC, feed: '{system.feeds[MARKET_BTC].address}'}}\n"
        f"  - {{id: 2, name: ETH, feed: '{system.feeds[MARKET_ETH].address}'}}\n"
        f"dashboard: {{port: {port}, refresh_seconds: 0.5}}\n"
    )
    return config


def bucket(equity: int, maintenance: int) -> int:
    ratio = equity / maintenance if maintenance else (math.inf if equity >= 0 else -math.inf)
    return next(i for i, (_, upper) in enumerate(HEALTH_BUCKETS) if ratio < upper or i == 6)


def assert_page_shows_the_chain(page: Page, w3, system) -> None:
    """Every number on the page against the contracts read here through ape."""
    registry, engine = system.registry, system.engine
    assert page.text_content("#block") == str(w3.eth.block_number)
    for market_id in (MARKET_BTC, MARKET_ETH):
        row = page.locator(f"#market-{market_id}")
        multiplier = registry.multiplier(market_id)
        state = registry.market_state(market_id)
        funding = registry.funding_rate(market_id)
        assert row.locator(".multiplier").get_attribute("data-wei") == str(multiplier)
        assert row.locator(".multiplier").text_content() == f"{multiplier / WAD:.4f}"
        assert row.locator(".target").get_attribute("data-wei") == str(state.target)
        assert row.locator(".funding").get_attribute("data-wei") == str(funding)
        stale = "stale" if registry.is_stale(market_id) else "fresh"
        assert row.locator(".stale").text_content().strip() == stale
        answer = system.feeds[market_id].latestRoundData()[1]
        assert row.locator(".price").text_content() == f"{answer / 10**8:,.2f}"
        tier0 = registry.tiers(market_id)[0][1]
        pct = tier0 * multiplier / WAD / WAD * 100
        assert row.locator(".maintenance").text_content() == f"{pct:.3f}%"
        chart = page.locator(f"#chart-{market_id}")
        assert chart.get_attribute("data-last") == f"{pct:.6f}"  # the line ends at the chain
        assert chart.locator("svg polyline").count() == 1
    for element, value in (
        ("#insurance-fund", engine.insurance_fund()),
        ("#bad-debt", engine.bad_debt()),
        ("#deficit", engine.deficit()),
    ):
        assert page.get_attribute(element, "data-wei") == str(value)
        assert page.text_content(element) == f"{value / WAD:,.2f}"
    accounts = list(engine.accounts_with_positions(0, 100))
    assert page.text_content("#accounts-count") == str(len(accounts))
    health = {
        (a.owner, a.subaccount): engine.account_health(a.owner, a.subaccount) for a in accounts
    }
    liquidatable = sum(engine.is_liquidatable(*a) for a in health)
    assert page.text_content("#liquidatable-count") == str(liquidatable)
    counts = [0] * len(HEALTH_BUCKETS)
    for equity, maintenance, _ in health.values():
        counts[bucket(equity, maintenance)] += 1
    assert page.get_attribute("#health-distribution", "data-counts") == ",".join(map(str, counts))
    rows = page.locator("#nearest tbody tr")
    assert rows.count() == len(accounts)
    ratios = []
    for i in range(rows.count()):
        row = rows.nth(i)
        key = (row.get_attribute("data-owner"), int(row.get_attribute("data-subaccount")))
        equity, maintenance, _ = health[key]
        assert row.locator(".equity").get_attribute("data-wei") == str(equity)
        assert row.locator(".maintenance").get_attribute("data-wei") == str(maintenance)
        ratios.append(equity / maintenance)
    assert ratios == sorted(ratios)  # nearest liquidation first


def test_dashboard__chromium_shows_the_chain_and_follows_a_price_move(
    browser,
    w3,
    system,
    rpc_url,
    maker,
    traders,
    make_keeper,
    make_liquidator,
    accounts,
    advance,
    tmp_path,
):
    trader = traders[0]
    system.fund(maker, 1_000_000 * USDC)
    system.fund_insurance(system.owner, 1_000 * USDC)
    for sub, leverage in ((0, 3.0), (1, 11.0)):  # 11x: liquidatable after -8.5%
        system.fund(trader, 10_000 * USDC, subaccount=sub)
        size = int(10_000 * leverage / BTC * WAD)
        system.trade(MARKET_BTC, maker, trader, size, BTC, taker_sub=sub)
    keeper = make_keeper()
    warm_up(keeper, latest_block(w3).timestamp, {MARKET_BTC: BTC, MARKET_ETH: 3_000.0})
    assert keeper.tick(latest_block(w3)).sent is not None
    port = free_port()
    config = write_config(tmp_path, rpc_url, system, port)
    server = start_dashboard(config, tmp_path / "dashboard.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: http_get(url + "healthz")[0] == 200, timeout=60, what="the dashboard")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)

        assert_page_shows_the_chain(page, w3, system)
        assert page.locator("#events tbody tr[data-kind='keeper update']").count() == 2

        # A price move: BTC -8.5%; the keeper raises its multiplier; the 11x long falls below
        # maintenance. The page follows without a reload.
        before = system.registry.market_state(MARKET_BTC).target
        advance(60)
        system.set_price(MARKET_BTC, BTC * 0.915)
        shock = keeper.tick(latest_block(w3))
        assert shock.sent is not None
        after = system.registry.market_state(MARKET_BTC).target
        assert after > before  # what the shock must change: the target rose
        expect(page.locator("#market-1 .target")).to_have_attribute(
            "data-wei", str(after), timeout=WAIT_MS
        )
        expect(page.locator("#block")).to_have_text(str(w3.eth.block_number), timeout=WAIT_MS)
        assert_page_shows_the_chain(page, w3, system)
        assert page.text_content("#liquidatable-count") == "1"
        # The increase phases in over the registry's ramp: the page says from what to what.
        ramp = DEVNET_GUARDRAILS.increase_ramp
        in_force = system.registry.multiplier(MARKET_BTC)
        assert ramp > 0 and in_force < after
        assert page.text_content("#market-1 .ramp").startswith(
            f"{before / WAD:.4f} → {after / WAD:.4f}, "
        )
        newest = page.locator("#events tbody tr").first
        assert newest.get_attribute("data-kind") == "keeper update"
        assert newest.get_attribute("data-block") == str(shock.sent.block_number)

        # The liquidation bot acts: the event and the fund's share of the penalty appear.
        fund_before = system.engine.insurance_fund()
        bot = make_liquidator(subaccount=1)
        system.fund(accounts[bot.sender.address], 500_000 * USDC, subaccount=1)
        assert bot.tick(latest_block(w3)).liquidations >= 1
        expect(page.locator("#events tbody tr[data-kind='liquidation']")).not_to_have_count(
            0, timeout=WAIT_MS
        )
        expect(page.locator("#block")).to_have_text(str(w3.eth.block_number), timeout=WAIT_MS)
        assert_page_shows_the_chain(page, w3, system)
        assert system.engine.insurance_fund() > fund_before
        assert page.text_content("#liquidatable-count") == "0"

        status, body = http_get(url + "api/snapshot")  # the same numbers as JSON
        assert status == 200
        assert f'"target_wei":"{after}"' in body.replace(" ", "")
        assert page.locator("#server-status").text_content() == ""
    finally:
        server.terminate()
        server.wait(timeout=20)
    log = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in log, log[-2000:]


def test_dashboard__dead_node_is_one_line_on_the_page_and_a_503(browser, tmp_path, system):
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, dead, system, port)
    server = start_dashboard(config, tmp_path / "dashboard.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: http_get(url + "healthz")[0] == 503, timeout=60, what="the dashboard")
        page = browser.new_page()
        page.goto(url)

        error = page.text_content("#error")
        status, body = http_get(url + "api/snapshot")
        health = http_get(url + "healthz")
    finally:
        server.terminate()
        server.wait(timeout=20)

    assert error == f"the node at {dead} did not answer (connection refused)"
    assert status == 503 and '"ok":false' in body.replace(" ", "")
    assert health == (503, f"error: {error}\n")
    log = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in log
    assert f"dashboard: {error}; the page shows it until the chain answers" in log
