# pragma version ~=0.4.3
"""
@title Dynamic Margin keeper relay: risk and scenario updates in one transaction
@custom:contract-name KeeperRelay
@license GNU Affero General Public License v3.0 only
@notice Relays a signed risk-update batch and a signed scenario batch to
        their registries in one transaction, so that a market's multiplier
        and its group's scenarios move together (both apply or neither). It
        holds nothing and has no privilege: the registries check every
        signature, and anyone may relay either batch directly.
@custom:kill Nothing to stop: relay the batches to the registries directly.
"""

from interfaces import IRiskParameterRegistry
from interfaces import IScenarioRegistry

# @dev The risk-parameter registry.
RISK_REGISTRY: public(immutable(address))
# @dev The scenario registry.
SCENARIO_REGISTRY: public(immutable(address))


@deploy
def __init__(risk_registry: address, scenario_registry: address):
    """
    @param risk_registry The `RiskParameterRegistry`.
    @param scenario_registry The `ScenarioRegistry`.
    """
    assert risk_registry != empty(address) and scenario_registry != empty(address), "relay: zero address"
    RISK_REGISTRY = risk_registry
    SCENARIO_REGISTRY = scenario_registry


@external
def relay(
    updates: DynArray[IRiskParameterRegistry.RiskUpdate, 32],
    update_signatures: DynArray[Bytes[65], 8],
    scenarios: DynArray[IScenarioRegistry.ScenarioUpdate, 8],
    scenario_signatures: DynArray[Bytes[65], 8],
):
    """
    @notice Applies both batches (an empty one is skipped); reverts whole if
            either registry refuses its batch.
    @param updates Keeper-signed risk updates.
    @param update_signatures Their keeper signatures.
    @param scenarios Keeper-signed scenario updates.
    @param scenario_signatures Their keeper signatures.
    """
    assert len(updates) != 0 or len(scenarios) != 0, "relay: nothing to relay"
    if len(updates) != 0:
        extcall IRiskParameterRegistry(RISK_REGISTRY).submit_updates(updates, update_signatures)
    if len(scenarios) != 0:
        extcall IScenarioRegistry(SCENARIO_REGISTRY).submit_scenarios(scenarios, scenario_signatures)
