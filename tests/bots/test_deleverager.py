"""The deleveraging order: largest unrealised profit times leverage first (by hand)."""

from offchain.bots.deleverager import candidate, rank
from offchain.protocol.chain import Subaccount

WAD = 10**18


def acct(n: int) -> Subaccount:
    return Subaccount(f"0x{n:040x}", 0)


def test_candidate__profit_leverage_and_score_by_hand():
    # Short 2 BTC opened at 60,000 (open notional -120,000), mark 50,000, equity 25,000.
    c = candidate(acct(1), 1, -2 * WAD, -120_000 * WAD, 50_000 * WAD, 25_000 * WAD)
    assert c.pnl == 20_000 * WAD
    assert c.notional == 100_000 * WAD
    assert c.score == 20_000 * WAD * 100_000 // 25_000  # profit x leverage 4 = 80,000 USD


def test_candidate__rounding_against_the_account():
    # 1 wei of size at a price that does not divide: notional rounds up, value down.
    c = candidate(acct(1), 1, -1, 0, 3 * WAD // 2, WAD)
    assert c.notional == 2 and c.pnl == -2


def test_rank__profit_times_leverage_first_then_the_losers_by_size():
    rich = candidate(acct(1), 1, -WAD, -60_000 * WAD, 50_000 * WAD, 100_000 * WAD)  # 10k x 0.5
    levered = candidate(acct(2), 1, -WAD, -55_000 * WAD, 50_000 * WAD, 10_000 * WAD)  # 5k x 5
    loser_big = candidate(acct(3), 1, -3 * WAD, -140_000 * WAD, 50_000 * WAD, 9_000 * WAD)
    loser_small = candidate(acct(4), 1, -WAD, -45_000 * WAD, 50_000 * WAD, 9_000 * WAD)
    assert [c.account for c in rank([loser_small, rich, loser_big, levered])] == [
        acct(2),
        acct(1),
        acct(3),
        acct(4),
    ]
    assert loser_big.score == loser_small.score == 0
