"""The engine's books replayed from its events (no chain): each kind of log by hand, and the
identity the demo reconciles to the wei through funding, a backstop with its reward and bad
debt, deleveraging and the fund's repayment."""

from __future__ import annotations

from offchain import WAD
from offchain.devnet.book_replay import Log, replay, trunc_div

ENGINE = "0x" + "ee" * 20
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20
BOT = "0x" + "c0" * 20
SCALE = 10**12
BTC = 1


class Chain:
    """Logs in order, one transaction per call."""

    def __init__(self) -> None:
        self.logs: list[Log] = []
        self.tx = 0

    def __call__(self, *events: tuple[str, dict]) -> None:
        self.tx += 1
        for name, args in events:
            self.logs.append(Log(name, self.tx, len(self.logs), f"0x{self.tx:064x}", args))


def accrue(index: int, price: int = 60_000 * WAD) -> tuple[str, dict]:
    return ("FundingAccrued", {"market_id": BTC, "index": index, "rate": 0, "price": price})


def deposit(owner: str, usd: int, sub: int = 0) -> tuple[str, dict]:
    return ("Deposit", {"owner": owner, "subaccount": sub, "amount": usd * 10**6})


def trade(taker: str, maker: str, size: int, price: int) -> tuple[str, dict]:
    return (
        "Trade",
        {
            "market_id": BTC,
            "maker_owner": maker,
            "maker_subaccount": 0,
            "taker_owner": taker,
            "taker_subaccount": 0,
            "size": size,
            "price": price,
        },
    )


def identity(books) -> int:
    """``sum collateral - sum open notional - bad debt + rounding + funding settled``."""
    return (
        sum(books.collateral.values())
        - books.open_notional
        - books.bad_debt
        + books.rounding
        + books.total_funding_settled
    )


def test_trade__buyer_pays_ceil_seller_gets_floor_one_wei_kept():
    chain = Chain()
    chain(deposit(ALICE, 10_000), deposit(BOB, 10_000))
    size, price = WAD // 3, 60_000 * WAD + 1  # s * p is not whole
    chain(accrue(0), trade(ALICE, BOB, size, price))
    books = replay(chain.logs, ENGINE, SCALE)
    pos = {k[0][0].lower(): p for k, p in books.positions.items()}
    assert pos[ALICE.lower()].size == size
    assert pos[ALICE.lower()].open_notional == -(-size * price // WAD)  # paid ceil
    assert pos[BOB.lower()].size == -size
    assert pos[BOB.lower()].open_notional == -(size * price // WAD)  # got floor
    assert books.rounding == 1 and books.fills == 1
    assert identity(books) == books.deposits == 20_000 * WAD


def test_funding__settlement_rounds_up_and_the_identity_holds_through_it():
    chain = Chain()
    chain(deposit(ALICE, 10_000), deposit(BOB, 10_000))
    third = WAD // 3
    chain(accrue(0), trade(ALICE, BOB, third, 60_000 * WAD))  # alice long, bob short
    # The index grows by 7 wei: alice owes ceil(third * 7 / WAD) = ceil(2.33) = 3, bob is owed
    # 2.33, rounded up (toward zero) to 2: the settlements together take 1 wei in.
    chain(accrue(7), trade(BOB, ALICE, third // 2, 60_000 * WAD))
    books = replay(chain.logs, ENGINE, SCALE)
    settled = {k[0].lower(): v for k, v in books.funding_settled.items()}
    assert settled == {ALICE.lower(): 3, BOB.lower(): -2}
    assert books.total_funding_settled == 1 and books.settlements == 2
    assert identity(books) == books.deposits


def test_reduce__realised_pnl_with_truncated_basis():
    chain = Chain()
    chain(deposit(ALICE, 10_000), deposit(BOB, 10_000))
    chain(accrue(0), trade(ALICE, BOB, 3 * WAD, 100 * WAD + 1))
    chain(accrue(0), trade(BOB, ALICE, WAD, 110 * WAD))  # alice sells a third at 110
    books = replay(chain.logs, ENGINE, SCALE)
    alice = next(k for k in books.collateral if k[0].lower() == ALICE.lower())
    notional = -(-3 * WAD * (100 * WAD + 1) // WAD)
    basis = trunc_div(notional * WAD, 3 * WAD)
    assert books.collateral[alice] == 10_000 * WAD + 110 * WAD - basis
    assert identity(books) == books.deposits


def test_backstop__covered_bad_debt_reward_then_deleveraging_and_repayment():
    chain = Chain()
    chain(deposit(ALICE, 1_000), deposit(BOB, 50_000), deposit(BOT, 10_000))
    chain(("InsuranceFunded", {"funder": BOT, "amount": 500 * 10**6}))
    chain(accrue(0), trade(ALICE, BOB, WAD, 60_000 * WAD))  # alice long 1 BTC on 1,000
    # BTC at 58,000: alice is 1,000 below zero; the fund covers 500, 500 is bad debt; the
    # fund has nothing left, so the caller's reward is 0 (the replay checks it).
    chain(
        accrue(0, 58_000 * WAD),
        ("Backstop", {"owner": ALICE, "subaccount": 0, "equity": -1000 * WAD,
                      "covered": 500 * WAD, "bad_debt": 500 * WAD}),
    )  # fmt: skip
    books = replay(chain.logs, ENGINE, SCALE, backstop_reward=10 * WAD)
    assert books.mismatches == [] and books.bad_debt == 500 * WAD
    fund = (books.insurance[0], 0)
    assert books.positions[(fund, BTC)].size == WAD
    assert identity(books) == books.deposits
    # Bob's short deleverages against the fund's long: 600 moves, 500 repays the bad debt.
    chain(
        accrue(0, 58_000 * WAD),
        ("Deleveraged", {"market_id": BTC, "owner": BOB, "subaccount": 0, "caller": BOT,
                         "size": WAD, "price": 58_000 * WAD, "transfer": 600 * WAD,
                         "unrealised_pnl": 2_000 * WAD, "equity": 52_000 * WAD,
                         "deficit_after": 0}),
    )  # fmt: skip
    chain(("InsuranceFunded", {"funder": BOT, "amount": 100 * 10**6}))
    books = replay(chain.logs, ENGINE, SCALE, backstop_reward=10 * WAD)
    assert books.bad_debt == 0 and books.bad_debt_repaid_by_adl == 500 * WAD
    # Covered 500 of its 500, closed its long at its cost, kept 100 of the transfer, +100.
    assert books.collateral[fund] == 200 * WAD
    assert books.fund_flows["ADL transfers"] == 100 * WAD
    assert identity(books) == books.deposits


def test_backstop__a_reward_the_fund_could_not_pay_is_a_mismatch():
    chain = Chain()
    chain(deposit(ALICE, 1_000), deposit(BOB, 50_000))
    chain(accrue(0), trade(ALICE, BOB, WAD, 60_000 * WAD))
    chain(
        accrue(0, 58_000 * WAD),
        ("BackstopReward", {"caller": BOT, "amount": 10 * WAD}),
        ("Backstop", {"owner": ALICE, "subaccount": 0, "equity": -1000 * WAD,
                      "covered": 0, "bad_debt": 1_000 * WAD}),
    )  # fmt: skip
    books = replay(chain.logs, ENGINE, SCALE, backstop_reward=10 * WAD)
    assert any("reward: replay 10" in m for m in books.mismatches)


def test_repayment__the_fund_repays_bad_debt_from_its_equity():
    chain = Chain()
    chain(deposit(ALICE, 1_000), deposit(BOB, 50_000))
    chain(accrue(0), trade(ALICE, BOB, WAD, 60_000 * WAD))
    chain(
        accrue(0, 58_000 * WAD),
        ("Backstop", {"owner": ALICE, "subaccount": 0, "equity": -1000 * WAD,
                      "covered": 0, "bad_debt": 1_000 * WAD}),
    )  # fmt: skip
    chain(
        ("InsuranceFunded", {"funder": BOB, "amount": 3_000 * 10**6}),
        ("BadDebtRepaid", {"caller": BOB, "amount": 1_000 * WAD, "bad_debt_after": 0}),
    )
    books = replay(chain.logs, ENGINE, SCALE)
    assert books.bad_debt == 0 and books.mismatches == []
    assert books.fund_flows["repaid bad debt"] == -1_000 * WAD
    assert identity(books) == books.deposits == 54_000 * WAD
