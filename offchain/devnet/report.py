"""What a demo run recorded, and the reconciliation of the engine's books against its tokens.

Reconciliation
--------------
The engine moves cash (collateral minus open notional) between subaccounts one to one, except
that a fill of ``s`` at ``p`` charges the buyer ``ceil(s * p)`` and pays the seller
``floor(s * p)`` (1 wei kept when ``s * p`` is not whole), a backstop forgives the debt the
insurance fund cannot cover (bad debt) and deleveraging or the fund repays it, and each funding
settlement moves ``ceil(size * (index - snapshot) / WAD)`` from the position into the books
(rounded up, so the settlements and the funding still unsettled sum to a few wei above zero).
Liquidation penalties, backstop rewards and deleveraging transfers are transfers between
subaccounts (the insurance fund is the engine's own subaccount 0, with the positions it took
over). Summed over every subaccount, to the wei (:mod:`offchain.devnet.book_replay`)::

    token balance = sum(collateral) + insurance fund - sum(open notional) - bad debt
                    + rounding + funding settled

where ``rounding`` counts the fills (trades, liquidations, backstop transfers, deleveraging
closes) whose ``s * p`` is not whole and ``funding settled`` is the net funding the settlements
took in (the counterpart of the funding still owed in equity, plus the settlements' rounding).
Both come from replaying the engine's events; the replay is checked against the chain's views,
subaccount by subaccount (collateral, each position's size, open notional and funding snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from offchain import WAD
from offchain.devnet.scenario import DemoConfig, Scenario
from offchain.protocol.chain import Health, Subaccount
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
    reward: int = 0  # paid to the caller from the insurance fund


@dataclass(frozen=True)
class DeleverageEvent:
    """One auto-deleveraging close: ``size`` is the account's change, ``transfer`` its share of
    the deficit (bad debt first, the rest to the insurance fund)."""

    step: int
    block: int
    account: Subaccount
    market_id: int
    size: int
    price: int
    transfer: int
    deficit_after: int


@dataclass(frozen=True)
class RepayEvent:
    """``BadDebtRepaid``: the insurance fund's equity repaid ``amount`` of bad debt."""

    step: int
    block: int
    amount: int
    bad_debt_after: int


@dataclass(frozen=True)
class StepRecord:
    """The chain after one step: prices, multipliers and funding in force, the books."""

    step: int
    block: int
    prices: dict[int, float]
    multipliers: dict[int, int]
    insurance_fund: int
    bad_debt: int
    liquidatable: int  # subaccounts the bot found liquidatable
    left_unhealthy: int  # still liquidatable after the bot's tick
    funding_rates: dict[int, int] = field(default_factory=dict)
    scenarios_fresh: bool = False
    deficit: int = 0


@dataclass(frozen=True)
class AccountSnapshot:
    """One subaccount after a step, from ``account_details`` (USD WAD), with the Python
    reference's maintenance of the same positions in its class (``reference``) and in the
    default class (``default``): :mod:`offchain.devnet.demo_accounts`."""

    step: int
    equity: int
    maintenance: int
    tiered: int
    reserve: int
    funding_owed: int
    group: int
    class_id: int
    class_multiplier: int
    default: int
    positions: tuple[tuple[int, int], ...] = ()
    reference: int = 0  # the Python reference's maintenance in the account's class


@dataclass(frozen=True)
class Caught:
    """An account liquidatable only because the multiplier rose: at the step it was first found,
    its equity against its maintenance then and at the multipliers in force before the crash."""

    step: int
    equity: int
    maintenance: int
    pre_crash: int


@dataclass(frozen=True)
class Reconciliation:
    """The engine's books against its token balance (USD WAD, see the module docstring)."""

    token_balance: int
    collateral: int  # every subaccount but the insurance fund
    insurance_fund: int  # the insurance subaccount's collateral
    open_notional: int  # every position, the insurance fund's included
    fund_open_notional: int
    bad_debt: int
    rounding: int
    fills: int
    funding_settled: int
    settlements: int
    funding_unsettled: int  # still owed in equity, per the engine's views (not in the identity)
    subaccounts: int
    replayed: int = 0  # subaccounts whose views equal the replay
    mismatches: tuple[str, ...] = ()

    @property
    def expected(self) -> int:
        return (
            self.collateral
            + self.insurance_fund
            - self.open_notional
            - self.bad_debt
            + self.rounding
            + self.funding_settled
        )

    @property
    def difference(self) -> int:
        return self.token_balance - self.expected

    @property
    def holds(self) -> bool:
        return self.difference == 0 and not self.mismatches


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
    caught_by_multiplier: dict[Subaccount, Caught]
    final_health: dict[Subaccount, Health]
    keeper_txs: list[SentTx]
    bot_txs: list[SentTx]
    reconciliation: Reconciliation
    initial_insurance: int
    blocks: tuple[int, int]
    deleverages: list[DeleverageEvent] = field(default_factory=list)
    repayments: list[RepayEvent] = field(default_factory=list)
    snapshots: dict[Subaccount, list[AccountSnapshot]] = field(default_factory=dict)
    roles: dict[str, Subaccount] = field(default_factory=dict)
    funding_settled: dict[Subaccount, int] = field(default_factory=dict)
    funding_owed: dict[Subaccount, int] = field(default_factory=dict)  # still owed at the end
    fund_flows: dict[str, int] = field(default_factory=dict)
    bad_debt_recovered: int = 0  # repaid by deleveraging transfers
    keeper_batches: dict[str, int] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
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

    def funding_paid(self, account: Subaccount) -> int:
        """Funding the account paid (negative: received), settled plus still owed at the end."""
        return self.funding_settled.get(account, 0) + self.funding_owed.get(account, 0)


# ---------------------------------------------------------------------------------------------
# Pure helpers


def multipliers(result: DemoResult, market_id: int) -> list[float]:
    """The multiplier in force at the start and after each step."""
    return [r.multipliers[market_id] / WAD for r in result.records]


def fold_path(values: Sequence[float], limit: int = 14, fmt: str = "{:.2f}") -> str:
    """``1.00 1.50 2.25x3 ...``: consecutive repeats folded, at most ``limit`` entries."""
    runs: list[tuple[str, int]] = []
    for v in values:
        text = fmt.format(v)
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


def step_time(result: DemoResult, step: int) -> str:
    """``2020-03-12 14:00`` for a real window, ``h+7`` otherwise."""
    times = result.scenario.times
    if times is None:
        return f"h+{step}"
    return datetime.fromtimestamp(times[step], UTC).strftime("%Y-%m-%d %H:%M")


def reconcile(
    token_balance: int,
    collateral: Mapping[Subaccount, int],
    insurance: Subaccount,
    open_notional: int,
    fund_open_notional: int,
    bad_debt: int,
    rounding: tuple[int, int],
    funding: tuple[int, int, int],
    replayed: int = 0,
    mismatches: Sequence[str] = (),
) -> Reconciliation:
    """Put the books next to the token balance (all USD WAD): ``rounding`` is (wei, fills),
    ``funding`` (settled, settlements, unsettled)."""
    return Reconciliation(
        token_balance=token_balance,
        collateral=sum(v for a, v in collateral.items() if a != insurance),
        insurance_fund=collateral.get(insurance, 0),
        open_notional=open_notional,
        fund_open_notional=fund_open_notional,
        bad_debt=bad_debt,
        rounding=rounding[0],
        fills=rounding[1],
        funding_settled=funding[0],
        settlements=funding[1],
        funding_unsettled=funding[2],
        subaccounts=sum(1 for a in collateral if a != insurance),
        replayed=replayed,
        mismatches=tuple(mismatches),
    )


__all__ = [
    "AccountSnapshot",
    "BackstopEvent",
    "Caught",
    "DeleverageEvent",
    "DemoResult",
    "Fill",
    "LiquidationEvent",
    "Reconciliation",
    "RepayEvent",
    "StepRecord",
    "fold_path",
    "multipliers",
    "reconcile",
    "step_time",
    "usd",
]
