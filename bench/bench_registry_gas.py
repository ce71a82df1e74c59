"""Gas of the registry's keeper path and hot views, on ape's local network (py-evm).

Scenarios: ``submit_updates`` for 1 and 20 markets, signed by 1 and 3 keepers, as the first
write of each market and as an overwrite (a new multiplier, funding rate and observation for a
market that already has an update). The registry pushes every accepted update into the margin
engine listing the markets (as deployed), so the figures include the engine's copy; one row
gives a registry with no engine for comparison. "Per market" is the whole transaction's gas
(21,000 intrinsic and calldata included) divided by the number of markets. Views are measured
as transactions (``gas_used``), which includes the 21,000 intrinsic gas.
"""

from __future__ import annotations

import dataclasses

from ape import accounts, chain, networks, project
from ape.logging import logger
from eth_account import Account

from bench.results import print_table, record
from offchain import WAD
from offchain.devnet.system import DEVNET_GUARDRAILS, DEVNET_TIERS, deploy_engine
from offchain.protocol.signing import RiskUpdate, sign_batch_multi

TIERS = [(t.notional_floor, t.maintenance_rate) for t in DEVNET_TIERS]
# The devnet guardrails with an increase ramp, so the ramp bookkeeping is in the figures.
GUARDRAILS = dataclasses.replace(DEVNET_GUARDRAILS, increase_ramp=600)
KEEPERS = [Account.from_key(bytes([i + 1]) * 32) for i in range(3)]
MODEL_HASH = bytes.fromhex("5a" * 32)


def _batch(market_ids: range, multiplier: int, funding: int) -> list[RiskUpdate]:
    now = chain.pending_timestamp
    return [
        RiskUpdate(m, multiplier, funding * (1 if m % 2 else -1), now - 5, now + 600, MODEL_HASH)
        for m in market_ids
    ]


def _submit(registry, relayer, updates: list[RiskUpdate], signers: int) -> int:
    keys = sorted(KEEPERS[:signers], key=lambda a: a.address)
    sigs = sign_batch_multi(updates, [k.key for k in keys], chain.chain_id, registry.address)
    receipt = registry.submit_updates([u.as_tuple() for u in updates], sigs, sender=relayer)
    return receipt.gas_used


def _listed_engine(owner, registry, markets: range) -> None:
    """An engine that lists ``markets`` (one mock feed each) and receives the registry's pushes."""
    token = project.MockERC20.deploy("USD Coin", "USDC", 6, sender=owner)
    engine = deploy_engine(project, owner, token, registry)
    for market_id in markets:
        feed = project.MockPriceFeed.deploy(8, 60_000 * 10**8, sender=owner)
        engine.add_market(
            market_id, (feed, 3600, 5 * 10**16, 25 * 10**14, WAD // 2, 10**9 * WAD), sender=owner
        )


def measure() -> dict[str, int]:
    """Deploy fresh registries and return gas figures keyed by scenario."""
    owner, relayer = accounts.test_accounts[0], accounts.test_accounts[1]
    results: dict[str, int] = {}
    alone = project.RiskParameterRegistry.deploy(owner, sender=owner)
    alone.add_keeper(KEEPERS[0].address, sender=owner)
    alone.configure_market(1, TIERS, 2 * WAD, GUARDRAILS.as_tuple(), sender=owner)
    _submit(alone, relayer, _batch(range(1, 2), 2 * WAD, 3 * 10**9), 1)
    chain.mine(deltatime=60)
    results["gas_update_1_market_registry_only"] = _submit(
        alone, relayer, _batch(range(1, 2), 2 * WAD + WAD // 5, 4 * 10**9), 1
    )
    for signers in (1, 3):
        registry = project.RiskParameterRegistry.deploy(owner, sender=owner)
        for keeper in KEEPERS[:signers]:
            registry.add_keeper(keeper.address, sender=owner)
        registry.set_signer_threshold(signers, sender=owner)
        for market_id in range(1, 22):
            registry.configure_market(
                market_id, TIERS, 2 * WAD, GUARDRAILS.as_tuple(), sender=owner
            )
        _listed_engine(owner, registry, range(1, 22))
        for n, ids in ((1, range(1, 2)), (20, range(2, 22))):
            first = _submit(registry, relayer, _batch(ids, 2 * WAD, 3 * 10**9), signers)
            chain.mine(deltatime=60)
            over = _submit(registry, relayer, _batch(ids, 2 * WAD + WAD // 5, 4 * 10**9), signers)
            tag = f"{n}_market{'s' if n > 1 else ''}_{signers}_signer{'s' if signers > 1 else ''}"
            results[f"gas_update_{tag}_first_write"] = first
            results[f"gas_update_{tag}_overwrite"] = over
            results[f"gas_update_{tag}_overwrite_per_market"] = over // n
        if signers == 1:
            notional = 2_000_000 * WAD  # reaches the second tier
            results["gas_maintenance_margin_view"] = registry.maintenance_margin.transact(
                1, notional, sender=owner
            ).gas_used
            results["gas_margin_requirements_view"] = registry.margin_requirements.transact(
                1, notional, sender=owner
            ).gas_used
            results["gas_multiplier_view"] = registry.multiplier.transact(1, sender=owner).gas_used
    results["gas_update_1_market"] = results["gas_update_1_market_1_signer_overwrite"]
    results["gas_update_per_market_20"] = results[
        "gas_update_20_markets_1_signer_overwrite_per_market"
    ]
    return results


def main() -> dict[str, int]:
    """Measure, print the table and merge the figures into ``bench/results.json``."""
    logger.set_level("WARNING")
    with networks.parse_network_choice("ethereum:local:test"):
        results = measure()
    goals = {"gas_update_1_market": "<= 45,000", "gas_update_per_market_20": "<= 12,000"}
    rows = [(key, f"{value:,}", goals.get(key, "")) for key, value in results.items()]
    print_table("Registry gas (ape local network, whole transaction)", rows)
    record(results)
    return results


if __name__ == "__main__":
    main()
