"""Where the gas of the engine's hot paths goes: every opcode traced on titanoboa's py-evm, each
storage read and write named by the variable it touches.

``python -m bench.gas_breakdown`` deploys the system of ``bench_engine_gas`` (each market with a
fresh keeper update, as in operation) and traces, each as one transaction with every slot and
account cold:

- ``is_liquidatable`` of 4 positions in 4 markets outside any group;
- ``is_liquidatable`` of 4 positions of one group with K = 16 scenarios in force;
- ``liquidate`` of a one-position account into a liquidator subaccount without positions;
- ``submit_scenarios`` overwriting a 4-market group's 16 scenarios (1 signer).

For each it prints the execution gas (the 21,000 intrinsic and the calldata excluded), storage
reads (cold, warm) and writes (new slot, changed, unchanged) by variable of the traced contract,
calls and the callees' own execution, logs, and the traced contract's computation by opcode. An
opcode's own cost is the gas it took less what its child call used, so the rows add up to the
whole execution. Before each trace the earlier changes are locked in and every slot and account
is cold, as at the start of a transaction.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import boa
from eth_account import Account

from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_TIERS
from offchain.protocol.portfolio_math import pack_shocks
from offchain.protocol.signing import RiskUpdate, ScenarioUpdate, sign_batch

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
KEEPER = Account.from_key(b"\x01" * 32)
PRICE = 60_000
SLOAD, SSTORE = 0x54, 0x55
CALLS = ("CALL", "DELEGATECALL", "STATICCALL")
GROUP_MARKETS, PLAIN_MARKETS = (1, 2, 3, 4), (5, 6, 7, 8)
TOP_OPCODES = 10


@dataclass
class Trace:
    """Per (code address, opcode): own gas and count; per storage access: what and its gas."""

    own: Counter = field(default_factory=Counter)
    count: Counter = field(default_factory=Counter)
    storage: list = field(default_factory=list)  # (mnemonic, storage address, slot, gas)
    active: bool = False


# The trace being recorded (the tracers are installed once, on py-evm's opcode table).
_CURRENT: list[Trace] = [Trace()]


class _OpTracer:
    def __init__(self, op: int, fn):
        self.op, self.fn = op, fn
        self.mnemonic = getattr(fn, "mnemonic", hex(op))

    def __call__(self, computation):
        trace = _CURRENT[0]
        if not trace.active:
            return self.fn(computation)
        before = computation.get_gas_remaining()
        children = len(computation.children)
        slot = None
        if self.op in (SLOAD, SSTORE):
            top = computation._stack.values[-1]
            slot = top if isinstance(top, int) else int.from_bytes(top, "big")
        self.fn(computation)
        used = before - computation.get_gas_remaining()
        if len(computation.children) > children:
            used -= computation.children[-1].get_gas_used()
        key = (computation.msg.storage_address, self.mnemonic)
        trace.own[key] += used
        trace.count[key] += 1
        if slot is not None:
            trace.storage.append((self.mnemonic, computation.msg.storage_address, slot, used))


def _install() -> None:
    cls = boa.env.evm.vm.state.computation_class
    for op, fn in list(cls.opcodes.items()):
        if not isinstance(fn, _OpTracer):
            cls.opcodes[op] = _OpTracer(op, fn)


def _slot_names(layout: dict) -> dict[int, str]:
    """Base slot -> variable name, for variables of the contract and of its modules."""
    names = {}
    for name, item in layout["storage_layout"].items():
        if "slot" in item:
            names[item["slot"]] = name
        else:
            names.update({v["slot"]: n for n, v in item.items() if "slot" in v})
    return names


def _name_slot(slot: int, bases: dict[int, str], depth: int = 0) -> str:
    """The variable a slot belongs to, from the keccak preimages the run produced."""
    if slot in bases and depth:
        return bases[slot]
    for offset in range(min(64, slot + 1)):  # arrays and structs inside a mapping value
        preimage = boa.env.sha3_trace.get((slot - offset).to_bytes(32, "big"))
        if preimage is not None:
            name = _name_slot(int.from_bytes(preimage[:32], "big"), bases, depth + 1)
            return f"{name}+{offset}" if offset else name
    if slot in bases:
        return bases[slot]
    return f"slot {hex(slot)[:10]}"


@dataclass
class Deployed:
    engine: object
    scenarios: object
    feeds: dict
    tiered: str
    portfolio: str
    victim: str
    liquidator: str


def deploy() -> Deployed:
    """The benchmark's system on boa, with one fresh keeper update per market."""
    names = ("owner", "exchange", "maker", "tiered", "portfolio", "victim", "liquidator")
    owner, exchange, maker, tiered, portfolio, victim, liquidator = (
        boa.env.generate_address(n) for n in names
    )
    load = lambda name: boa.load_partial(str(CONTRACTS / name))  # noqa: E731
    feeds = {}
    with boa.env.prank(owner):
        registry = load("RiskParameterRegistry.vy").deploy(owner)
        registry.add_keeper(KEEPER.address)
        token = load("mocks/MockERC20.vy").deploy("USD Coin", "USDC", 6)
        trades = load("EngineTrades.vy").deploy(token.address, 10**12)
        liquidations = load("EngineLiquidations.vy").deploy()
        governance = load("EngineGovernance.vy").deploy(registry.address)
        engine = load("MarginEngine.vy").deploy(
            token.address,
            registry.address,
            trades.address,
            liquidations.address,
            governance.address,
        )
        registry.set_engine(engine.address)
        tiers = [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS]
        for market_id in GROUP_MARKETS + PLAIN_MARKETS:
            registry.configure_market(market_id, tiers, 2 * WAD, DEVNET_GUARDRAILS.as_tuple())
            feeds[market_id] = load("mocks/MockPriceFeed.vy").deploy(8, PRICE * 10**8)
            config = (feeds[market_id].address, 3600, 5 * 10**16, 25 * 10**14, WAD // 2, 10**30)
            engine.add_market(market_id, config)
        engine.set_exchange(exchange, True)
        scenarios = load("ScenarioRegistry.vy").deploy(registry.address, engine.address)
        engine.set_push_registry(1, scenarios.address)
        group = (
            list(GROUP_MARKETS),
            [3_000] * 4,
            [1_000] * 4,
            3_600,
            WAD // 10,
            WAD // 5,
            3 * WAD // 2,
        )
        scenarios.configure_group(1, group)
    now, chain_id = boa.env.evm.patch.timestamp, boa.env.evm.patch.chain_id
    updates = [
        RiskUpdate(m, 2 * WAD, 0, now - 1, now + 600, b"\x5a" * 32)
        for m in GROUP_MARKETS + PLAIN_MARKETS
    ]
    registry.submit_updates(
        [u.as_tuple() for u in updates],
        [sign_batch(updates, KEEPER.key, chain_id, registry.address)],
    )
    rows = [[(-1) ** (j + i) * (300 + 97 * j + 131 * i) for j in range(16)] for i in range(4)]
    update = ScenarioUpdate(
        1, 16, tuple(pack_shocks(r) for r in rows), now - 1, now + 600, b"\x5a" * 32
    )
    signature = sign_batch([update], KEEPER.key, chain_id, scenarios.address)
    scenarios.submit_scenarios([update.as_tuple()], [signature])
    for who in (maker, tiered, portfolio, victim, liquidator):
        token.mint(who, 10**15)
        with boa.env.prank(who):
            token.approve(engine.address, 2**256 - 1)
            engine.deposit(0, 10**14 if who != victim else 750 * 10**6)
    with boa.env.prank(exchange):
        for who, markets in ((tiered, PLAIN_MARKETS), (portfolio, GROUP_MARKETS)):
            for i, market_id in enumerate(markets):
                size = WAD // 10 if i % 2 == 0 else -WAD // 10
                engine.settle_trade(market_id, maker, 0, who, 0, size, PRICE * WAD)
        # 0.5 BTC at a 2x multiplier: maintenance 300, initial 600, on 750 USD.
        engine.settle_trade(5, maker, 0, victim, 0, WAD // 2, PRICE * WAD)
    with boa.env.prank(owner):
        feeds[5].set_answer(59_000 * 10**8)  # equity 250 < maintenance 295, above half of it
    return Deployed(engine, scenarios, feeds, tiered, portfolio, victim, liquidator)


def _kind(op: str, gas: int) -> str:
    """What a storage access's price says it was (EIP-2929 / EIP-2200)."""
    if op == "SLOAD":
        return "cold" if gas >= 2_100 else "warm"
    if gas >= 20_000:
        return "new slot"
    if gas >= 2_900:
        return "changed"
    return "unchanged or rewritten"


def breakdown(engine, run) -> tuple[int, list[tuple[str, int, int]]]:
    """Trace ``run()`` as one transaction from cold; returns (total, rows (what, count, gas))."""
    trace = Trace()
    _CURRENT[0] = trace
    _install()
    boa.env.sha3_trace = {}
    # A transaction starts with every slot and account cold, and the values it finds are the
    # "original" ones its writes are priced against (EIP-2200): lock the earlier changes in.
    boa.env.evm.vm.state._account_db.lock_changes()
    trace.active = True
    run()
    trace.active = False
    me = engine.address.canonical_address
    bases = _slot_names(engine.compiler_data.storage_layout)
    by_var: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for op, storage, slot, gas in trace.storage:
        name = _name_slot(slot, bases) if storage == me else "callee storage"
        entry = by_var[(op, name, _kind(op, gas))]
        entry[0], entry[1] = entry[0] + 1, entry[1] + gas
    rows = []
    for (op, name, kind), (n, gas) in sorted(by_var.items(), key=lambda x: -x[1][1]):
        rows.append((f"{op} {name} ({kind})", n, gas))
    calls = [(k, g) for k, g in trace.own.items() if k[1] in CALLS]
    rows.append(
        (
            "calls (account access, value, stipend)",
            sum(trace.count[k] for k, _ in calls),
            sum(g for _, g in calls),
        )
    )
    callee = sum(
        g
        for (where, op), g in trace.own.items()
        if where != me and op not in ("SLOAD", "SSTORE", *CALLS)
    )
    rows.append(("callees' own execution (feeds, token, registries)", 0, callee))
    logs = sum(g for (where, op), g in trace.own.items() if where == me and op.startswith("LOG"))
    rows.append(
        (
            "logs",
            sum(n for (w, op), n in trace.count.items() if w == me and op.startswith("LOG")),
            logs,
        )
    )
    compute = Counter()
    counts = Counter()
    for (where, op), gas in trace.own.items():
        if where == me and op not in ("SLOAD", "SSTORE", *CALLS) and not op.startswith("LOG"):
            compute[op] += gas
            counts[op] += trace.count[(where, op)]
    top = compute.most_common(TOP_OPCODES)
    for op, gas in top:
        rows.append((f"computation: {op}", counts[op], gas))
    rest = sum(compute.values()) - sum(g for _, g in top)
    rows.append(
        (
            "computation: other opcodes",
            sum(counts.values()) - sum(counts[o] for o, _ in top),
            rest,
        )
    )
    return sum(trace.own.values()), rows


def print_breakdown(title: str, total: int, rows: list[tuple[str, int, int]]) -> None:
    print(f"\n{title}: {total:,} gas of execution (without intrinsic gas and calldata)")
    print(f"{'what':<56} {'count':>6} {'gas':>8} {'share':>6}")
    for what, count, gas in rows:
        if gas:
            print(f"{what:<56} {count:>6} {gas:>8,} {gas / total:>6.1%}")


def main() -> None:
    """Print the breakdown of both health checks, a one-position liquidation and a scenario
    update."""
    d = deploy()
    for title, who in (
        ("4 positions, 4 markets", d.tiered),
        ("4 positions, one group, K=16", d.portfolio),
    ):
        total, rows = breakdown(d.engine, lambda w=who: d.engine.is_liquidatable(w, 0))
        print_breakdown(f"is_liquidatable, {title}", total, rows)

    def liquidate():
        with boa.env.prank(d.liquidator):
            d.engine.liquidate(d.victim, 0, 5, WAD, 0)

    total, rows = breakdown(d.engine, liquidate)
    print_breakdown(
        "liquidate, 1 position, into a liquidator subaccount without positions", total, rows
    )

    def overwrite_scenarios():
        now, chain_id = boa.env.evm.patch.timestamp, boa.env.evm.patch.chain_id
        rows = [[(-1) ** (j + i) * (350 + 97 * j + 131 * i) for j in range(16)] for i in range(4)]
        update = ScenarioUpdate(
            1, 16, tuple(pack_shocks(r) for r in rows), now - 1, now + 600, b"\x5a" * 32
        )
        signature = sign_batch([update], KEEPER.key, chain_id, d.scenarios.address)
        d.scenarios.submit_scenarios([update.as_tuple()], [signature])

    # Storage named by the scenario registry's layout (the engine's push shows as callee).
    boa.env.time_travel(seconds=60)
    total, rows = breakdown(d.scenarios, overwrite_scenarios)
    print_breakdown("submit_scenarios, 4-market group, K = 16, overwrite, 1 signer", total, rows)


if __name__ == "__main__":
    main()
