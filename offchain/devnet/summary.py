"""The demo's printed summary: multipliers and funding the keeper signed, the portfolio pair,
the account classes, every account's fate, liquidations, backstops, deleveraging, bad debt, the
accounts caught only because margin rose, funding paid and received, gas, and the
reconciliation of the books to the wei. Everything comes from the :class:`DemoResult`, itself
read from the chain."""

from __future__ import annotations

from offchain import WAD
from offchain.devnet.report import (
    AccountSnapshot,
    DemoResult,
    Reconciliation,
    fold_path,
    multipliers,
    step_time,
    usd,
)
from offchain.devnet.scenario import market_tiers
from offchain.protocol.chain import Subaccount
from offchain.protocol.margin_math import maintenance_margin


def format_summary(result: DemoResult) -> str:
    """The closing report."""
    sections = [
        [
            f"Dynamic Margin demo: {result.scenario.title}",
            f"{result.scenario.steps} hourly steps on anvil, blocks {result.blocks[0]}-"
            f"{result.blocks[1]}, {result.seconds:.0f} s",
        ],
        _multiplier_lines(result),
        _margin_lines(result),
        _pair_lines(result),
        _class_lines(result),
        _account_lines(result),
        _outcome_lines(result),
        _funding_lines(result),
        _reconciliation_lines(result.reconciliation, result),
    ]
    lines: list[str] = []
    for section in sections:
        if section:
            lines += [*section, ""]
    if result.chart is not None:
        lines.append(f"chart             {result.chart}")
    return "\n".join(lines).rstrip()


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
    for path in result.scenario.paths:
        rates = [r.funding_rates.get(path.market_id, 0) * 28_800 / WAD for r in result.records]
        lines.append(
            f"{'funding':<10} {path.name}: {fold_path(rates, fmt='{:.4%}')} per 8 h"
            " (signed by the keeper from the engine's premium; longs pay when positive)"
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


def _pair_lines(result: DemoResult) -> list[str]:
    hedged, outright = result.roles.get("hedged"), result.roles.get("outright")
    if hedged is None or outright is None:
        return []
    lines = [
        "portfolio margin: maintenance (USD) of the hedged pair and the outright long of the same"
        " gross notional, against their tiered sums (portfolio credit while the keeper's BTC/ETH"
        " scenarios are fresh)",
        f"  {'step':<8} {'scenarios':<10} {result.labels[hedged] + ' hedged':>28}"
        f" {result.labels[outright] + ' outright':>28}",
    ]
    h_snaps, o_snaps = result.snapshots[hedged], result.snapshots[outright]
    for h, o in zip(h_snaps, o_snaps, strict=True):
        fresh = result.records[h.step].scenarios_fresh
        lines.append(
            f"  {step_time(result, h.step):<8} {'fresh' if fresh else 'stale':<10}"
            f" {_pair_cell(h):>28} {_pair_cell(o):>28}"
        )
    return lines


def _pair_cell(s: AccountSnapshot) -> str:
    if not s.positions:
        return "closed"
    tiered = s.tiered + s.reserve
    change = s.maintenance / tiered - 1 if tiered else 0.0
    return f"{usd(s.maintenance, 0)} of {usd(tiered, 0)} ({change:+.0%})"


def _class_history(result: DemoResult, snaps: list[AccountSnapshot]) -> str:
    """``maker h+1..h+8, active h+9..h+16``."""
    runs: list[tuple[int, int, int]] = []
    for s in snaps:
        if runs and runs[-1][0] == s.class_id:
            runs[-1] = (s.class_id, runs[-1][1], s.step)
        else:
            runs.append((s.class_id, s.step, s.step))
    return ", ".join(
        f"{result.class_names.get(c, 'default')} {step_time(result, a)}..{step_time(result, b)}"
        for c, a, b in runs
    )


def _class_lines(result: DemoResult) -> list[str]:
    """Accounts that held a class other than the default, and the outright long for reference:
    their maintenance against the same positions in the default class, at the step where the
    class changed the requirement most."""
    lines = []
    for account, snaps in result.snapshots.items():
        held = [s for s in snaps if s.positions]
        classed = [s for s in held if s.class_id]
        if not classed and result.roles.get("outright") != account:
            continue
        pool = classed or held
        if not pool:
            continue
        show = max(pool, key=lambda s: abs(s.maintenance - s.default))
        name = result.class_names.get(show.class_id, "default")
        change = show.maintenance / show.default - 1 if show.default else 0.0
        lines.append(
            f"  {result.labels[account]:<8} {name:<18} {show.class_multiplier / WAD:.2f}x at"
            f" {step_time(result, show.step):<8} maintenance {usd(show.maintenance):>12},"
            f" default class {usd(show.default):>12} ({change:+.1%});"
            f" {_class_history(result, snaps)}"
        )
    if not lines:
        return []
    return [
        "account classes (signed by the keeper from each account's record, in force on chain):"
        " maintenance against the same positions in the default class (a discount never takes a"
        " market below its minimum multiplier, so it bites once margins have risen)",
        *lines,
    ]


def _account_lines(result: DemoResult) -> list[str]:
    width = 16 if result.scenario.times is not None else 12
    header = (
        f"{'account':<8} {'margin':<9} {'positions at the open':<30} {'liquidatable':<{width}}"
        f" {'liquidations':>12} {'backstop':>9} {'ADL':>4} {'equity at end':>14}"
    )
    lines = [header]
    for account, label in result.labels.items():
        if account not in result.descriptions:
            continue
        mode, positions = result.descriptions[account].split(": ", 1)
        first = result.first_liquidatable.get(account)
        n_liq = sum(1 for e in result.liquidations if e.account == account)
        n_adl = sum(1 for e in result.deleverages if e.account == account)
        backstop = any(e.account == account for e in result.backstops)
        health = result.final_health[account]
        lines.append(
            f"{label:<8} {mode:<9} {positions:<30}"
            f" {'-' if first is None else step_time(result, first):<{width}}"
            f" {n_liq:>12} {'yes' if backstop else '-':>9} {n_adl or '-':>4}"
            f" {usd(health.equity):>14}"
        )
    return lines


def _partial(result: DemoResult) -> int:
    """Liquidations that left the account a position in the market."""
    count = 0
    for e in result.liquidations:
        snaps = result.snapshots.get(e.account, [])
        after = next((s for s in snaps if s.step == e.step), None)
        if after is not None and any(m == e.market_id for m, _ in after.positions):
            count += 1
    return count


def _outcome_lines(result: DemoResult) -> list[str]:
    names = {p.market_id: p.name for p in result.scenario.paths}
    closed: dict[int, int] = {}
    for e in result.liquidations:
        closed[e.market_id] = closed.get(e.market_id, 0) + abs(e.size)
    penalties = sum(e.penalty for e in result.liquidations)
    rewards = sum(e.reward for e in result.liquidations)
    covered = sum(e.covered for e in result.backstops)
    created = sum(e.bad_debt for e in result.backstops)
    backstop_rewards = sum(e.reward for e in result.backstops)
    transfers = sum(e.transfer for e in result.deleverages)
    repaid = sum(e.amount for e in result.repayments)
    end = result.records[-1]
    closed_text = ", ".join(f"{closed[m] / WAD:,.4f} {names[m]}" for m in sorted(closed))
    keeper_gas = sum(t.gas_used for t in result.keeper_txs)
    bot_gas = sum(t.gas_used for t in result.bot_txs)
    unhandled = len(result.unhandled)
    k = result.keeper_batches
    adl_names = ", ".join(sorted({result.labels[e.account] for e in result.deleverages})) or "none"
    lines = [
        f"liquidations      {len(result.liquidations)} ({_partial(result)} partial)"
        + (f", closed {closed_text}" if closed_text else "")
        + f", penalties {usd(penalties)} USD: bot {usd(rewards)}, insurance fund"
        f" {usd(penalties - rewards)}",
        f"backstops         {len(result.backstops)}: the insurance fund covered {usd(covered)} USD,"
        f" {usd(created)} USD became bad debt, callers were paid {usd(backstop_rewards)} USD",
        f"deleveraging      {len(result.deleverages)} close(s) against the insurance fund's"
        f" positions ({adl_names} ranked by profit x leverage), {usd(transfers)} USD given up"
        " by them;"
        f" the fund's equity repaid {usd(repaid)} USD in {len(result.repayments)} repayment(s)",
        f"bad debt          {usd(created)} USD created by backstops,"
        f" {usd(result.bad_debt_recovered)} recovered by deleveraging, {usd(repaid)} repaid by the"
        f" fund: {usd(end.bad_debt)} USD at the end; deficit {usd(end.deficit)} USD"
        + _deficit_reason(result),
        f"insurance fund    {usd(result.initial_insurance)} USD at the open,"
        f" {usd(end.insurance_fund)} USD of equity at the end (collateral and its positions at"
        " the mark)",
        f"unhealthy         {len(result.first_liquidatable)} subaccount(s) became liquidatable,"
        f" {len(result.first_liquidatable) - unhandled} liquidated or backstopped,"
        f" {max(r.left_unhealthy for r in result.records)} left unhealthy after a bot tick",
        f"raised margin     {len(result.caught_by_multiplier)} of them only because the multiplier"
        " rose: healthy at the pre-crash multipliers (tiered maintenance, class and funding"
        " reserve included), liquidatable at the multipliers in force",
    ]
    for account, c in sorted(result.caught_by_multiplier.items(), key=lambda x: x[1].step):
        lines.append(
            f"  {result.labels[account]:<8} at {step_time(result, c.step):<8} equity"
            f" {usd(c.equity):>12}  maintenance before {usd(c.pre_crash):>12} -> after"
            f" {usd(c.maintenance):>12}"
        )
    lines += [
        f"keeper            {k.get('risk updates', 0)} market update(s),"
        f" {k.get('scenario updates', 0)} scenario update(s), {k.get('profile updates', 0)}"
        f" class update(s) in {len(result.keeper_txs)} transactions ({k.get('relayed', 0)} through"
        f" the relay: multipliers and scenarios together), {keeper_gas:,} gas",
        f"gas, bot          {len(result.bot_txs)} transactions, {bot_gas:,} gas",
    ]
    return lines


def _deficit_reason(result: DemoResult) -> str:
    end = result.records[-1]
    if end.deficit == 0:
        return " (every deficit recovered)"
    if not result.deleverages:
        return (
            ": no opposite position was in profit to deleverage against the insurance fund's,"
            " and the fund has no equity to repay it"
        )
    return (
        ": the opposite positions in profit gave up all the profit the engine lets ADL take"
        " (never the margin of their other positions); the rest waits for fees or a top-up"
    )


def _funding_lines(result: DemoResult) -> list[str]:
    paid = {a: result.funding_paid(a) for a in {*result.funding_settled, *result.funding_owed}}
    payers = {a: v for a, v in paid.items() if v > 0}
    receivers = {a: -v for a, v in paid.items() if v < 0}
    r = result.reconciliation
    lines = [
        f"funding           paid {usd(sum(payers.values()), 6)} USD by {len(payers)} subaccount(s),"
        f" received {usd(sum(receivers.values()), 6)} USD by {len(receivers)}; settled"
        f" {usd(r.funding_settled, 6)} net in {r.settlements} settlement(s), still owed"
        f" {usd(r.funding_unsettled, 6)} (paid - received: {sum(paid.values()):,} wei, each"
        " settlement and each owed amount rounded up)",
    ]
    top = sorted(paid.items(), key=lambda x: -abs(x[1]))[:6]
    for account, value in top:
        verb = "paid" if value > 0 else "received"
        lines.append(
            f"  {result.labels.get(account, _short(account)):<10} {verb} {usd(abs(value), 6)}"
        )
    return lines


def _short(account: Subaccount) -> str:
    return f"{account.owner[:10]}/{account.subaccount}"


def _reconciliation_lines(r: Reconciliation, result: DemoResult) -> list[str]:
    verdict = "holds to the wei" if r.holds else "DOES NOT HOLD"
    lines = [
        "reconciliation (USD), from the engine's events replayed and checked against its views",
        f"  collateral of {r.subaccounts:>2} subaccounts      {usd(r.collateral, 6):>22}"
        "   (backstop rewards included)",
        f"  + insurance fund collateral       {usd(r.insurance_fund, 6):>22}",
        f"  - open notional                   {usd(r.open_notional, 6):>22}"
        f"   (entry cost of open positions: longs +, shorts -; the fund's"
        f" {usd(r.fund_open_notional, 2)})",
        f"  - bad debt                        {usd(r.bad_debt, 6):>22}",
        f"  + rounding kept by the engine     {r.rounding:>18} wei"
        f"   (1 wei on {r.rounding} of {r.fills} fills, ADL closes included)",
        f"  + funding settled                 {usd(r.funding_settled, 6):>22}"
        f"   ({r.settlements} settlements; funding still owed {usd(r.funding_unsettled, 6)})",
        f"  = owed to accounts                {usd(r.expected, 6):>22}",
        f"  engine token balance              {usd(r.token_balance, 6):>22}",
        f"  difference                        {r.difference:>18} wei   {verdict}",
        f"  replay against the chain          {r.replayed} subaccounts: collateral, positions,"
        f" funding snapshots {'all equal' if not r.mismatches else 'DIFFER'}",
    ]
    lines += [f"    {m}" for m in r.mismatches[:5]]
    flows = {k: v for k, v in result.fund_flows.items() if v}
    if flows:
        other = r.insurance_fund - sum(flows.values())
        parts = ", ".join(f"{k} {usd(v, 6)}" for k, v in flows.items())
        lines.append(
            f"  insurance fund collateral {usd(r.insurance_fund, 6)} USD = {parts}, realised on"
            f" its positions and their funding {usd(other, 6)}"
        )
    return lines


__all__ = ["format_summary"]
