"""Deploy and configure Dynamic Margin from a reviewed YAML file.

    ape run deploy --config deploy/testnet.yaml --network ethereum:sepolia:node --account ALIAS

Everything in the file is checked first (``offchain/protocol/deploy_config.py``); an unsafe setting
stops the script before any transaction. ``--dry-run`` prints the plan and sends nothing.
"""

from __future__ import annotations

from pathlib import Path

import click
from ape import Contract, accounts, project
from ape.cli import ConnectedProviderCommand, network_option

from offchain import WAD
from offchain.devnet.system import deploy_engine
from offchain.protocol.deploy_config import DeployConfigError, DeploySpec, load_deploy_spec

ERC20_DECIMALS_ABI = [
    {
        "type": "function",
        "name": "decimals",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    }
]


def print_plan(spec: DeploySpec) -> None:
    """What the deployment will do, in the order it does it."""
    click.echo(f"collateral      {spec.collateral}")
    click.echo(f"guardian        {spec.guardian}")
    click.echo(f"keepers         {len(spec.keepers)}, threshold {spec.signer_threshold}")
    for m in spec.markets:
        tiers = ", ".join(
            f">{t.notional_floor / WAD:,.0f}: {t.maintenance_rate / WAD:.3%}" for t in m.tiers
        )
        g = m.guardrails
        click.echo(
            f"market {m.market_id:<3} {m.name:<10} tiers [{tiers}] initial x{m.initial_ratio / WAD}"
            f" multiplier [{g.min_multiplier / WAD}, {g.max_multiplier / WAD}]"
            f" stale {g.stale_multiplier / WAD} heartbeat {g.heartbeat}s feed {m.feed}"
            + (f" bounds {m.price_bounds}" if m.price_bounds else "")
        )


def deploy(spec: DeploySpec, deployer) -> tuple:
    """Deploy the registry and the engine, configure every market, return both contracts."""
    registry = project.RiskParameterRegistry.deploy(spec.guardian, sender=deployer)
    click.echo(f"registry        {registry.address}")
    for keeper in spec.keepers:
        registry.add_keeper(keeper, sender=deployer)
    registry.set_signer_threshold(spec.signer_threshold, sender=deployer)
    decimals = Contract(spec.collateral, abi=ERC20_DECIMALS_ABI).decimals()
    engine = deploy_engine(project, deployer, spec.collateral, registry, decimals=decimals)
    click.echo(f"engine          {engine.address}")
    for m in spec.markets:
        tiers = [(t.notional_floor, t.maintenance_rate) for t in m.tiers]
        registry.configure_market(
            m.market_id, tiers, m.initial_ratio, m.guardrails.as_tuple(), sender=deployer
        )
        engine.add_market(m.market_id, m.engine_config(), sender=deployer)
        if m.price_bounds is not None:
            engine.set_price_bounds(m.market_id, *m.price_bounds, sender=deployer)
        click.echo(f"configured      market {m.market_id} ({m.name})")
    for exchange in spec.exchanges:
        engine.set_exchange(exchange, True, sender=deployer)
        click.echo(f"exchange        {exchange} allowed")
    return registry, engine


@click.command(cls=ConnectedProviderCommand)
@network_option()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Reviewed deployment YAML.",
)
@click.option("--account", "alias", default=None, help="ape account alias that deploys.")
@click.option("--dry-run", is_flag=True, help="Check and print the plan; send nothing.")
def cli(config_path: Path, alias: str | None, dry_run: bool) -> None:
    """Check a deployment file, then deploy and configure the registry and the engine."""
    try:
        spec = load_deploy_spec(config_path)
    except DeployConfigError as exc:
        raise click.ClickException(f"refused: {exc}") from exc
    print_plan(spec)
    if dry_run:
        click.echo("dry run: nothing sent")
        return
    deployer = accounts.load(alias) if alias else accounts.test_accounts[0]
    deploy(spec, deployer)
    click.echo(
        "done: the deployer is the owner of both contracts; transfer ownership to "
        "governance with transfer_ownership + accept_ownership"
    )
