"""Reference books for the keeper's dry run: the chain's requirements to the wei."""

from __future__ import annotations

import pytest

from offchain import WAD
from offchain.protocol.margin_math import Tier, initial_margin, maintenance_margin
from offchain.protocol.portfolio_math import GroupParams, PortfolioPosition, portfolio_margin
from offchain.risk.reference_books import (
    MarketTerms,
    format_reference,
    reference_books,
    reference_margins,
)

PRICES = [40_000 * WAD, 2_000 * WAD, 100 * WAD]
TIERS = (Tier(0, 5 * 10**15), Tier(1_000_000 * WAD, 10**16))
TERMS = [MarketTerms(TIERS, 2 * WAD, 2 * WAD, 2 * WAD) for _ in PRICES]
PARAMS = GroupParams(residual=WAD // 20, floor=WAD // 5, initial_ratio=2 * WAD)
# BTC, ETH, SOL: a joint fall and its mirror, then ETH alone
SHOCKS = [[-300, 300, 0], [-400, 400, -500], [-600, 600, 0]]


def test_reference_books__sizes_at_the_gross_notional():
    books = {b.name: b for b in reference_books(PRICES)}
    assert books["outright"].sizes == (25 * WAD, 0, 0)  # 1,000,000 USD of BTC at 40,000
    assert books["hedged_pair"].sizes == (int(12.5 * WAD), -250 * WAD, 0)
    rand = books["random"].sizes
    gross = sum(abs(s) * p // WAD for s, p in zip(rand, PRICES, strict=True))
    assert 0 <= 1_000_000 * WAD - gross <= 3  # sizes round toward zero, a wei per market
    with pytest.raises(ValueError, match="at least two markets"):
        reference_books(PRICES[:1])


def test_reference_margins__outright_keeps_the_tiered_sum_and_the_pair_gets_credit():
    books = reference_books(PRICES)
    out = {r.name: r for r in reference_margins(books, PRICES, SHOCKS, TERMS, PARAMS)}
    outright = out["outright"]
    assert not outright.eligible
    # 1,000,000 USD at 0.5% x 2: 10,000; initial 2x
    assert outright.maintenance == outright.tiered_maintenance == 10_000 * WAD
    assert outright.initial == 20_000 * WAD
    pair = out["hedged_pair"]
    assert pair.eligible
    # joint fall: BTC -15,000, the ETH short +20,000 (a gain); its mirror loses 5,000; ETH
    # alone -5% is a gain of 25,000 for the short. T = 2 x 500,000 x 0.5% x 2 = 10,000
    btc = PortfolioPosition(
        int(12.5 * WAD),
        PRICES[0],
        maintenance_margin(TIERS, 2 * WAD, 500_000 * WAD),
        initial_margin(TIERS, 2 * WAD, 2 * WAD, 2 * WAD, 500_000 * WAD),
        SHOCKS[0],
    )
    eth = PortfolioPosition(
        -250 * WAD,
        PRICES[1],
        maintenance_margin(TIERS, 2 * WAD, 500_000 * WAD),
        initial_margin(TIERS, 2 * WAD, 2 * WAD, 2 * WAD, 500_000 * WAD),
        SHOCKS[1],
    )
    exact = portfolio_margin([btc, eth], 3, PARAMS)
    assert (pair.maintenance, pair.initial) == (exact.maintenance, exact.initial)
    assert pair.worst_loss == 5_000 * WAD
    assert pair.maintenance == 5_000 * WAD + 500 * WAD  # max(L + 5% of T, 20% of T)
    assert pair.saving == pytest.approx(0.45)
    # stale scenarios: no credit
    stale = {
        r.name: r for r in reference_margins(books, PRICES, SHOCKS, TERMS, PARAMS, fresh=False)
    }
    assert stale["hedged_pair"].maintenance == stale["hedged_pair"].tiered_maintenance
    table = format_reference(list(out.values()))
    assert "hedged_pair" in table and "(tiered: not eligible)" in table
