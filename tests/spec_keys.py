"""Names fixed by SPEC.md, written out here independently of the code that produces them."""

# "Backtest output": the figures of every model and baseline.
BACKTEST_MODEL_KEYS = frozenset(
    {
        "breach_rate_long",
        "breach_rate_short",
        "kupiec_p_long",
        "kupiec_p_short",
        "christoffersen_p_long",
        "christoffersen_p_short",
        "avg_margin_rate",
        "peak_margin_rate",
        "total_shortfall",
        "max_daily_margin_increase",
    }
)

# "Portfolio backtest output": the top level and the figures of every family.
PORTFOLIO_TOP_KEYS = frozenset({"markets", "hours", "confidence", "horizon_hours", "families"})
PORTFOLIO_FAMILY_KEYS = frozenset(
    {
        "breach_rate",
        "kupiec_p",
        "christoffersen_p",
        "avg_margin_saving_vs_tiered",
        "total_shortfall",
        "tiered_total_shortfall",
    }
)
