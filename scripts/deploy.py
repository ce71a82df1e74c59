"""Deploy and configure Dynamic Margin from a reviewed YAML file, resumably.

    ape run deploy --config deploy/mynet.yaml --network ethereum:sepolia:node --dry-run
    ape run deploy --config deploy/mynet.yaml --network ethereum:sepolia:node --account ALIAS

Everything is checked before the first transaction: the file against every bound the contracts
enforce (``offchain/protocol/deploy_config.py``), then against the network (pinned chain id, code
at the collateral and feed addresses). ``--dry-run`` does all of it and prints the steps, sending
nothing. A deployment record (``--record``, by default the file's name with
``.deployment.json``) is written after every transaction; run the same command again after a
failure and it resumes from the first step not done (``offchain/protocol/deploy_plan.py``).

Exit codes: 0 done (or dry run passed), 1 a step failed on chain or the node is unreachable,
2 the file, the record or the options are refused. Errors are one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from ape.cli import ConnectedProviderCommand, network_option

from offchain import WAD
from offchain.protocol.config_files import one_line
from offchain.protocol.deploy_config import DeployConfigError, DeploySpec, load_deploy_spec
from offchain.protocol.deploy_plan import (
    ApeBackend,
    DeployRecord,
    DeployRecordError,
    DeployStepError,
    Step,
    execute,
    plan,
)


class Refused(click.ClickException):
    """A refused file, record or option: exit code 2, one line."""

    exit_code = 2


def default_record(config_path: Path) -> Path:
    """``deploy/mynet.yaml`` -> ``deploy/mynet.deployment.json``."""
    return config_path.with_name(config_path.stem + ".deployment.json")


def describe_market(spec: DeploySpec) -> list[str]:
    """The markets of the plan, one line each."""
    lines = []
    for m in spec.markets:
        tiers = ", ".join(
            f">{t.notional_floor / WAD:,.0f}: {t.maintenance_rate / WAD:.3%}" for t in m.tiers
        )
        g = m.guardrails
        feed = m.feed or f"mock ({m.mock_feed.answer if m.mock_feed else '?'})"
        lines.append(
            f"market {m.market_id:<3} {m.name:<10} tiers [{tiers}] initial x{m.initial_ratio / WAD}"
            f" multiplier [{g.min_multiplier / WAD}, {g.max_multiplier / WAD}]"
            f" stale {g.stale_multiplier / WAD} heartbeat {g.heartbeat}s feed {feed}"
            + (f" bounds {m.price_bounds}" if m.price_bounds else "")
        )
    return lines


def step_line(step: Step, entry: dict[str, Any] | None) -> str:
    args = ", ".join(str(a) for a in step.args if not isinstance(a, list | tuple))
    call = f"deploy {step.contract}({args})" if step.kind == "deploy" else f"{step.fn}({args})"
    if entry is None:
        return f"  to do  {step.key:<32} {call}"
    where = entry.get("address") or entry.get("tx") or ("found on chain" if entry else "")
    return f"  done   {step.key:<32} {call} {where}"


def deploy(
    spec: DeploySpec,
    deployer: Any,
    project: Any | None = None,
    web3: Any | None = None,
    record_path: Path | None = None,
    dry_run: bool = False,
    echo: Callable[[str], Any] = click.echo,
) -> DeployRecord:
    """Check ``spec`` against the network, then run (or, dry, print) its plan with a record.

    Raises ``DeployConfigError`` / ``DeployRecordError`` (refused, nothing sent) or
    ``DeployStepError`` (a step failed; the record keeps what was done).
    """
    if project is None:
        from ape import project as ape_project

        project = ape_project
    from offchain.protocol.deploy_config import check_on_chain

    web3 = web3 if web3 is not None else deployer.provider.web3
    for note in check_on_chain(spec, web3):
        echo(f"checked         {note}")
    backend = ApeBackend(project, deployer, web3)
    record = DeployRecord.open(
        record_path, spec.config_hash(), backend.chain_id(), backend.deployer
    )
    steps = plan(spec)
    todo = [s for s in steps if s.key not in record.steps]
    for step in steps:
        echo(step_line(step, record.steps.get(step.key)))
    if dry_run:
        echo(f"dry run: {len(todo)} of {len(steps)} step(s) to send; nothing sent")
        return record
    if record.steps:
        echo(f"resuming {record_path}: {len(steps) - len(todo)} of {len(steps)} step(s) done")

    def report(step: Step, entry: dict[str, Any], sent: bool) -> None:
        if sent:
            echo(f"sent            {step.key:<32} {entry.get('address') or ''} tx {entry['tx']}")

    execute(steps, backend, record, on_step=report)
    echo(f"registry        {record.address('registry')}")
    echo(f"engine          {record.address('engine')}")
    return record


def load_deployer(alias: str | None, provider: Any) -> Any:
    from ape import accounts

    if alias:
        try:
            return accounts.load(alias)
        except Exception as exc:
            raise Refused(f"--account {alias}: {one_line(exc)}") from None
    if provider.network.name not in ("local", "anvil"):
        raise Refused(f"--account is needed on {provider.network.name}")
    return accounts.test_accounts[0]


@click.command(cls=ConnectedProviderCommand)
@network_option()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Reviewed deployment YAML.",
)
@click.option("--account", "alias", default=None, help="ape account alias that deploys.")
@click.option("--dry-run", is_flag=True, help="Check everything and print the steps; send nothing.")
@click.option(
    "--record",
    "record_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Deployment record (default: the config's name with .deployment.json).",
)
def cli(
    provider: Any, config_path: Path, alias: str | None, dry_run: bool, record_path: Path | None
) -> None:
    """Check a deployment file, then deploy and configure the registry and the engine."""
    try:
        spec = load_deploy_spec(config_path)
        for line in describe_market(spec):
            click.echo(line)
        deployer = load_deployer(alias, provider)
        record = deploy(
            spec,
            deployer,
            web3=provider.web3,
            record_path=record_path or default_record(config_path),
            dry_run=dry_run,
        )
    except (DeployConfigError, DeployRecordError) as exc:
        raise Refused(f"refused: {one_line(exc)}") from None
    except DeployStepError as exc:
        raise click.ClickException(one_line(exc)) from None
    if not dry_run:
        click.echo(
            f"done: record {record.path}; the deployer owns both contracts: hand them to"
            " governance with transfer_ownership + accept_ownership"
        )
