"""The demo: a devnet crash with the risk keeper and the liquidation bot at work.

``run_demo`` deploys the whole system on the connected devnet (ape) from the shipped
configuration (guardrails, funding bound and reserve, the BTC/ETH scenario group, the account
classes), funds a market maker, the bot and the insurance fund, opens a book of cross and
isolated positions, then replays a price path into the mock feeds one hourly step at a time.
After each step the keeper ticks (reads the feeds, signs the multipliers and funding rates, the
group's joint scenarios and, each hour, the account classes; risk and scenario batches land in
one transaction through the relay) and then the liquidation bot ticks (scans, liquidates worst
first, backstops the underwater, deleverages the deficit, repays bad debt); both run in-process
and talk to the node over JSON-RPC as in production. Everything reported is read back from the
chain: the registries' state, each account's details, the engine's events, balances and
positions, and the books replayed from the events to the wei.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from eth_account import Account

from offchain import WAD
from offchain.bots.engine_records import EngineRecords
from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket, TickResult
from offchain.bots.keeper_funding import FundingPlanner, MarketFunding
from offchain.bots.keeper_models import CalibratedRiskModel
from offchain.bots.keeper_profiles import ProfilePlanner
from offchain.bots.keeper_scenarios import ScenarioPlanner
from offchain.bots.liquidator import Liquidator, LiquidatorConfig, scan
from offchain.bots.metrics import BotMetrics
from offchain.devnet.chart import plot_demo
from offchain.devnet.demo_accounts import AccountWatch
from offchain.devnet.ledger import books, read_events
from offchain.devnet.replay import replay
from offchain.devnet.report import (
    BackstopEvent,
    DeleverageEvent,
    DemoResult,
    LiquidationEvent,
    RepayEvent,
    StepRecord,
    usd,
)
from offchain.devnet.scenario import (
    BACKSTOP_REWARD,
    DEMO_SENDER,
    LIQUIDATION_FEES,
    BookAccount,
    DemoActors,
    DemoConfig,
    Scenario,
    describe,
    market_tiers,
    position_size,
    utc_label,
)
from offchain.devnet.system import (
    SHIPPED,
    USDC,
    DevnetMarket,
    System,
    deploy_system,
)
from offchain.protocol.chain import (
    EngineClient,
    FeedClient,
    Health,
    RegistryClient,
    Subaccount,
    connect,
    latest_block,
)
from offchain.protocol.keeper_clients import (
    ProfileRegistryClient,
    RelayClient,
    ScenarioRegistryClient,
)
from offchain.protocol.tx_sender import SentTx, TxSender
from offchain.risk.funding import PremiumFundingModel

log = logging.getLogger("dmm.demo")

# ---------------------------------------------------------------------------------------------
# The run


class RecordingSender(TxSender):
    """A ``TxSender`` that keeps every mined transaction (for the gas figures)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mined: list[SentTx] = []

    def send(self, to: str, data: bytes, label: str = "tx", value: int = 0) -> SentTx:
        sent = super().send(to, data, label=label, value=value)
        self.mined.append(sent)
        return sent


def deploy_demo(actors: DemoActors, scenario: Scenario) -> System:
    """Token, feeds, registry and engine, with every market of ``scenario`` configured."""
    markets = [
        DevnetMarket(
            p.market_id,
            p.name,
            p.start,
            tiers=market_tiers(p.market_id),
            liquidation_fee=LIQUIDATION_FEES[p.market_id],
        )
        for p in scenario.paths
    ]
    system = deploy_system(
        actors.owner, markets=markets, keepers=[actors.keeper.address], exchange=actors.exchange
    )
    system.engine.set_backstop_reward(BACKSTOP_REWARD, sender=actors.owner)
    for m in markets:
        log.info("market %d (%s) at %s: %s", m.market_id, m.name, f"{m.price:,.2f}", rules(m))
    return system


def rules(m: DevnetMarket) -> str:
    """A market's tiers, guardrails and liquidation terms in one line."""
    g = m.guardrails
    tiers = ", ".join(
        f">{t.notional_floor / WAD:,.0f}: {t.maintenance_rate / WAD:.2%}" for t in m.tiers
    )
    return (
        f"tiers {tiers}; multiplier in [{g.min_multiplier / WAD:g}, {g.max_multiplier / WAD:g}],"
        f" +{g.max_increase / WAD:.0%}/-{g.max_decrease / WAD:.0%} per update,"
        f" {g.stale_multiplier / WAD:g}x when stale ({g.heartbeat} s);"
        f" liquidation penalty {m.liquidation_fee / WAD:.1%}; funding within"
        f" {g.max_funding_rate / WAD:.2e}/s, reserve {m.funding_reserve_seconds} s"
    )


class DemoRun:
    """One demo on a deployed system: open the book, replay with the bots, collect."""

    def __init__(
        self,
        actors: DemoActors,
        scenario: Scenario,
        config: DemoConfig,
        w3: Any,
        system: System,
        first_block: int,
    ) -> None:
        self.actors = actors
        self.scenario = scenario
        self.config = config
        self.w3 = w3
        self.system = system
        self.first_block = first_block  # the deployment's first block
        self.names = {p.market_id: p.name for p in scenario.paths}
        self.engine = EngineClient(w3, system.engine.address)
        self.registry = RegistryClient(w3, system.registry.address)
        self.insurance = Subaccount(self.engine.address, 0)
        self.keeper = self._keeper()
        self.bot = self._bot()
        self.feeder = TxSender(w3, Account.from_key(actors.owner.private_key), DEMO_SENDER)
        self.records: list[StepRecord] = []
        self.liquidations: list[LiquidationEvent] = []
        self.backstops: list[BackstopEvent] = []
        self.deleverages: list[DeleverageEvent] = []
        self.repayments: list[RepayEvent] = []
        self.ticks: list[TickResult] = []
        self.first_liquidatable: dict[Subaccount, int] = {}
        self.labels: dict[Subaccount, str] = {
            Subaccount(actors.maker.address, 0): "maker/0",
            Subaccount(actors.liquidator.address, config.bot_subaccount): "bot",
            self.insurance: "insurance",
        }
        self.descriptions: dict[Subaccount, str] = {}
        self.roles: dict[str, Subaccount] = {}
        self.watch = AccountWatch(system, self.engine, self.registry, self.names)
        self.initial_insurance = 0
        self.cursor = 0

    def _keeper(self) -> Keeper:
        """The keeper as a deployment runs it: the shipped model on hourly bars, premium funding
        in both markets, the group's scenarios on the same bars, classes every hour, the relay."""
        self._set_balance(self.actors.keeper.address)
        markets = tuple(
            KeeperMarket(p.market_id, self.system.feeds[p.market_id].address, p.name)
            for p in self.scenario.paths
        )
        step = self.scenario.step_seconds
        ids = [p.market_id for p in self.scenario.paths]
        model = CalibratedRiskModel(
            {m: market_tiers(m)[0].maintenance_rate for m in ids}, bar_seconds=step
        )
        engine = self.system.engine.address
        funding = FundingPlanner(
            {m: MarketFunding(m, PremiumFundingModel()) for m in ids},
            EngineRecords(self.w3, engine),
            FeedClient(self.w3),
        )
        keeper = Keeper(
            KeeperConfig(markets=markets),
            self.registry,
            FeedClient(self.w3),
            model,
            self.actors.keeper,
            RecordingSender(self.w3, self.actors.keeper, DEMO_SENDER),
            self.w3.eth.chain_id,
            BotMetrics("keeper"),
            echo=log.info,
            funding=funding,
            relay=RelayClient(self.w3, self.system.relay.address),
        )
        assert SHIPPED.portfolio is not None and SHIPPED.profiles is not None
        keeper.scenarios = ScenarioPlanner(
            ScenarioRegistryClient(self.w3, self.system.scenarios.address),
            lambda market_id, now: model.candles(market_id)[0],
            keeper.market_names,
            SHIPPED.portfolio.design(),
            bar_seconds=step,
        )
        profiles = self.system.profiles.address
        keeper.profiles = ProfilePlanner(
            ProfileRegistryClient(self.w3, profiles),
            EngineRecords(self.w3, engine, profiles),
            SHIPPED.profiles.table("devnet"),
            interval_s=step,
            start_block=self.first_block,
        )
        return keeper

    def _bot(self) -> Liquidator:
        key = Account.from_key(self.actors.liquidator.private_key)
        self._set_balance(key.address)
        return Liquidator(
            self.engine,
            RecordingSender(self.w3, key, DEMO_SENDER),
            LiquidatorConfig(liquidator_subaccount=self.config.bot_subaccount),
            BotMetrics("liquidator"),
        )

    # -- set-up -------------------------------------------------------------------------------

    def start_keeper(self) -> None:
        """Warm the keeper up on the scenario's history and push the first update."""
        now = latest_block(self.w3).timestamp
        step = self.scenario.step_seconds
        for p in self.scenario.paths:
            n = len(p.warm_up)
            self.keeper.warm_up(p.market_id, [now - step * (n - i) for i in range(n)], p.warm_up)
        self.ticks.append(self.keeper.tick(latest_block(self.w3)))

    def open_book(self) -> None:
        """Fund the insurance fund, the maker and the bot; open every position of the book."""
        a, system, cfg = self.actors, self.system, self.config
        system.fund_insurance(a.owner, cfg.insurance)
        system.fund(a.maker, cfg.maker_collateral)
        system.fund(a.liquidator, cfg.bot_collateral, subaccount=cfg.bot_subaccount)
        for account in cfg.book:
            self._open(account)
        self.initial_insurance = self.engine.insurance_fund()
        self.cursor = latest_block(self.w3).number + 1
        # The first scenarios were signed before the book opened: refresh them on the book's
        # block so that "before the crash" shows the portfolio credit in force.
        self.ticks.append(self.keeper.tick(latest_block(self.w3)))
        log.info(
            "book open: %d trader subaccounts against the maker; insurance fund %s USD",
            len(cfg.book),
            usd(self.initial_insurance),
        )

    def _open(self, account: BookAccount) -> None:
        trader = self.actors.traders[account.trader]
        self.system.fund(trader, account.collateral, subaccount=account.subaccount)
        if account.isolated:
            self.system.engine.set_isolated(account.subaccount, account.isolated, sender=trader)
        if account.turnover:
            first = account.holdings[0].market_id
            price = self.scenario.path(first).start
            size = position_size(account.collateral, account.turnover, price)
            for signed in (size, -size):  # bought, then sold back: a two-sided record
                self.system.trade(
                    first, self.actors.maker, trader, signed, price, taker_sub=account.subaccount
                )
        for h in account.holdings:
            price = self.scenario.path(h.market_id).start
            size = position_size(account.collateral, h.leverage, price)
            self.system.trade(
                h.market_id, self.actors.maker, trader, size, price, taker_sub=account.subaccount
            )
        key = Subaccount(trader.address, account.subaccount)
        mode = f"{self.names[account.isolated]} only" if account.isolated else "cross"
        self.labels[key] = account.label
        if account.role:
            self.roles[account.role] = key
        self.descriptions[key] = f"{mode}: {describe(account, self.names)}"
        log.info(
            "opened %s (%s, %s USD): %s",
            account.label,
            mode,
            f"{account.collateral / USDC:,.0f}",
            describe(account, self.names),
        )

    # -- the replay ---------------------------------------------------------------------------

    def replay(self) -> None:
        """One step per price: feeds, then a keeper tick, then a bot tick; then the clock."""
        self.records.append(self._record(0, 0, 0))
        self.watch.snapshot(0, self.descriptions)
        feeds = {
            self.system.feeds[p.market_id].address: list(p.prices) for p in self.scenario.paths
        }
        log.info(
            "replaying %d steps of %d s: %s",
            self.scenario.steps,
            self.scenario.step_seconds,
            self.scenario.title,
        )
        self._advance()
        replay(self.feeder, self.keeper.feeds, feeds, 0, self._on_step)

    def _on_step(self, index: int, mined: Mapping[str, SentTx]) -> None:
        step = index + 1
        self._log_prices(step)
        tick = self.keeper.tick(latest_block(self.w3))
        self.ticks.append(tick)
        if not tick.transactions:
            reasons = "; ".join(f"{self.names[d.market_id]}: {d.reason}" for d in tick.decisions)
            log.info("keeper pushed nothing (%s)", reasons)
        found = scan(self.engine).liquidatable
        for health in found:
            self._first_seen(health, step)
        self.bot.tick(latest_block(self.w3))
        left = scan(self.engine).liquidatable
        for health in left:
            log.error("%s is still liquidatable after the bot's tick", self._label(health.account))
        self._collect_events(step)
        self.records.append(self._record(step, len(found), len(left)))
        self.watch.snapshot(step, self.descriptions)
        self._advance()

    def _first_seen(self, health: Health, step: int) -> None:
        """Note when an account first became liquidatable, and whether it would have been
        healthy at the multipliers in force before the crash (the tiered maintenance then, plus
        its funding reserve: a portfolio account needs no more than that)."""
        account = health.account
        if account in self.first_liquidatable:
            return
        self.first_liquidatable[account] = step
        before = self.watch.pre_crash_maintenance(account, self.records[0].multipliers)
        if health.equity >= before:
            self.watch.caught[account] = self.watch.caught_at(step, health, before)
            log.info(
                "%s is liquidatable only because margin rose: equity %s USD, maintenance %s"
                " now, %s at the pre-crash multipliers",
                self._label(account),
                usd(health.equity),
                usd(health.maintenance),
                usd(before),
            )

    def _advance(self) -> None:
        self.w3.provider.make_request("evm_increaseTime", [self.scenario.step_seconds])

    def _set_balance(self, address: str, wei: int = 100 * 10**18) -> None:
        self.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])

    def _record(self, step: int, found: int, left: int) -> StepRecord:
        prices = {
            p.market_id: (p.prices[step - 1] if step else p.start) for p in self.scenario.paths
        }
        return StepRecord(
            step=step,
            block=latest_block(self.w3).number,
            prices=prices,
            multipliers={m: self.registry.multiplier(m) for m in prices},
            insurance_fund=self.engine.insurance_fund(),
            bad_debt=self.engine.bad_debt(),
            liquidatable=found,
            left_unhealthy=left,
            funding_rates={m: self.registry.funding_rate(m) for m in prices},
            scenarios_fresh=bool(self.system.scenarios.is_fresh(1)),
            deficit=self.engine.deficit(),
        )

    def _label(self, account: Subaccount) -> str:
        return self.labels.get(account, f"{account.owner[:10]}/{account.subaccount}")

    def _log_prices(self, step: int) -> None:
        moves = []
        for p in self.scenario.paths:
            before = p.prices[step - 2] if step > 1 else p.start
            now = p.prices[step - 1]
            moves.append(f"{p.name} {now:,.2f} ({now / before - 1:+.1%})")
        stamp = "" if self.scenario.times is None else f" [{utc_label(self.scenario.times[step])}]"
        log.info("step %d/%d%s: %s", step, self.scenario.steps, stamp, ", ".join(moves))

    # -- events -------------------------------------------------------------------------------

    def _collect_events(self, step: int) -> None:
        """The step's liquidation, backstop, deleveraging and repayment logs, a line each."""
        head = latest_block(self.w3).number
        events = read_events(self.system.engine, self.engine, self.cursor, head, step)
        for event in events.liquidations:
            log.info(
                "liquidated %s (%s): %s %s closed at %s, penalty %s USD (bot %s)",
                self._label(event.account),
                self.descriptions.get(event.account, "?"),
                f"{abs(event.size) / WAD:,.4f}",
                self.names[event.market_id],
                usd(event.price),
                usd(event.penalty),
                usd(event.reward),
            )
        for event in events.backstops:
            log.info(
                "backstopped %s (%s): equity %s USD; insurance fund covered %s, bad debt %s,"
                " reward %s",
                self._label(event.account),
                self.descriptions.get(event.account, "?"),
                usd(event.equity),
                usd(event.covered),
                usd(event.bad_debt),
                usd(event.reward),
            )
        for event in events.deleverages:
            log.info(
                "deleveraged %s: %s %s closed at %s, gave up %s USD; deficit left %s USD",
                self._label(event.account),
                f"{abs(event.size) / WAD:,.4f}",
                self.names[event.market_id],
                usd(event.price),
                usd(event.transfer),
                usd(event.deficit_after),
            )
        for event in events.repayments:
            log.info(
                "insurance fund repaid %s USD of bad debt (%s left)",
                usd(event.amount),
                usd(event.bad_debt_after),
            )
        self.liquidations += events.liquidations
        self.backstops += events.backstops
        self.deleverages += events.deleverages
        self.repayments += events.repayments
        self.cursor = head + 1

    def result(self) -> DemoResult:
        book = list(self.descriptions)
        assert isinstance(self.keeper.sender, RecordingSender)
        assert isinstance(self.bot.sender, RecordingSender)
        reconciliation, replayed, owed = books(
            self.system, self.engine, self.first_block, self.names, BACKSTOP_REWARD
        )
        for account in replayed.collateral:
            self.labels.setdefault(Subaccount(*account), f"{account[0][:10]}/{account[1]}")
        return DemoResult(
            scenario=self.scenario,
            config=self.config,
            labels=self.labels,
            descriptions=self.descriptions,
            records=self.records,
            liquidations=self.liquidations,
            backstops=self.backstops,
            first_liquidatable=self.first_liquidatable,
            caught_by_multiplier=dict(self.watch.caught),
            final_health=dict(zip(book, self.engine.health(book), strict=True)),
            keeper_txs=list(self.keeper.sender.mined),
            bot_txs=list(self.bot.sender.mined),
            reconciliation=reconciliation,
            initial_insurance=self.initial_insurance,
            blocks=(self.first_block, latest_block(self.w3).number),
            deleverages=self.deleverages,
            repayments=self.repayments,
            snapshots=dict(self.watch.snapshots),
            roles=self.roles,
            funding_settled={Subaccount(*k): v for k, v in replayed.funding_settled.items()},
            funding_owed={Subaccount(*k): v for k, v in owed.items()},
            fund_flows=dict(replayed.fund_flows),
            bad_debt_recovered=replayed.bad_debt_repaid_by_adl,
            keeper_batches=batch_counts(self.ticks),
            class_names={c.class_id: c.name for c in SHIPPED.profiles.table("devnet").classes}
            if SHIPPED.profiles is not None
            else {},
        )


def batch_counts(ticks: list[TickResult]) -> dict[str, int]:
    """What the keeper landed: risk, scenario and profile updates, relayed transactions."""
    landed = [t for t in ticks if t.transactions]
    return {
        "risk updates": sum(len(t.updates) for t in landed if t.sent is not None),
        "scenario updates": sum(len(t.scenario_updates) for t in landed),
        "profile updates": sum(len(t.profile_updates) for t in landed),
        "relayed": sum(t.relayed for t in ticks),
        "transactions": sum(len(t.transactions) for t in ticks),
    }


def run_demo(
    actors: DemoActors,
    scenario: Scenario,
    rpc_url: str,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Deploy, open the book, replay ``scenario`` with the keeper and the bot, and collect the
    outcome; writes the chart when ``config.chart`` is set."""
    started = time.perf_counter()
    w3 = connect(rpc_url, timeout=10)
    first_block = latest_block(w3).number + 1
    system = deploy_demo(actors, scenario)
    run = DemoRun(actors, scenario, config or DemoConfig(), w3, system, first_block)
    run.start_keeper()
    run.open_book()
    run.replay()
    result = run.result()
    if result.config.chart is not None:
        result.chart = plot_demo(result, result.config.chart)
    result.seconds = time.perf_counter() - started
    return result
