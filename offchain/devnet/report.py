"""What a demo run recorded, the printed summary and the reconciliation of the engine's books.

Reconciliation
--------------
The engine moves cash (collateral minus open notional) between subaccounts one to one, except
that a fill of ``s`` at ``p`` charges the buyer ``ceil(s * p)`` and pays the seller
``floor(s * p)`` (1 wei kept when ``s * p`` is not whole), and a backstop forgives the debt the
insurance fund cannot cover (bad debt). With no funding (the demo's keeper sets none), to the wei::

    token balance = sum(collateral) + insurance fund - sum(open notional) - bad debt + rounding

where ``rounding`` counts the fills (trades, liquidations, backstop transfers) whose
``s * p`` is not whole. ``reconcile`` checks it from balances, positions and events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from offchain import WAD
from offchain.devnet.scenario import DemoConfig, Scenario, market_tiers
from offchain.protocol.chain import (
    Health,
    Subaccount,
)
from offchain.protocol.margin_math import maintenance_margin
from offchain.protocol.tx_sender import SentTx

# ---------------------------------------------------------------------------------------------
# What happened


@dataclass(frozen=True)
class Fill:
    """A transfer of ``size`` base units at ``price`` (both WAD) between two subaccounts."""

    size: int
    price: int

    @property
    def rounding(self) -> int:
        """Wei the engine keeps: ``ceil(|s| p) - floor(|s| p)``."""
        return 1 if abs(self.size) * self.price % WAD else 0


@dataclass(frozen=True)
class LiquidationEvent:
    step: int
    block: int
    account: Subaccount
    liquidator: Subaccount
    market_id: int
    size: int  # the liquidated account's change (negative when a long was closed)
    price: int
    penalty: int
    reward: int


@dataclass(frozen=True)
class BackstopEvent:
    step: int
    block: int
    account: Subaccount
    equity: int
    covered: int
    bad_debt: int
    moves: tuple[tuple[int, Fill], ...]  # (market, transfer to the insurance fund)


@dataclass(frozen=True)
class StepRecord:
    """The chain after one step: prices, multipliers in force and the books."""

    step: int
    block: int
    prices: dict[int, float]
    multipliers: dict[int, int]
    insurance_fund: int
    bad_debt: int
    liquidatable: int  # subaccounts the bot found liquidatable
    left_unhealthy: int  # still liquidatable after the bot's tick


@dataclass(frozen=True)
class Reconciliation:
    """The engine's books against its token balance (USD WAD, see the module docstring)."""

    token_balance: int
    collateral: int  # every subaccount but the insurance fund
    insurance_fund: int  # the insurance subaccount's collateral
    open_notional: int
    bad_debt: int
    rounding: int
    fills: int
    subaccounts: int

    @property
    def expected(self) -> int:
        return (
            self.collateral
            + self.insurance_fund
            - self.open_notional
            - self.bad_debt
            + self.rounding
        )

    @property
    def difference(self) -> int:
        return self.token_balance - self.expected

    @property
    def holds(self) -> bool:
        return self.difference == 0


@dataclass
class DemoResult:
    """Everything the summary and the chart need."""

    scenario: Scenario
    config: DemoConfig
    labels: dict[Subaccount, str]
    descriptions: dict[Subaccount, str]
    records: list[StepRecord]
    liquidations: list[LiquidationEvent]
    backstops: list[BackstopEvent]
    first_liquidatable: dict[Subaccount, int]
    caught_by_multiplier: dict[Subaccount, int]  # liquidatable, but not at multiplier 1
    final_health: dict[Subaccount, Health]
    keeper_txs: list[SentTx]
    bot_txs: list[SentTx]
    reconciliation: Reconciliation
    initial_insurance: int
    blocks: tuple[int, int]
    seconds: float = 0.0
    chart: Path | None = None

    @property
    def handled(self) -> set[Subaccount]:
        """Subaccounts the bot liquidated or backstopped."""
        return {e.account for e in self.liquidations} | {e.account for e in self.backstops}

    @property
    def unhandled(self) -> set[Subaccount]:
        """Subaccounts that became liquidatable and were never dealt with (should be none)."""
        return set(self.first_liquidatable) - self.handled


# ---------------------------------------------------------------------------------------------
# Pure helpers of the summary


def multipliers(result: DemoResult, market_id: int) -> list[float]:
    """The multiplier in force at the start and after each step."""
    return [r.multipliers[market_id] / WAD for r in result.records]


def fold_path(values: Sequence[float], limit: int = 14) -> str:
    """``1.00 1.50 2.25x3 ...``: consecutive repeats folded, at most ``limit`` entries."""
    runs: list[tuple[str, int]] = []
    for v in values:
        text = f"{v:.2f}"
        if runs and runs[-1][0] == text:
            runs[-1] = (text, runs[-1][1] + 1)
        else:
            runs.append((text, 1))
    parts = [t if n == 1 else f"{t}x{n}" for t, n in runs]
    if len(parts) > limit:
        parts = [*parts[: limit - 4], "...", *parts[-3:]]
    return " ".join(parts)


def usd(value: int, decimals: int = 2) -> str:
    return f"{value / WAD:,.{decimals}f}"


def reconcile(
    token_balance: int,
    collateral: Mapping[Subaccount, int],
    insurance: Subaccount,
    open_notional: int,
    bad_debt: int,
    fills: Iterable[Fill],
) -> Reconciliation:
    """Put the books next to the token balance (all USD WAD)."""
    fills = list(fills)
    return Reconciliation(
        token_balance=token_balance,
        collateral=sum(v for a, v in collateral.items() if a != insurance),
        insurance_fund=collateral.get(insurance, 0),
        open_notional=open_notional,
        bad_debt=bad_debt,
        rounding=sum(f.rounding for f in fills),
        fills=len(fills),
        subaccounts=sum(1 for a in collateral if a != insurance),
    )


def step_time(result: DemoResult, step: int) -> str:
    """``2020-03-12 14:00`` for a real window, ``h+7`` otherwise."""
    times = result.scenario.times
    if times is None:
        return f"h+{step}"
    return datetime.fromtimestamp(times[step], UTC).strftime("%Y-%m-%d %H:%M")


def format_summary(result: DemoResult) -> str:
    """The closing table."""
    lines = [
        f"Dynamic Margin demo: {result.scenario.title}",
        f"{result.scenario.steps} hourly steps on anvil, blocks {result.blocks[0]}-"
        f"{result.blocks[1]}, {result.seconds:.0f} s",
        "",
        *_multiplier_lines(result),
        "",
        *_margin_lines(result),
        "",
        *_account_lines(result),
        "",
        *_outcome_lines(result),
        "",
        *_reconciliation_lines(result.reconciliation),
    ]
    if result.chart is not None:
        lines += ["", f"chart             {result.chart}"]
    return "\n".join(lines)


def _multiplier_lines(result: DemoResult) -> list[str]:
    lines = [
        f"{'multiplier':<10} {'start':>6} {'peak':>6} {'end':>6}   path (start, then each step)"
    ]
    for path in result.scenario.paths:
        values = multipliers(result, path.market_id)
        peak = max(range(len(values)), key=values.__getitem__)
        lines.append(
            f"{path.name:<10} {values[0]:>6.2f} {values[peak]:>6.2f} {values[-1]:>6.2f}"
            f"   {fold_path(values)}   (peak at {step_time(result, peak)})"
        )
    return lines


def _margin_lines(result: DemoResult) -> list[str]:
    notional = result.config.reference_notional
    lines = [f"maintenance margin in force for a {usd(notional, 0)} USD position"]
    for path in result.scenario.paths:
        tiers = market_tiers(path.market_id)
        values = [
            maintenance_margin(tiers, r.multipliers[path.market_id], notional)
            for r in result.records
        ]
        start, peak, end = (
            f"{usd(v)} ({v / notional:.2%})" for v in (values[0], max(values), values[-1])
        )
        lines.append(f"{path.name:<10} start {start}   peak {peak}   end {end}")
    return lines


def _account_lines(result: DemoResult) -> list[str]:
    width = 16 if result.scenario.times is not None else 12
    header = (
        f"{'account':<8} {'margin':<9} {'positions at the open':<30} {'liquidatable':<{width}}"
        f" {'liquidations':>12} {'backstop':>9} {'equity at end':>14}"
    )
    lines = [header]
    for account, label in result.labels.items():
        if account not in result.descriptions:
            continue
        mode, positions = result.descriptions[account].split(": ", 1)
        first = result.first_liquidatable.get(account)
        n_liq = sum(1 for e in result.liquidations if e.account == account)
        backstop = any(e.account == account for e in result.backstops)
        health = result.final_health[account]
        lines.append(
            f"{label:<8} {mode:<9} {positions:<30}"
            f" {'-' if first is None else step_time(result, first):<{width}}"
            f" {n_liq:>12} {'yes' if backstop else '-':>9} {usd(health.equity):>14}"
        )
    return lines


def _outcome_lines(result: DemoResult) -> list[str]:
    names = {p.market_id: p.name for p in result.scenario.paths}
    closed: dict[int, int] = {}
    for e in result.liquidations:
        closed[e.market_id] = closed.get(e.market_id, 0) + abs(e.size)
    penalties = sum(e.penalty for e in result.liquidations)
    rewards = sum(e.reward for e in result.liquidations)
    covered = sum(e.covered for e in result.backstops)
    end = result.records[-1]
    closed_text = ", ".join(f"{closed[m] / WAD:,.4f} {names[m]}" for m in sorted(closed))
    keeper_gas = sum(t.gas_used for t in result.keeper_txs)
    bot_gas = sum(t.gas_used for t in result.bot_txs)
    keeper_eth = sum(t.cost_wei for t in result.keeper_txs) / 10**18
    bot_eth = sum(t.cost_wei for t in result.bot_txs) / 10**18
    unhandled = len(result.unhandled)
    caught = sorted(result.labels[a] for a in result.caught_by_multiplier)
    return [
        f"liquidations      {len(result.liquidations)}"
        + (f" (closed {closed_text})" if closed_text else "")
        + f", penalties {usd(penalties)} USD: bot {usd(rewards)}, insurance fund"
        f" {usd(penalties - rewards)}",
        f"backstops         {len(result.backstops)}, the insurance fund covered {usd(covered)} USD",
        f"insurance fund    {usd(result.initial_insurance)} + {usd(penalties - rewards)} penalties"
        f" - {usd(covered)} covered = {usd(end.insurance_fund)} USD",
        f"bad debt          {usd(end.bad_debt)} USD",
        f"unhealthy         {len(result.first_liquidatable)} subaccount(s) became liquidatable,"
        f" {len(result.first_liquidatable) - unhandled} liquidated or backstopped,"
        f" {max(r.left_unhealthy for r in result.records)} left unhealthy after a bot tick",
        f"raised margin     {len(caught)} of them only because the multiplier rose (equity still"
        f" above maintenance at multiplier 1)" + (f": {', '.join(caught)}" if caught else ""),
        f"gas, keeper       {len(result.keeper_txs)} signed batches, {keeper_gas:,} gas"
        f" ({keeper_gas // max(len(result.keeper_txs), 1):,} per batch), {keeper_eth:.6f} ETH",
        f"gas, bot          {len(result.bot_txs)} transactions, {bot_gas:,} gas, {bot_eth:.6f} ETH",
    ]


def _reconciliation_lines(r: Reconciliation) -> list[str]:
    verdict = "holds to the wei" if r.holds else "DOES NOT HOLD"
    return [
        "reconciliation (USD)",
        f"  collateral of {r.subaccounts:>2} subaccounts      {usd(r.collateral, 6):>22}",
        f"  + insurance fund                  {usd(r.insurance_fund, 6):>22}",
        f"  - open notional                   {usd(r.open_notional, 6):>22}"
        "   (entry cost of open positions: longs +, shorts -)",
        f"  - bad debt                        {usd(r.bad_debt, 6):>22}",
        f"  + rounding kept by the engine     {r.rounding:>18} wei"
        f"   (1 wei on {r.rounding} of {r.fills} fills)",
        f"  = owed to accounts                {usd(r.expected, 6):>22}",
        f"  engine token balance              {usd(r.token_balance, 6):>22}",
        f"  difference                        {r.difference:>18} wei   {verdict}",
    ]
