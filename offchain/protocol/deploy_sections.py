"""The deployment file's sections for the other margin inputs: scenario groups and account classes.

``deploy/testnet.example.yaml`` (and the ``system:`` part of ``deploy/devnet.yaml``) configure,
beside the markets:

- ``scenario_groups``: each a ``ScenarioRegistry.configure_group`` (markets by id, in the order of
  the group's shock words; a shock bound and a step limit per market in basis points; the
  heartbeat; ``residual``, ``floor`` and ``initial_ratio`` as decimals);
- ``profiles``: the ``ProfileRegistry``'s heartbeat (a constructor argument), its class bounds
  (``set_class_bounds``) and each class (``define_class``: multiplier and the on-chain
  eligibility minimums, in USD);
- per market ``engine.funding_reserve_seconds`` (``MarginEngine.set_funding_reserve``).

Each is checked here against the bounds the contracts enforce, so that a dry run refuses what
would revert. The values come from the shipped risk configuration (``deploy/risk.yaml``);
``tests/risk/test_risk_config.py`` fails when a deployment file carries others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, StrictInt, model_validator

from offchain import WAD
from offchain.protocol.config_files import ConfigFileError, StrictModel
from offchain.protocol.units import Wad

# ScenarioRegistry.vy and ProfileRegistry.vy bounds.
MAX_GROUP_ID = 255
MAX_GROUP_MARKETS = 8
MAX_SHOCK_BPS = 2**15 - 1
MAX_GROUP_RATIO = 2**64 - 1
MAX_DURATION = 2**32 - 1
MAX_CLASS_ID = 7
CLASS_MIN_BOUNDS = (WAD // 2, WAD)  # the registry's min multiplier lies in [0.5x, 1x]
CLASS_MAX_BOUNDS = (WAD, 4 * WAD)  # its max multiplier in [1x, 4x]
MAX_FUNDING_RESERVE_S = 86_400  # EngineGovernance.set_funding_reserve: at most one day

Bps = Annotated[StrictInt, Field(ge=1, le=MAX_SHOCK_BPS)]
Step = Annotated[StrictInt, Field(ge=1, le=2 * MAX_SHOCK_BPS)]
Duration = Annotated[StrictInt, Field(ge=1, le=MAX_DURATION)]
Usd = Annotated[StrictInt, Field(ge=0)]


class SectionError(ConfigFileError):
    """A scenario group or profile section the registries would refuse."""


class GroupFile(StrictModel):
    id: Annotated[StrictInt, Field(ge=1, le=MAX_GROUP_ID)]
    markets: Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(min_length=2, max_length=8)]
    max_shock_bps: list[Bps]
    max_step_bps: list[Step]
    heartbeat: Duration
    residual: Wad
    floor: Wad
    initial_ratio: Wad

    @model_validator(mode="after")
    def _one_bound_per_market(self) -> GroupFile:
        n = len(self.markets)
        if len(self.max_shock_bps) != n or len(self.max_step_bps) != n:
            raise ValueError("one max_shock_bps and one max_step_bps per market")
        if len(set(self.markets)) != n:
            raise ValueError(f"a market is listed twice ({self.markets})")
        if self.residual > WAD or self.floor > WAD:
            raise ValueError("residual and floor are at most 1")
        if not WAD <= self.initial_ratio <= MAX_GROUP_RATIO:
            raise ValueError("initial_ratio must lie in [1, 18.4]")
        return self


class ClassFile(StrictModel):
    id: Annotated[StrictInt, Field(ge=1, le=MAX_CLASS_ID)]
    multiplier: Wad
    min_volume_usd: Usd = 0
    min_equity_usd: Usd = 0


class ProfilesFile(StrictModel):
    heartbeat: Duration
    min_multiplier: Wad
    max_multiplier: Wad
    classes: Annotated[list[ClassFile], Field(max_length=MAX_CLASS_ID)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _bounds(self) -> ProfilesFile:
        if not CLASS_MIN_BOUNDS[0] <= self.min_multiplier <= CLASS_MIN_BOUNDS[1]:
            raise ValueError("min_multiplier must lie in [0.5, 1]")
        if not CLASS_MAX_BOUNDS[0] <= self.max_multiplier <= CLASS_MAX_BOUNDS[1]:
            raise ValueError("max_multiplier must lie in [1, 4]")
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a class id is defined twice ({ids})")
        for c in self.classes:
            if not self.min_multiplier <= c.multiplier <= self.max_multiplier:
                raise ValueError(
                    f"class {c.id}: multiplier {c.multiplier / WAD:g} outside"
                    f" [{self.min_multiplier / WAD:g}, {self.max_multiplier / WAD:g}]"
                )
        return self


@dataclass(frozen=True)
class GroupSpec:
    """One ``configure_group`` call (the contract's ``GroupConfig``)."""

    group_id: int
    markets: tuple[int, ...]
    max_shocks: tuple[int, ...]
    max_steps: tuple[int, ...]
    heartbeat: int
    residual: int
    floor: int
    initial_ratio: int

    def as_tuple(self) -> tuple:
        """The contract's ``GroupConfig`` struct, in field order."""
        return (
            list(self.markets),
            list(self.max_shocks),
            list(self.max_steps),
            self.heartbeat,
            self.residual,
            self.floor,
            self.initial_ratio,
        )


@dataclass(frozen=True)
class ClassSpec:
    """One ``define_class`` call: ``AccountClass(multiplier, min_volume, min_equity)`` (WAD)."""

    class_id: int
    multiplier: int
    min_volume: int = 0
    min_equity: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.multiplier, self.min_volume, self.min_equity)


@dataclass(frozen=True)
class ProfilesSpec:
    """The profile registry's heartbeat, class bounds and classes."""

    heartbeat: int
    min_multiplier: int
    max_multiplier: int
    classes: tuple[ClassSpec, ...] = ()


def group_spec(g: GroupFile) -> GroupSpec:
    return GroupSpec(
        g.id,
        tuple(g.markets),
        tuple(g.max_shock_bps),
        tuple(g.max_step_bps),
        g.heartbeat,
        g.residual,
        g.floor,
        g.initial_ratio,
    )


def profiles_spec(p: ProfilesFile) -> ProfilesSpec:
    return ProfilesSpec(
        p.heartbeat,
        p.min_multiplier,
        p.max_multiplier,
        tuple(
            ClassSpec(c.id, c.multiplier, c.min_volume_usd * WAD, c.min_equity_usd * WAD)
            for c in p.classes
        ),
    )


def check_groups(groups: Sequence[GroupSpec], market_ids: Sequence[int]) -> None:
    """Every group's markets are deployed; a market and a group id appear once."""
    ids = [g.group_id for g in groups]
    if len(set(ids)) != len(ids):
        raise SectionError(f"scenario_groups: a group id appears twice ({ids})")
    seen: dict[int, int] = {}
    for i, g in enumerate(groups):
        for m in g.markets:
            if m not in market_ids:
                raise SectionError(
                    f"scenario_groups[{i}].markets: market {m} is not one of the file's markets"
                    f" {list(market_ids)}"
                )
            if m in seen:
                raise SectionError(
                    f"scenario_groups[{i}].markets: market {m} is already in group {seen[m]}"
                )
            seen[m] = g.group_id


def check_funding_reserve(seconds: int, where: str) -> None:
    if not 0 <= seconds <= MAX_FUNDING_RESERVE_S:
        raise SectionError(f"{where}: {seconds} s; the engine allows at most one day")


__all__ = [
    "MAX_FUNDING_RESERVE_S",
    "ClassFile",
    "ClassSpec",
    "GroupFile",
    "GroupSpec",
    "ProfilesFile",
    "ProfilesSpec",
    "SectionError",
    "check_funding_reserve",
    "check_groups",
    "group_spec",
    "profiles_spec",
]
