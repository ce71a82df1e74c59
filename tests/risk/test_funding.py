"""The funding models: the formula by hand, the premium model on a replayed fill sequence, the
reference model's staleness, and the configuration's errors."""

from __future__ import annotations

import doctest

import pytest

from offchain import WAD
from offchain.protocol.engine_math import add_premium
from offchain.risk import funding
from offchain.risk.funding import (
    AccumulatorReading,
    PremiumFundingModel,
    ReferenceFundingModel,
    ReferenceReading,
    bounded,
    decayed_premium,
    funding_model_from_config,
    funding_rate_8h,
    per_second,
    reference_rate_8h,
    stale_factor,
    window_premium,
)

H = 3600
USD = WAD
BP = 10**14  # 0.01%
I_8H = BP  # interest 0.01% per 8 hours
C_8H = 5 * BP  # clamp 0.05%
DEVNET_BOUND = 10**12
INTEREST_PER_S = BP // 28_800  # 3_472_222_222


def test_doctests__run() -> None:
    assert doctest.testmod(funding).failed == 0


# ---------------------------------------------------------------------------------------------
# Pure pieces by hand


def test_window_premium__is_the_notional_weighted_average() -> None:
    # 1M USD at +0.1% and 3M USD at -0.1%: (1 - 3) / 4 * 0.1% = -0.05%.
    d_w = 1_000_000 * USD * 10 * BP // WAD - 3_000_000 * USD * 10 * BP // WAD
    assert window_premium(d_w, 4_000_000 * USD, 0) == -5 * BP


def test_window_premium__shrinks_thin_windows_toward_zero() -> None:
    # 100k USD at +1% weighed as 1M USD: +0.1%.
    d_w = 100_000 * USD * 100 * BP // WAD
    assert window_premium(d_w, 100_000 * USD, 1_000_000 * USD) == 10 * BP
    assert window_premium(d_w, 100_000 * USD, 0) == 100 * BP


def test_window_premium__empty_window_is_zero_and_falling_notional_refused() -> None:
    assert window_premium(0, 0, 0) == 0
    with pytest.raises(ValueError, match="went down"):
        window_premium(0, -1, 0)


def test_decayed_premium__linear_to_zero_truncated_toward_zero() -> None:
    assert decayed_premium(8 * BP, 0, 8 * H) == 8 * BP
    assert decayed_premium(8 * BP, 2 * H, 8 * H) == 6 * BP
    assert decayed_premium(-7, 4 * H, 8 * H) == -3  # -3.5 toward zero
    assert decayed_premium(8 * BP, 8 * H, 8 * H) == 0
    assert decayed_premium(8 * BP, 30 * H, 8 * H) == 0
    with pytest.raises(ValueError, match="future"):
        decayed_premium(BP, -1, 8 * H)


@pytest.mark.parametrize(
    ("premium", "expected"),
    [
        (0, I_8H),  # no premium: the interest term
        (5 * BP, I_8H),  # inside [I - c, I + c] = [-0.04%, +0.06%]: still I
        (-4 * BP, I_8H),
        (10 * BP, 5 * BP),  # 0.1%: P + (I - P clamped to -c) = 0.1% - 0.05%
        (-10 * BP, -5 * BP),  # -0.1%: P + c
        (7 * BP, 2 * BP),  # just past the band: 0.07% - 0.05%
    ],
)
def test_funding_rate_8h__binance_formula(premium: int, expected: int) -> None:
    assert funding_rate_8h(premium, I_8H, C_8H) == expected


def test_per_second__truncates_toward_zero() -> None:
    assert per_second(I_8H) == 3_472_222_222
    assert per_second(-I_8H) == -3_472_222_222
    assert per_second(-1) == 0


def test_bounded__clamps_and_refuses_a_bound_the_registry_cannot_hold() -> None:
    assert bounded(5, 3) == 3
    assert bounded(-5, 3) == -3
    assert bounded(2, 3) == 2
    with pytest.raises(ValueError, match="outside"):
        bounded(0, 2**47)


def test_reference_helpers__units_and_stale_weight() -> None:
    assert reference_rate_8h(10_000, 8) == I_8H  # 0.01% in 1e-8 units
    assert reference_rate_8h(-1, 18) == -1
    with pytest.raises(ValueError, match="decimals"):
        reference_rate_8h(1, 19)
    assert stale_factor(9 * H, 9 * H, 8 * H) == (1, 1)
    assert stale_factor(13 * H, 9 * H, 8 * H) == (4 * H, 8 * H)
    assert stale_factor(17 * H, 9 * H, 8 * H) == (0, 1)


# ---------------------------------------------------------------------------------------------
# The premium model on replayed fills


def replay(
    fills_by_hour: dict[int, list[tuple[int, float]]],
    hours: int,
    model: PremiumFundingModel,
    mark: int = 60_000 * WAD,
) -> dict[int, funding.FundingQuote]:
    """Fill the engine's accumulators with ``engine_math.add_premium`` (the contract's
    reference) hour by hour, read them at each hour's end and quote there.

    ``fills_by_hour[h]`` lists ``(notional USD, premium)`` of fills during hour ``h``."""
    weighted = total = 0
    model.observe(AccumulatorReading(0, 0, 0))
    quotes = {}
    for h in range(1, hours + 1):
        for notional_usd, premium in fills_by_hour.get(h, []):
            price = mark + round(mark * premium)
            weighted, total = add_premium(weighted, total, notional_usd * WAD, price, mark)
        model.observe(AccumulatorReading(h * H, weighted, total))
        quotes[h] = model.quote(h * H, DEVNET_BOUND)
    return quotes


def test_premium_model__fills_above_the_oracle_for_8_hours_make_longs_pay() -> None:
    fills = {h: [(400_000, 0.001), (600_000, 0.001)] for h in range(1, 9)}
    quotes = replay(fills, 8, PremiumFundingModel())
    q = quotes[8]
    assert q.source == "premium"
    assert q.premium == 10 * BP
    assert q.window_notional == 8_000_000 * USD
    assert q.rate_8h == 5 * BP  # 0.1% - 0.05%
    assert q.rate == 5 * BP // 28_800 == 17_361_111_111
    assert 0 < q.rate <= DEVNET_BOUND and not q.clipped
    assert "premium 0.1000% over 8.0 h" in q.detail()


def test_premium_model__fills_at_the_mark_give_the_interest_term() -> None:
    quotes = replay({h: [(1_000_000, 0.0)] for h in range(1, 9)}, 8, PremiumFundingModel())
    assert quotes[8].premium == 0
    assert quotes[8].rate == INTEREST_PER_S


def test_premium_model__no_fills_ever_is_the_interest_term() -> None:
    quotes = replay({}, 3, PremiumFundingModel())
    assert quotes[3].source == "none"
    assert quotes[3].rate == INTEREST_PER_S


def test_premium_model__decays_toward_the_interest_term_once_the_window_empties() -> None:
    fills = {h: [(1_000_000, 0.001)] for h in range(1, 9)}  # hours 1..8, then nothing
    quotes = replay(fills, 24, PremiumFundingModel())
    # The window still holds fills up to the reading at 15 h (its start edge is the 7 h one).
    assert [quotes[h].source for h in (9, 15)] == ["premium", "premium"]
    assert quotes[15].premium == 10 * BP
    # From 16 h the window is empty: the 15 h premium falls over 8 hours.
    assert quotes[16].source == "decay"
    assert quotes[16].premium == 10 * BP * 7 // 8
    assert quotes[16].rate_8h == 10 * BP * 7 // 8 - C_8H  # 0.0875% - 0.05%
    assert quotes[19].premium == 10 * BP * 4 // 8  # 0.05%: inside the band, rate = I
    assert quotes[19].rate == INTEREST_PER_S
    assert quotes[23].premium == 0
    assert quotes[24].rate == INTEREST_PER_S
    rates = [quotes[h].rate for h in range(15, 25)]
    assert rates == sorted(rates, reverse=True)


def test_premium_model__a_new_fill_ends_the_decay() -> None:
    fills = {1: [(1_000_000, 0.002)], 20: [(2_000_000, -0.002)]}
    quotes = replay(fills, 20, PremiumFundingModel())
    assert quotes[12].source == "decay"
    assert quotes[20].source == "premium"
    assert quotes[20].premium == -20 * BP
    assert quotes[20].rate < 0  # shorts pay


def test_premium_model__a_lone_small_fill_at_the_band_edge_moves_little() -> None:
    # 1,000 USD at +5% weighed as the default 100,000 USD: 0.05%, inside the interest band.
    q = replay({1: [(1_000, 0.05)]}, 1, PremiumFundingModel())[1]
    assert q.premium == 5 * BP
    assert q.rate == INTEREST_PER_S
    assert "thin" in q.note


def test_premium_model__clipped_to_the_registry_bound() -> None:
    q = replay({1: [(1_000_000, 0.05)]}, 1, PremiumFundingModel())[1]
    assert q.rate_8h == 500 * BP - C_8H
    assert q.rate == DEVNET_BOUND and q.clipped
    assert "clipped" in q.detail()


def test_premium_model__refuses_bad_readings() -> None:
    m = PremiumFundingModel()
    with pytest.raises(ValueError, match="no premium accumulator reading"):
        m.quote(0, DEVNET_BOUND)
    m.observe(AccumulatorReading(100, 0, 10))
    with pytest.raises(ValueError, match="not after"):
        m.observe(AccumulatorReading(100, 0, 10))
    with pytest.raises(ValueError, match="fell"):
        m.observe(AccumulatorReading(200, 0, 5))
    with pytest.raises(ValueError, match="after now"):
        m.quote(50, DEVNET_BOUND)
    with pytest.raises(ValueError, match="old"):
        m.quote(100 + 8 * H + 1, DEVNET_BOUND)


def test_premium_model__keeps_only_the_window_edge_and_after() -> None:
    m = PremiumFundingModel(window_s=2 * H, min_window_notional=0)
    for h in range(6):
        m.observe(AccumulatorReading(h * H, 0, h))
    assert [r.at for r in m.readings] == [3 * H, 4 * H, 5 * H]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 60}, "window_s"),
        ({"min_window_notional": -1}, "min_window_notional"),
        ({"interest_8h": 2 * WAD}, "interest_8h"),
        ({"interest_clamp_8h": -1}, "interest_clamp_8h"),
        ({"decay_s": -1}, "decay_s"),
    ],
)
def test_premium_model__validates_its_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PremiumFundingModel(**kwargs)


# ---------------------------------------------------------------------------------------------
# The reference model


def test_reference_model__fresh_stale_and_dead() -> None:
    m = ReferenceFundingModel()  # stale after 9 h, to zero over 8 h
    r = ReferenceReading(answer=30_000, updated_at=1_000)  # 0.03% per 8 hours
    full = 3 * BP // 28_800
    assert m.quote(r, 1_000 + 9 * H, DEVNET_BOUND).rate == full
    half = m.quote(r, 1_000 + 13 * H, DEVNET_BOUND)
    assert half.source == "reference_stale"
    assert half.rate == (3 * BP // 2) // 28_800
    assert m.quote(r, 1_000 + 17 * H, DEVNET_BOUND).rate == 0


def test_reference_model__negative_rates_and_the_bound() -> None:
    m = ReferenceFundingModel()
    q = m.quote(ReferenceReading(-2_000_000, 10), 20, 10**11)  # -2% per 8 hours
    assert q.rate == -(10**11) and q.clipped


@pytest.mark.parametrize(
    ("reading", "now", "match"),
    [
        (ReferenceReading(1, 100), 99, "future"),
        (ReferenceReading(1, 0), 99, "never been updated"),
        (ReferenceReading(200_000_000, 10), 99, "implausible"),
    ],
)
def test_reference_model__refuses_bad_readings(reading, now, match) -> None:
    with pytest.raises(ValueError, match=match):
        ReferenceFundingModel().quote(reading, now, DEVNET_BOUND)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_config__builds_each_mode() -> None:
    assert funding_model_from_config(None, "m") is None
    assert funding_model_from_config({"mode": "zero"}, "m") is None
    p = funding_model_from_config(
        {"mode": "premium", "window_hours": 4, "min_window_notional_usd": 5, "interest_8h": "0"},
        "m",
    )
    assert isinstance(p, PremiumFundingModel)
    assert (p.window_s, p.min_window_notional, p.interest_8h) == (4 * H, 5 * WAD, 0)
    r = funding_model_from_config({"mode": "reference", "feed": "0xabc", "max_age_hours": 2}, "m")
    assert isinstance(r, ReferenceFundingModel) and r.max_age_s == 2 * H


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"mode": "premum"}, r"markets\[0\].funding.mode: expected premium, reference or zero"),
        ({"windw_hours": 8}, r"unknown key\(s\) windw_hours"),
        ({"interest_8h": "abc"}, r"interest_8h: not a number"),
        ({"interest_8h": "nan"}, r"interest_8h: not finite"),
        ({"window_hours": "8"}, r"window_hours: expected a number of hours"),
        ({"min_window_notional_usd": -1}, r"min_window_notional_usd: expected USD >= 0"),
        ({"mode": "reference"}, r"feed: required"),
        ({"mode": "reference", "feed": "0x1", "window_hours": 8}, "premium keys"),
        ({"mode": "premium", "feed": "0x1"}, "belong to mode: reference"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_config__one_line_error_naming_the_key(section, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        funding_model_from_config(section, "markets[0].funding")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("current", "proposed", "expected"),
    [
        (17_361_111_111, 17_361_111_111, False),
        (17_361_111_111, 16_000_000_000, False),  # -8%: inside 10%
        (17_361_111_111, 15_000_000_000, True),  # -14%
        (1_000_000_000, 1_200_000_000, False),  # +20% but below 0.001% per 8 hours
        (INTEREST_PER_S, -INTEREST_PER_S, True),  # the other side pays now
        (0, 1, True),
        (-(10**10), 0, True),
        (-5, 0, False),
    ],
)
def test_funding_needs_push__relative_and_absolute_band(current, proposed, expected) -> None:
    assert funding.funding_needs_push(current, proposed) is expected
