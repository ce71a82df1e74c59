"""The devnet file (``deploy/devnet.yaml``): node, accounts, the system to deploy, what to fund.

Read as strictly as every other configuration (``offchain.protocol.config_files``). ``system`` is
a deployment file (the keys of ``deploy/testnet.example.yaml``, with ``mock_collateral`` and
``engine.mock_feed`` for the devnet's token and feeds) and goes through the same checks as a
real deployment. Accounts are indices into the devnet mnemonic, the one anvil and ape's test
accounts share (``test test ... junk``); their keys are public, for a devnet only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt

from offchain.protocol.config_files import ConfigFileError, StrictModel, load_yaml, validate
from offchain.protocol.deploy_config import DeploySpec, parse_deploy_spec

Port = Annotated[StrictInt, Field(ge=1, le=65535)]
AccountIndex = Annotated[StrictInt, Field(ge=0, le=9)]  # anvil funds ten accounts
Positive = Annotated[float, Field(gt=0)]


class DevnetConfigError(ConfigFileError):
    """The devnet file cannot be used; one line naming the key."""


class NodeSection(StrictModel):
    port: Port = 8545
    block_time: Annotated[StrictInt, Field(ge=1)] = 1  # seconds, once the system is deployed


class AccountsSection(StrictModel):
    owner: AccountIndex = 0  # deploys, owns, stands in for the exchange, relays replays
    keeper: AccountIndex = 1
    liquidator: AccountIndex = 2
    maker: AccountIndex = 3  # the other side of every demo position


class FundingSection(StrictModel):
    liquidator_usd: Positive = 250_000.0
    liquidator_subaccount: Annotated[StrictInt, Field(ge=0)] = 1
    maker_usd: Positive = 5_000_000.0
    insurance_fund_usd: Annotated[float, Field(ge=0)] = 2_000.0


class PositionEntry(StrictModel):
    trader: AccountIndex
    subaccount: Annotated[StrictInt, Field(ge=0)] = 0
    market: Annotated[StrictInt, Field(ge=1)]
    side: Literal["long", "short"]
    leverage: Positive  # notional / collateral at the open
    collateral_usd: Positive
    isolated: StrictBool = False


class HistorySection(StrictModel):
    hours: Annotated[StrictInt, Field(ge=2)] = 721
    hourly_vol: Positive = 0.004
    seed: StrictInt = 7


class BotsSection(StrictModel):
    keeper_metrics_port: Port = 9101
    liquidator_metrics_port: Port = 9102
    dashboard_port: Port = 9103  # `dmm dashboard --config <out>/bots.yaml`
    model: Literal["calibrated", "ewma"] = "calibrated"


class CrashSection(StrictModel):
    calm_steps: Annotated[StrictInt, Field(ge=0)] = 2
    crash_pct: Annotated[float, Field(gt=0, lt=1)] = 0.3
    crash_steps: Annotated[StrictInt, Field(ge=1)] = 6
    rebound_pct: Annotated[float, Field(ge=0)] = 0.05
    rebound_steps: Annotated[StrictInt, Field(ge=0)] = 2
    step_seconds: Annotated[StrictInt, Field(ge=0)] = 3600  # chain time per step: one hour
    interval: Annotated[float, Field(ge=0)] = 1.0  # wall-clock seconds between steps
    seed: StrictInt = 7


class DevnetFile(StrictModel):
    node: NodeSection = Field(default_factory=NodeSection)
    accounts: AccountsSection = Field(default_factory=AccountsSection)
    funding: FundingSection = Field(default_factory=FundingSection)
    positions: list[PositionEntry] = Field(default_factory=list)
    history: HistorySection = Field(default_factory=HistorySection)
    bots: BotsSection = Field(default_factory=BotsSection)
    crash: CrashSection = Field(default_factory=CrashSection)
    system: dict[str, Any]


@dataclass(frozen=True)
class Devnet:
    """A checked devnet file: its sections and the deployment it describes."""

    file: DevnetFile
    spec: DeploySpec
    source: str

    @property
    def chain_id(self) -> int:
        return int(self.spec.chain_id or 31337)


def check_devnet(f: DevnetFile, spec: DeploySpec, source: str, addresses: list[str]) -> None:
    """Cross-checks between sections (``addresses``: the devnet accounts' addresses)."""

    def fail(message: str) -> None:
        raise DevnetConfigError(f"{source}: {message}")

    if f.bots.keeper_metrics_port == f.bots.liquidator_metrics_port:
        fail("bots: keeper_metrics_port and liquidator_metrics_port must differ")
    if f.bots.dashboard_port in (f.bots.keeper_metrics_port, f.bots.liquidator_metrics_port):
        fail(f"bots.dashboard_port: {f.bots.dashboard_port} is also a metrics port")
    if f.node.port in (
        f.bots.keeper_metrics_port,
        f.bots.liquidator_metrics_port,
        f.bots.dashboard_port,
    ):
        fail(f"node.port: {f.node.port} is also a metrics or dashboard port")
    keeper = addresses[f.accounts.keeper].lower()
    if keeper not in (k.lower() for k in spec.keepers):
        fail(
            f"system.keepers: the keeper account ({addresses[f.accounts.keeper]}, index"
            f" {f.accounts.keeper}) is not listed"
        )
    owner = addresses[f.accounts.owner].lower()
    if f.positions and owner not in (x.lower() for x in spec.exchanges):
        fail(
            f"system.exchanges: the owner account ({addresses[f.accounts.owner]}) must be an"
            " exchange to open the demo positions"
        )
    markets = {m.market_id: m for m in spec.markets}
    roles = {f.accounts.maker, f.accounts.liquidator}
    for i, p in enumerate(f.positions):
        if p.market not in markets:
            fail(f"positions[{i}].market: {p.market} is not a market of the system")
        if p.trader in roles:
            fail(f"positions[{i}].trader: account {p.trader} is the maker or the liquidator")
        if markets[p.market].mock_feed is None:
            fail(f"positions[{i}].market: the devnet opens positions on mock feeds only")


def load_devnet(path: Path, addresses: list[str]) -> Devnet:
    """Read and check the devnet file at ``path``."""
    try:
        raw = load_yaml(path, "devnet file")
        f = validate(DevnetFile, raw, str(path))
        spec = parse_deploy_spec(f.system, f"{path}: system", path.resolve().parent)
    except ConfigFileError as exc:
        raise DevnetConfigError(str(exc)) from None
    check_devnet(f, spec, str(path), addresses)
    return Devnet(f, spec, str(path))


__all__ = ["Devnet", "DevnetConfigError", "DevnetFile", "check_devnet", "load_devnet"]
