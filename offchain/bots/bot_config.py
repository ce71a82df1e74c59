"""The bots' configuration file (``offchain/bots/keeper.example.yaml``), as a strict schema.

One file configures the keeper and the liquidation bot. It is read with
``offchain.protocol.config_files`` (text, finite, no key twice) and validated here: every key
known, every type exact (``"false"`` is not a boolean, ``abc`` not a number), each mistake one
line naming the key path (``keeper.hysteresis: ...``, ``markets[0].id: required``).

The sections that configure a component (``keeper``, ``liquidator``, ``sender``, ``loop``, the
``ewma`` model) are generated from that component's dataclass, so a setting added to
``KeeperConfig`` is accepted here at once, with its type and default; the dataclass's own checks
(``__post_init__``) run too and their message is reported under the section's name. The few keys
that are not dataclass fields (ports, pre-flight thresholds, gwei aliases) are declared below.

Decisions other modules rely on:

- ``keeper.metrics_port`` and ``liquidator.metrics_port`` (two bots, two ports; a top-level
  ``metrics_port`` is refused with that hint, and equal ports are refused);
- ``markets[].history`` is a CSV path relative to the config file's folder;
- ``keeper.history_max_gap_seconds`` / ``keeper.history_max_price_gap`` / ``keeper.history_check``
  (``refuse`` or ``warn``): how near the live feed the warm-up history must end;
- ``loop.outage_tolerance_seconds``: how long the node may stay unreachable before a bot stops;
- ``markets[].funding`` (``mode: premium | reference | zero`` and the model's keys,
  :func:`offchain.risk.funding.funding_model_from_config`); without it a market signs 0;
- ``scenarios`` (the ``ScenarioRegistry``'s address, the groups, the refresh fraction),
  ``profiles`` (the ``ProfileRegistry``'s address, the run interval, the class table's scale)
  and ``relay`` (the ``KeeperRelay``): all optional; premium funding and profiles need
  ``engine``, the relay needs ``scenarios``.
- ``dashboard.*``: the risk page of ``dmm dashboard`` (its port must differ from the bots').
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, create_model, model_validator

from offchain.bots.dashboard import DashboardConfig
from offchain.bots.keeper import KeeperConfig, KeeperMarket
from offchain.bots.keeper_models import EwmaRiskModel
from offchain.bots.liquidator import LiquidatorConfig
from offchain.bots.loop import LoopConfig
from offchain.protocol.config_files import ConfigFileError, StrictModel, load_yaml, validate
from offchain.protocol.deploy_config import NonzeroAddress
from offchain.protocol.tx_sender import GWEI, SenderConfig

Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class ConfigError(ConfigFileError):
    """A bot configuration that cannot be used; the message names the file and the key."""


def dataclass_section(
    cls: type, name: str, exclude: tuple[str, ...] = (), **extra: Any
) -> type[StrictModel]:
    """A strict model with the fields (types, defaults) of dataclass ``cls`` plus ``extra``."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    fields.update(extra)
    return create_model(name, __base__=StrictModel, **fields)


def build(cls: type, values: dict[str, Any], where: str, **more: Any) -> Any:
    """``cls(**values, **more)``; its own ``ValueError`` reported under ``where``."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in values.items() if k in names}, **more)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


Hours = Annotated[float, Field(ge=0)]


class FundingEntry(StrictModel):
    """A market's funding source (``offchain/risk/funding.py``); keys by mode."""

    mode: Literal["premium", "reference", "zero"] = "premium"
    window_hours: Hours | None = None  # premium
    min_window_notional_usd: Annotated[float, Field(ge=0)] | None = None  # premium
    interest_8h: float | str | None = None  # premium: "0.0001" is 0.01% per 8 hours
    interest_clamp_8h: float | str | None = None  # premium
    decay_hours: Hours | None = None
    feed: NonzeroAddress | None = None  # reference: the venue's published 8-hour rate
    max_age_hours: Hours | None = None  # reference

    def section(self) -> dict[str, Any]:
        """The keys given, as ``funding_model_from_config`` reads them."""
        return self.model_dump(exclude_none=True)


class MarketEntry(StrictModel):
    id: Annotated[StrictInt, Field(ge=1, le=2**32 - 1)]
    feed: NonzeroAddress
    name: str = ""
    history: str | None = None  # CSV of past prices, relative to the config file's folder
    funding: FundingEntry | None = None  # None: the keeper signs a funding rate of 0

    @model_validator(mode="after")
    def _funding_keys(self) -> MarketEntry:
        if self.funding is not None:
            from offchain.risk.funding import funding_model_from_config

            funding_model_from_config(self.funding.section(), "funding")
        return self


class ScenariosSection(StrictModel):
    """Scenario updates (``offchain/bots/keeper_scenarios.py``)."""

    registry: NonzeroAddress  # the ScenarioRegistry
    groups: list[Annotated[StrictInt, Field(ge=1, le=255)]] | None = None  # default: discovered
    refresh_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5


class ProfilesSection(StrictModel):
    """Account classes (``offchain/bots/keeper_profiles.py``)."""

    registry: NonzeroAddress  # the ProfileRegistry
    scale: str = "testnet"  # the eligibility table of deploy/risk.yaml's profiles section
    interval_seconds: Annotated[StrictInt, Field(gt=0)] = 3600
    refresh_seconds: Annotated[StrictInt, Field(ge=0)] = 86_400
    start_block: Annotated[StrictInt, Field(ge=0)] = 0


KeeperSection = dataclass_section(
    KeeperConfig,
    "KeeperSection",
    exclude=("markets",),
    metrics_port=(Port | None, None),
    history_max_gap_seconds=(Annotated[StrictInt, Field(gt=0)], 3 * 3600),
    history_max_price_gap=(Annotated[float, Field(gt=0)], 0.2),
    history_check=(Literal["refuse", "warn"], "refuse"),
)
LiquidatorSection = dataclass_section(
    LiquidatorConfig,
    "LiquidatorSection",
    exclude=("liquidator_subaccount",),
    subaccount=(Annotated[StrictInt, Field(ge=0)], LiquidatorConfig.liquidator_subaccount),
    metrics_port=(Port | None, None),
)
SenderSection = dataclass_section(
    SenderConfig,
    "SenderSection",
    priority_fee_gwei=(Annotated[float, Field(ge=0)] | None, None),
    max_fee_cap_gwei=(Annotated[float, Field(gt=0)] | None, None),
)
LoopSection = dataclass_section(LoopConfig, "LoopSection")
DashboardSection = dataclass_section(DashboardConfig, "DashboardSection")
EwmaSection = dataclass_section(EwmaRiskModel, "EwmaSection", kind=(Literal["ewma"], "ewma"))


class CalibratedSection(StrictModel):
    """The shipped margin model (``deploy/risk.yaml`` unless ``config`` names another file)."""

    kind: Literal["calibrated"] = "calibrated"
    bar_seconds: Annotated[StrictInt, Field(gt=0)] = 3600
    config: str | None = None  # risk configuration file, relative to this file
    store: str | None = None  # SQLite file of finished bars, kept across restarts
    vol_index_feeds: dict[StrictInt, NonzeroAddress] | None = None


class BotFile(StrictModel):
    """The whole file; see ``offchain/bots/keeper.example.yaml``."""

    rpc: str | None = None
    rpc_timeout: Annotated[float, Field(gt=0)] = 10.0
    registry: NonzeroAddress | None = None
    engine: NonzeroAddress | None = None
    markets: list[MarketEntry] = Field(default_factory=list)
    keeper: KeeperSection = Field(default_factory=KeeperSection)  # type: ignore[valid-type]
    model: CalibratedSection | EwmaSection = Field(  # type: ignore[valid-type]
        default_factory=CalibratedSection, discriminator="kind"
    )
    liquidator: LiquidatorSection = Field(default_factory=LiquidatorSection)  # type: ignore[valid-type]
    sender: SenderSection = Field(default_factory=SenderSection)  # type: ignore[valid-type]
    loop: LoopSection = Field(default_factory=LoopSection)  # type: ignore[valid-type]
    scenarios: ScenariosSection | None = None
    profiles: ProfilesSection | None = None
    relay: NonzeroAddress | None = None  # the KeeperRelay: risk + scenario batches in one tx
    dashboard: DashboardSection = Field(default_factory=DashboardSection)  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _hints(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "metrics_port" in data:
                raise ValueError(
                    "metrics_port: set keeper.metrics_port and liquidator.metrics_port instead"
                    " (two bots cannot listen on one port)"
                )
            model = data.get("model")
            if isinstance(model, dict) and "kind" not in model:
                data = {**data, "model": {**model, "kind": "calibrated"}}
        return data

    @model_validator(mode="after")
    def _ports_and_markets(self) -> BotFile:
        ports = (self.keeper.metrics_port, self.liquidator.metrics_port)
        if ports[0] is not None and ports[0] == ports[1]:
            raise ValueError(
                f"keeper.metrics_port and liquidator.metrics_port are both {ports[0]}:"
                " the second bot would fail with 'Address already in use'"
            )
        for bot, port in zip(("keeper", "liquidator"), ports, strict=True):
            if port is not None and port == self.dashboard.port:
                raise ValueError(
                    f"dashboard.port and {bot}.metrics_port are both {port}:"
                    " one of them would fail with 'Address already in use'"
                )
        ids = [m.id for m in self.markets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"markets: an id appears twice ({ids})")
        if self.rpc is not None and not self.rpc.startswith(("http://", "https://")):
            raise ValueError(f"rpc: {self.rpc!r} is not an http(s) URL")
        premium = [
            i for i, m in enumerate(self.markets) if m.funding and m.funding.mode == "premium"
        ]
        if premium and self.engine is None:
            raise ValueError(
                f"markets[{premium[0]}].funding: premium mode reads the engine's fills: set"
                " 'engine' (or mode: reference / zero)"
            )
        if self.profiles is not None and self.engine is None:
            raise ValueError("profiles: account records are the engine's: set 'engine'")
        if self.relay is not None and self.scenarios is None:
            raise ValueError(
                "relay: the relay lands risk and scenario batches together: set 'scenarios'"
                " too (or remove 'relay')"
            )
        return self


@dataclasses.dataclass(frozen=True)
class BotConfig:
    """A validated bot file and where it came from (relative paths are resolved against it)."""

    file: BotFile
    source: str = "config"
    folder: Path = Path(".")

    def path(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.folder / p

    def markets(self) -> tuple[KeeperMarket, ...]:
        if not self.file.markets:
            raise ConfigError(f"{self.source}: markets: the keeper needs at least one market")
        return tuple(KeeperMarket(m.id, m.feed, m.name) for m in self.file.markets)

    def keeper_config(self) -> KeeperConfig:
        return build(
            KeeperConfig,
            {**self.file.keeper.model_dump(), "cosign": self.file.keeper.cosign},
            f"{self.source}: keeper",
            markets=self.markets(),
        )

    def liquidator_config(self) -> LiquidatorConfig:
        values = self.file.liquidator.model_dump()
        return build(
            LiquidatorConfig,
            values,
            f"{self.source}: liquidator",
            liquidator_subaccount=values["subaccount"],
        )

    def sender_config(self) -> SenderConfig:
        values = self.file.sender.model_dump()
        for gwei_key, key in (
            ("priority_fee_gwei", "priority_fee"),
            ("max_fee_cap_gwei", "max_fee_cap"),
        ):
            if values.get(gwei_key) is not None:
                if key in self.file.sender.model_fields_set:
                    raise ConfigError(f"{self.source}: sender: give {key} or {gwei_key}, not both")
                values[key] = int(values[gwei_key] * GWEI)
        return build(SenderConfig, values, f"{self.source}: sender")

    def loop_config(self) -> LoopConfig:
        return build(LoopConfig, self.file.loop.model_dump(), f"{self.source}: loop")

    def dashboard_config(self) -> DashboardConfig:
        return build(DashboardConfig, self.file.dashboard.model_dump(), f"{self.source}: dashboard")

    def metrics_port(self, bot: str) -> int | None:
        return (
            self.file.keeper.metrics_port if bot == "keeper" else self.file.liquidator.metrics_port
        )


@cache
def _empty() -> BotConfig:
    return BotConfig(BotFile())


def parse_config(raw: Any, source: str = "config", folder: Path = Path(".")) -> BotConfig:
    """A validated :class:`BotConfig` from parsed YAML."""
    try:
        return BotConfig(validate(BotFile, raw, source), source, folder)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path | None) -> BotConfig:
    """The bot file at ``path`` (defaults only without one); one-line :class:`ConfigError`."""
    if path is None:
        return _empty()
    try:
        raw = load_yaml(path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(raw, str(path), Path(path).resolve().parent)


__all__ = [
    "BotConfig",
    "BotFile",
    "ConfigError",
    "FundingEntry",
    "ProfilesSection",
    "ScenariosSection",
    "load_config",
    "parse_config",
]
