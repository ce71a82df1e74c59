"""The engine's books replayed from its events, to the wei: every subaccount's collateral, open
positions and funding snapshots, the bad debt, and the two things no view tells: the wei each
fill's rounding kept, and the funding each settlement actually moved.

The engine emits, per transaction, a ``FundingAccrued`` log for each market it touches (the
index every settlement in that transaction uses) and one log per cash movement: ``Deposit``,
``Withdraw``, ``InsuranceFunded``, ``Trade``, ``Liquidation`` (penalty and the liquidator's
share), ``BackstopReward`` and ``Backstop`` (every position moves to the insurance fund at the
mark price; the fund covers the negative collateral, the rest is bad debt; the caller's
subaccount 0 is paid the reward from what the fund has left), ``Deleveraged`` (a position
closed against the fund's and the account's transfer: bad debt first, the rest to the fund) and
``BadDebtRepaid`` (the fund's collateral repays bad debt). :func:`replay` applies them in log
order with the contract's arithmetic (``modules/engine_core.vy``, ``_apply``)::

    settle:   collateral -= ceil(a * (index - snapshot) / WAD)     (a: size before the fill)
    buy s:    cash = -ceil(s * p / WAD);   sell s: cash = floor(s * p / WAD)
    grow:     open_notional -= cash
    reduce:   basis = trunc(open_notional * (a - b) / a); open_notional -= basis;
              collateral += cash - basis
    flip:     collateral += cash - open_notional + opened; open_notional = opened

Summed over every subaccount (the insurance fund included), ``collateral - open_notional - bad
debt`` moves only with deposits and withdrawals, a fill's rounding (the buyer pays
``ceil(s p)``, the seller gets ``floor(s p)``) and funding settlements (the index is one integer
per market and the positions of a market always sum to zero, so the settlements plus the funding
still unsettled sum to zero exactly, before each settlement rounds up). Hence, to the wei::

    token balance = sum(collateral) - sum(open notional) - bad debt + rounding + funding settled

:class:`Books` holds the replayed state; :func:`offchain.devnet.ledger.books` compares it with the
chain's views account by account and puts the identity next to the token balance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from offchain import WAD

Key = tuple[str, int]  # (owner, subaccount), owner checksummed


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ``b > 0``, any sign."""
    return -(-a // b)


def trunc_div(a: int, b: int) -> int:
    """``a / b`` truncated toward zero (the EVM's signed division), ``b != 0``."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass(frozen=True)
class Log:
    """One engine log: its name, block and index (for ordering), transaction and arguments."""

    name: str
    block: int
    index: int
    tx: str
    args: dict


@dataclass
class Position:
    size: int = 0
    open_notional: int = 0


@dataclass
class Books:
    """The replayed ledger (module docstring)."""

    insurance: Key
    scale: int  # token units to WAD
    collateral: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    positions: dict[tuple[Key, int], Position] = field(default_factory=dict)
    snapshots: dict[tuple[Key, int], int] = field(default_factory=dict)
    index: dict[int, int] = field(default_factory=dict)
    price: dict[int, int] = field(default_factory=dict)
    bad_debt: int = 0
    deposits: int = 0  # WAD, deposits and insurance funding less withdrawals
    rounding: int = 0
    fills: int = 0
    funding_settled: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    settlements: int = 0
    # What the insurance fund's collateral went through (WAD), for the summary.
    fund_flows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    backstop_rewards: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    bad_debt_repaid_by_adl: int = 0
    mismatches: list[str] = field(default_factory=list)

    # -- the contract's arithmetic ---------------------------------------------------------

    def _apply(self, key: Key, market: int, delta: int, price: int) -> None:
        pos = self.positions.setdefault((key, market), Position())
        index = self.index.get(market, 0)
        snap = self.snapshots.get((key, market), 0)
        a = pos.size
        if a != 0 and snap != index:
            owed = ceil_div(a * (index - snap), WAD)
            self.collateral[key] -= owed
            self.funding_settled[key] += owed
            self.settlements += 1
        self.snapshots[(key, market)] = index
        value = abs(delta) * price
        cash = -ceil_div(value, WAD) if delta > 0 else value // WAD
        b = a + delta
        if a == 0 or (a > 0 and b > a) or (a < 0 and b < a):
            pos.open_notional -= cash
        elif b == 0 or (a > 0 and b > 0) or (a < 0 and b < 0):
            basis = trunc_div(pos.open_notional * (a - b), a)
            pos.open_notional -= basis
            self.collateral[key] += cash - basis
        else:
            opened = ceil_div(b * price, WAD) if b > 0 else -((-b) * price // WAD)
            self.collateral[key] += cash - pos.open_notional + opened
            pos.open_notional = opened
        pos.size = b

    def move(self, market: int, to: Key, frm: Key, size: int, price: int) -> None:
        """``size`` from ``frm`` to ``to`` at ``price`` (the receiver buys when positive)."""
        self._apply(to, market, size, price)
        self._apply(frm, market, -size, price)
        self.fills += 1
        self.rounding += 1 if abs(size) * price % WAD else 0

    def held(self, key: Key) -> list[tuple[int, int]]:
        """``(market, size)`` of every open position of ``key``."""
        return [(m, p.size) for (k, m), p in sorted(self.positions.items()) if k == key and p.size]

    def check(self, what: str, replayed: int, logged: int) -> None:
        if replayed != logged:
            self.mismatches.append(f"{what}: replay {replayed}, log {logged}")

    # -- totals ----------------------------------------------------------------------------

    @property
    def open_notional(self) -> int:
        return sum(p.open_notional for p in self.positions.values())

    @property
    def total_funding_settled(self) -> int:
        return sum(self.funding_settled.values())


def _key(owner: str, sub: int) -> Key:
    return to_checksum_address(owner), int(sub)


def replay(
    logs: Iterable[Log], engine: str, scale: int, backstop_reward: int | None = None
) -> Books:
    """Apply the engine's logs in order (module docstring). With ``backstop_reward`` (the
    engine's setting) each backstop's reward is checked: ``min(reward, fund left)``."""
    books = Books(_key(engine, 0), scale)
    fund = books.insurance
    reward: tuple[Key, int] | None = None
    for log in sorted(logs, key=lambda x: (x.block, x.index)):
        a = log.args
        if log.name == "FundingAccrued":
            books.index[int(a["market_id"])] = int(a["index"])
            books.price[int(a["market_id"])] = int(a["price"])
        elif log.name == "Deposit":
            books.collateral[_key(a["owner"], a["subaccount"])] += int(a["amount"]) * scale
            books.deposits += int(a["amount"]) * scale
        elif log.name == "Withdraw":
            books.collateral[_key(a["owner"], a["subaccount"])] -= int(a["amount"]) * scale
            books.deposits -= int(a["amount"]) * scale
        elif log.name == "InsuranceFunded":
            books.collateral[fund] += int(a["amount"]) * scale
            books.deposits += int(a["amount"]) * scale
            books.fund_flows["funded"] += int(a["amount"]) * scale
        elif log.name == "Trade":
            maker = _key(a["maker_owner"], a["maker_subaccount"])
            taker = _key(a["taker_owner"], a["taker_subaccount"])
            books.move(int(a["market_id"]), taker, maker, int(a["size"]), int(a["price"]))
        elif log.name == "Liquidation":
            owner = _key(a["owner"], a["subaccount"])
            liquidator = _key(a["liquidator"], a["liquidator_subaccount"])
            books.move(int(a["market_id"]), liquidator, owner, -int(a["size"]), int(a["price"]))
            penalty, share = int(a["penalty"]), int(a["liquidator_reward"])
            books.collateral[owner] -= penalty
            books.collateral[liquidator] += share
            books.collateral[fund] += penalty - share
            books.fund_flows["penalties"] += penalty - share
        elif log.name == "BackstopReward":
            reward = (_key(a["caller"], 0), int(a["amount"]))
        elif log.name == "Backstop":
            owner = _key(a["owner"], a["subaccount"])
            for market, size in books.held(owner):
                books.move(market, fund, owner, size, books.price[market])
            covered = uncovered = 0
            collateral = books.collateral[owner]
            if collateral < 0:
                shortfall = -collateral
                available = books.collateral[fund]
                covered = min(shortfall, available) if available > 0 else 0
                books.collateral[fund] -= covered
                uncovered = shortfall - covered
                books.collateral[owner] = 0
                books.bad_debt += uncovered
            books.check(f"backstop {owner} covered", covered, int(a["covered"]))
            books.check(f"backstop {owner} bad debt", uncovered, int(a["bad_debt"]))
            books.fund_flows["covered"] -= covered
            if backstop_reward is not None:
                left = books.collateral[fund]
                due = min(backstop_reward, left) if left > 0 else 0
                books.check(f"backstop {owner} reward", reward[1] if reward else 0, due)
            if reward is not None:
                caller, amount = reward
                books.collateral[fund] -= amount
                books.collateral[caller] += amount
                books.backstop_rewards[caller] += amount
                books.fund_flows["backstop rewards"] -= amount
            reward = None
        elif log.name == "Deleveraged":
            owner = _key(a["owner"], a["subaccount"])
            books.move(int(a["market_id"]), fund, owner, -int(a["size"]), int(a["price"]))
            transfer = int(a["transfer"])
            repaid = min(transfer, books.bad_debt)
            books.collateral[owner] -= transfer
            books.bad_debt -= repaid
            books.collateral[fund] += transfer - repaid
            books.fund_flows["ADL transfers"] += transfer - repaid
            books.bad_debt_repaid_by_adl += repaid
        elif log.name == "BadDebtRepaid":
            amount = int(a["amount"])
            books.bad_debt -= amount
            books.collateral[fund] -= amount
            books.fund_flows["repaid bad debt"] -= amount
            books.check("bad debt after repayment", books.bad_debt, int(a["bad_debt_after"]))
    return books


ENGINE_LOGS = (
    "FundingAccrued",
    "Deposit",
    "Withdraw",
    "InsuranceFunded",
    "Trade",
    "Liquidation",
    "BackstopReward",
    "Backstop",
    "Deleveraged",
    "BadDebtRepaid",
)

__all__ = ["ENGINE_LOGS", "Books", "Key", "Log", "Position", "ceil_div", "replay", "trunc_div"]
