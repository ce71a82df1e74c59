"""Account profiles: events folded into histories, each metric by hand, every branch of the
class rule, the table's validation and what the keeper should sign."""

from __future__ import annotations

import dataclasses
import doctest

import pytest

from offchain import WAD
from offchain.risk import profiles
from offchain.risk.profiles import (
    AccountClass,
    AccountHistory,
    AccountRecord,
    BackstopEvent,
    ClassDecision,
    ClassTable,
    Fill,
    LiquidationEvent,
    PositionView,
    ProfileRules,
    TradeEvent,
    account_concentration,
    derive,
    fold_events,
    largest_market_share,
    liquidation_episodes,
    profile_metrics,
    profile_model_hash,
    profiles_to_sign,
    two_sidedness,
)
from offchain.risk.risk_config import load_risk_config

# The shipped class table (deploy/risk.yaml, profiles:) at both deployment scales.
DEVNET_CLASSES = load_risk_config().profiles.table("devnet")
EXAMPLE_CLASSES = load_risk_config().profiles.table("testnet")

DAY = 86_400
NOW = 1_700_000_000
USD = WAD
MAKER, TRADER, ENGINE = "0xMaker", "0xTrader", "0xEngine"


def test_doctests__run() -> None:
    assert doctest.testmod(profiles).failed == 0


# ---------------------------------------------------------------------------------------------
# Events


def test_fold_events__sides_notional_and_the_engine_left_out() -> None:
    trades = [
        # the trader (taker) buys 2 BTC at 50,000 from the maker
        TradeEvent(NOW - 10, 1, MAKER, 0, TRADER, 3, 2 * WAD, 50_000 * WAD),
        # the trader sells 1 BTC to the maker (size < 0: the taker sells)
        TradeEvent(NOW - 5, 1, MAKER.lower(), 0, TRADER, 3, -WAD, 51_000 * WAD),
        # the insurance fund unwinds against the maker
        TradeEvent(NOW - 1, 1, MAKER, 0, ENGINE, 0, WAD, 50_000 * WAD),
        # the maker moves a position between its own subaccounts: not a fill (as on-chain)
        TradeEvent(NOW - 2, 1, MAKER, 0, MAKER.lower(), 7, WAD, 50_000 * WAD),
    ]
    liqs = [LiquidationEvent(NOW - 3, 1, TRADER, 3), LiquidationEvent(NOW - 4, 2, TRADER, 3)]
    out = fold_events(trades, liqs, [BackstopEvent(NOW, TRADER, 4)], engine=ENGINE.upper())
    assert set(out) == {(MAKER, 0), (TRADER, 3), (TRADER, 4)}
    assert out[(TRADER, 3)].fills == (
        Fill(NOW - 10, 1, 100_000 * USD, True),
        Fill(NOW - 5, 1, 51_000 * USD, False),
    )
    assert [f.buy for f in out[(MAKER, 0)].fills] == [False, True, False]
    assert out[(TRADER, 3)].liquidations == (NOW - 4, NOW - 3)
    assert out[(TRADER, 4)].backstops == (NOW,)


# ---------------------------------------------------------------------------------------------
# Metrics by hand


def test_two_sidedness__ratio_of_the_smaller_side() -> None:
    assert two_sidedness(100, 25) == 0.25
    assert two_sidedness(25, 100) == 0.25
    with pytest.raises(ValueError, match=">= 0"):
        two_sidedness(-1, 0)


def test_liquidation_episodes__calls_within_an_hour_are_one() -> None:
    assert liquidation_episodes([]) == ()
    assert liquidation_episodes([0, 1800, 3500, 7200]) == (0, 7200)  # chained within the hour
    assert liquidation_episodes([10, 5], gap_s=0) == (5, 10)


def test_concentration__share_of_the_market_and_of_the_account() -> None:
    positions = (
        PositionView(1, 300 * USD, 1_000 * USD),  # 30% of market 1
        PositionView(2, 100 * USD, 200 * USD),  # 50% of market 2
    )
    assert largest_market_share(positions) == (0.5, 100 * USD)
    assert account_concentration(positions) == 0.75
    assert largest_market_share(()) == (0.0, 0)
    assert account_concentration(()) == 0.0
    assert largest_market_share((PositionView(1, 5, 0),)) == (1.0, 5)


def record(
    volume: int = 0,
    equity: int = 0,
    fills: tuple[tuple[int, int, bool], ...] = (),
    liquidations: tuple[int, ...] = (),
    backstops: tuple[int, ...] = (),
    positions: tuple[PositionView, ...] = (),
) -> AccountRecord:
    history = AccountHistory(
        tuple(Fill(at, 1, n * USD, buy) for at, n, buy in fills), liquidations, backstops
    )
    return AccountRecord(TRADER, 1, volume * USD, equity * USD, history, positions)


def test_profile_metrics__windows_of_30_and_90_days() -> None:
    r = record(
        fills=((NOW - 31 * DAY, 1_000, True), (NOW - DAY, 300, True), (NOW - 1, 200, False)),
        liquidations=(NOW - 60 * DAY, NOW - 60 * DAY + 60, NOW - 2 * DAY),
        backstops=(NOW - 91 * DAY,),
    )
    m = profile_metrics(r, NOW)
    assert (m.bought, m.sold) == (300 * USD, 200 * USD)
    assert m.two_sided == pytest.approx(2 / 3)
    assert (m.episodes_30d, m.episodes_90d, m.backstops_90d) == (1, 2, 0)


# ---------------------------------------------------------------------------------------------
# The rule, branch by branch (devnet table: maker >= 1M volume and 50k equity, active >= 100k
# and 5k, 5% buffer; dominance from 25% of the market and 1M USD)


MAKER_FLOW = ((NOW - DAY, 600_000, True), (NOW - DAY, 550_000, False))  # two-sided 0.92


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"backstops": (NOW - 80 * DAY,), "volume": 10**9, "equity": 10**9}, "backstopped"),
        ({"liquidations": (NOW - 5 * DAY, NOW - 2 * DAY)}, "repeat_liquidated"),
        ({"liquidations": (NOW - 2 * DAY, NOW - 2 * DAY + 600)}, "liquidated"),  # one episode
        (
            {"positions": (PositionView(1, 2_000_000 * USD, 4_000_000 * USD),)},
            "dominant",
        ),
        ({"volume": 1_100_000, "equity": 60_000, "fills": MAKER_FLOW}, "maker"),
        # maker volume but one-way-ish flow (0.6): only active
        (
            {
                "volume": 1_100_000,
                "equity": 60_000,
                "fills": ((NOW - DAY, 500_000, True), (NOW - DAY, 300_000, False)),
            },
            "active",
        ),
        # maker flow and equity, volume within the 5% buffer of the maker minimum: active
        ({"volume": 1_040_000, "equity": 60_000, "fills": MAKER_FLOW}, "active"),
        # liquidated 40 days ago: no discount, no penalty
        (
            {
                "volume": 1_100_000,
                "equity": 60_000,
                "fills": MAKER_FLOW,
                "liquidations": (NOW - 40 * DAY,),
            },
            "default",
        ),
        # a large share of a small market under the size floor: no penalty, but no discount
        (
            {
                "volume": 1_100_000,
                "equity": 60_000,
                "fills": MAKER_FLOW,
                "positions": (PositionView(1, 100_000 * USD, 200_000 * USD),),
            },
            "default",
        ),
        ({"volume": 99_000, "equity": 60_000, "fills": MAKER_FLOW}, "default"),
        ({"volume": 500_000, "equity": 4_000, "fills": MAKER_FLOW}, "default"),
        ({}, "default"),
    ],
)
def test_derive__each_branch(kwargs: dict, expected: str) -> None:
    d = derive(record(**kwargs), NOW, DEVNET_CLASSES)
    assert d.name == expected
    want = 0 if expected == "default" else DEVNET_CLASSES.by_name(expected).class_id
    assert d.class_id == want


def test_derive__penalty_order_backstop_before_liquidations_before_dominance() -> None:
    big = (PositionView(1, 2_000_000 * USD, 2_000_000 * USD),)
    both = record(liquidations=(NOW - DAY,), backstops=(NOW - DAY,), positions=big)
    assert derive(both, NOW, DEVNET_CLASSES).name == "backstopped"
    assert derive(record(liquidations=(NOW - DAY,), positions=big), NOW, DEVNET_CLASSES).name == (
        "liquidated"
    )


# ---------------------------------------------------------------------------------------------
# Tables


def test_tables__multipliers_and_minimums() -> None:
    for table in (DEVNET_CLASSES, EXAMPLE_CLASSES):
        m = {c.name: c.multiplier for c in table.classes}
        assert m == {
            "maker": 8 * WAD // 10,
            "active": 9 * WAD // 10,
            "dominant": 5 * WAD // 4,
            "liquidated": 5 * WAD // 4,
            "repeat_liquidated": 3 * WAD // 2,
            "backstopped": 2 * WAD,
        }
        assert table.multiplier(0) == WAD
    assert EXAMPLE_CLASSES.by_name("maker").as_tuple() == (
        8 * WAD // 10,
        50_000_000 * USD,
        250_000 * USD,
    )


def _with(which: str, /, **changes) -> tuple[AccountClass, ...]:
    return tuple(
        dataclasses.replace(c, **changes) if c.name == which else c for c in DEVNET_CLASSES.classes
    )


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        (_with("maker", multiplier=7 * WAD // 10), r"outside \[0.8, 2\]"),
        (_with("backstopped", multiplier=3 * WAD), r"outside \[0.8, 2\]"),
        (_with("liquidated", min_equity=1), "no on-chain eligibility"),
        (_with("dominant", multiplier=9 * WAD // 10), "no on-chain eligibility"),
        (_with("active", min_volume=0), "both on-chain minimums"),
        (_with("active", class_id=1), "distinct"),
        (_with("active", class_id=8), "distinct"),
        (_with("active", name="taker"), "must define exactly"),
    ],
)
def test_tables__validation(classes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassTable(classes)


def test_tables__rules_validation() -> None:
    with pytest.raises(ValueError, match="two-sided"):
        ClassTable(DEVNET_CLASSES.classes, ProfileRules(maker_two_sided=0.4))


def test_profile_model_hash__changes_with_the_table() -> None:
    h = profile_model_hash(DEVNET_CLASSES)
    assert len(h) == 32 and h == profile_model_hash(DEVNET_CLASSES)
    assert h != profile_model_hash(EXAMPLE_CLASSES)


# ---------------------------------------------------------------------------------------------
# What to sign


def test_profiles_to_sign__changes_refreshes_and_expiries() -> None:
    decisions = {
        ("0xa", 0): ClassDecision(1, "maker", "two-sided"),  # new discount
        ("0xb", 0): ClassDecision(4, "liquidated", "x"),  # in force, far from expiry
        ("0xc", 0): ClassDecision(4, "liquidated", "x"),  # in force, expires soon
        ("0xd", 0): ClassDecision(0, "default", "no rule"),  # discount to lift
        ("0xe", 0): ClassDecision(0, "default", "no rule"),  # expired already: nothing
        ("0xf", 0): ClassDecision(2, "active", "y"),  # expired profile of the same class
    }
    current = {
        ("0xb", 0): (4, NOW + 7_000),
        ("0xc", 0): (4, NOW + 100),
        ("0xd", 0): (1, NOW + 7_000),
        ("0xe", 0): (1, NOW - 1),
        ("0xf", 0): (2, NOW - 1),
    }
    out = profiles_to_sign(decisions, current, NOW, refresh_s=3_600)
    assert [(c.owner, c.class_id) for c in out] == [("0xa", 1), ("0xc", 4), ("0xd", 0), ("0xf", 2)]
    assert out[1].reason.startswith("refresh liquidated")
    assert out[2].reason.startswith("1 -> 0")
