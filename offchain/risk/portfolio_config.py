"""The portfolio margin's frozen parameters: K, residual, floor, initial ratio and guardrails.

Chosen on data up to 2021-12-31 by the rule of :mod:`offchain.risk.portfolio_calibration`
(run it with ``dmm backtest-portfolio --calibrate``) and frozen here; 2022-2023 is reported with
them untouched. They belong in the shipped risk configuration file (a ``portfolio:`` section
beside the single-market model's) once it exists; until then this module is their one source,
read by the backtest, the keeper's reference books and the deployment.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from offchain import WAD
from offchain.protocol.portfolio_math import (
    INT16_MAX,
    MAX_SCENARIOS,
    GroupParams,
    ShockGuardrails,
)
from offchain.risk.scenarios import ScenarioDesign

CALIBRATION_END = 1_640_995_200  # 2022-01-01 00:00 UTC: later hours are the report period


def market_name(symbol: str) -> str:
    """``"BTC"`` from ``"BTC/USDT"``, ``"binance_btcusdt_1h_2018_2023"`` or ``"btc"``."""
    s = symbol.strip()
    m = re.search(r"(?:^|[_/\-\s])([A-Za-z0-9]+?)[_/\-]?(?:USDT|USDC|USD)(?:$|[_/\-\s])", s, re.I)
    if m is None:
        m = re.search(r"^([A-Za-z0-9]+?)[_/\-]?(?:USDT|USDC|USD)", s, re.I)
    return (m.group(1) if m else s).upper()


@dataclass(frozen=True)
class PortfolioConfig:
    """Everything the portfolio margin needs besides the single-market model.

    Parameters
    ----------
    n_scenarios
        ``K``, the number of joint shocks signed per group (a prefix of the scenario order of
        :mod:`offchain.risk.scenarios`).
    residual, floor
        ``c`` and ``phi`` of the formula, fractions of the tiered sum.
    initial_ratio
        ``r_g``: initial = ``r_g`` x the portfolio requirement (the markets' own ratio).
    max_shock_bps
        Governance bound on ``|shock|`` per market (bps), by market name; ``default_max_shock_bps``
        for a market not listed.
    max_step_bps
        Largest change of one shock in one update (bps), every market.
    heartbeat
        Seconds after which the group's scenarios are stale (no portfolio credit).
    """

    n_scenarios: int
    residual: float
    floor: float
    initial_ratio: float
    max_shock_bps: tuple[tuple[str, int], ...]
    default_max_shock_bps: int
    max_step_bps: int
    heartbeat: int = 7200
    confidence: float = 0.99
    horizon: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.n_scenarios <= MAX_SCENARIOS:
            raise ValueError(f"n_scenarios must lie in [2, 16], got {self.n_scenarios}")
        if not 0 <= self.residual <= 1 or not 0 <= self.floor <= 1:
            raise ValueError(
                f"residual and floor must lie in [0, 1], got {self.residual}, {self.floor}"
            )
        if self.initial_ratio < 1:
            raise ValueError(f"initial_ratio must be at least 1, got {self.initial_ratio}")
        for name, bound in (*self.max_shock_bps, ("default", self.default_max_shock_bps)):
            if not 0 < bound <= INT16_MAX:
                raise ValueError(f"max shock of {name} must lie in (0, {INT16_MAX}], got {bound}")
        if self.max_step_bps <= 0 or self.heartbeat <= 0:
            raise ValueError("max_step_bps and heartbeat must be positive")

    def design(self, n_scenarios: int | None = None) -> ScenarioDesign:
        """The scenario design with this ``K`` (or another one, for the calibration grid)."""
        k = self.n_scenarios if n_scenarios is None else n_scenarios
        return ScenarioDesign(n_scenarios=k, confidence=self.confidence, horizon=self.horizon)

    def bound_of(self, market: str) -> int:
        """The shock bound of a market, by name (see :func:`market_name`)."""
        return dict(self.max_shock_bps).get(market_name(market), self.default_max_shock_bps)

    def guardrails(self, markets: Sequence[str]) -> ShockGuardrails:
        """The on-chain guardrails of a group of ``markets``."""
        return ShockGuardrails(
            max_shock=tuple(self.bound_of(m) for m in markets),
            max_step=tuple(self.max_step_bps for _ in markets),
            heartbeat=self.heartbeat,
        )

    def group_params(self) -> GroupParams:
        """``c``, ``phi`` and ``r_g`` in WAD, as the chain stores them (exact decimals)."""

        def wad(x: float) -> int:
            return int(Fraction(str(x)) * WAD)

        return GroupParams(
            residual=wad(self.residual),
            floor=wad(self.floor),
            initial_ratio=wad(self.initial_ratio),
        )


# Frozen by the rule of offchain.risk.portfolio_calibration on data up to 2021-12-31; to move to
# the shipped risk configuration file's `portfolio:` section. Do not edit by hand: rerun the rule.
FROZEN_PORTFOLIO = PortfolioConfig(
    n_scenarios=10,
    residual=0.1,
    floor=0.05,
    initial_ratio=2.0,
    max_shock_bps=(("BTC", 6500), ("ETH", 6500), ("SOL", 8000)),
    default_max_shock_bps=8000,
    max_step_bps=5700,
)

__all__ = ["CALIBRATION_END", "FROZEN_PORTFOLIO", "PortfolioConfig", "market_name"]
