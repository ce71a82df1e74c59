"""Governance: deployment, keepers, signer threshold, guardian, pause, two-step ownership and
the EIP-712 domain."""

import ape
from eth_account import Account

from tests.conftest import MARKET_BTC, WAD
from tests.registry.conftest import configure

ZERO = ape.utils.ZERO_ADDRESS


def test_init__owner_guardian_and_defaults(project, owner, guardian):
    contract = project.RiskParameterRegistry.deploy(guardian, sender=owner)

    assert contract.owner() == owner.address
    assert contract.pending_owner() == ZERO
    assert contract.guardian() == guardian.address
    assert contract.signer_threshold() == 1
    assert contract.keeper_count() == 0
    assert not contract.paused()
    receipt = contract.creation_metadata.receipt
    [guardian_log] = receipt.decode_logs(contract.GuardianSet)
    assert (guardian_log.old_guardian, guardian_log.new_guardian) == (ZERO, guardian.address)
    [threshold_log] = receipt.decode_logs(contract.SignerThresholdSet)
    assert (threshold_log.old_threshold, threshold_log.new_threshold) == (0, 1)


def test_eip712_domain__name_version_chain_and_address(registry, chain):
    fields, name, version, chain_id, verifying_contract, salt, extensions = registry.eip712Domain()

    assert bytes(fields) == b"\x0f"  # name, version, chainId, verifyingContract
    assert name == "DynamicMarginRiskRegistry"
    assert version == "1"
    assert chain_id == chain.chain_id
    assert verifying_contract == registry.address
    assert bytes(salt) == bytes(32)
    assert list(extensions) == []


# Keepers


def test_add_keeper__lists_and_logs(registry, owner, keepers):
    receipt = registry.add_keeper(keepers[1].address, sender=owner)

    assert registry.is_keeper(keepers[1].address)
    assert registry.keeper_count() == 2
    [log] = receipt.decode_logs(registry.KeeperAdded)
    assert (log.keeper, log.keeper_count) == (keepers[1].address, 2)


def test_add_keeper__zero_address(registry, owner):
    with ape.reverts("registry: keeper is the zero address"):
        registry.add_keeper(ZERO, sender=owner)


def test_add_keeper__already_a_keeper(registry, owner, keeper):
    with ape.reverts("registry: already a keeper"):
        registry.add_keeper(keeper.address, sender=owner)
    assert registry.keeper_count() == 1


def test_remove_keeper__delists_and_logs(registry, owner, keeper, second_keeper):
    receipt = registry.remove_keeper(keeper.address, sender=owner)

    assert not registry.is_keeper(keeper.address)
    assert registry.is_keeper(second_keeper.address)
    assert registry.keeper_count() == 1
    [log] = receipt.decode_logs(registry.KeeperRemoved)
    assert (log.keeper, log.keeper_count) == (keeper.address, 1)


def test_remove_keeper__not_a_keeper(registry, owner, keepers):
    with ape.reverts("registry: not a keeper"):
        registry.remove_keeper(keepers[3].address, sender=owner)


def test_remove_keeper__would_leave_fewer_keepers_than_threshold(
    registry, owner, keeper, second_keeper
):
    registry.set_signer_threshold(2, sender=owner)

    with ape.reverts("registry: threshold above keeper count"):
        registry.remove_keeper(keeper.address, sender=owner)
    assert registry.keeper_count() == 2


def test_remove_keeper__last_keeper_stops_updates(registry, owner, keeper, submit, make_update):
    registry.remove_keeper(keeper.address, sender=owner)

    assert registry.keeper_count() == 0
    with ape.reverts("registry: signer is not a keeper"):
        submit([make_update()])


def test_add_keeper__readded_keeper_signs_again(registry, owner, keeper, submit, make_update):
    registry.remove_keeper(keeper.address, sender=owner)
    registry.add_keeper(keeper.address, sender=owner)

    submit([make_update(multiplier=3 * WAD)])
    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD


# Threshold


def test_set_signer_threshold__sets_and_logs(registry, owner, keepers):
    for signer in keepers[1:3]:
        registry.add_keeper(signer.address, sender=owner)

    receipt = registry.set_signer_threshold(3, sender=owner)

    assert registry.signer_threshold() == 3
    [log] = receipt.decode_logs(registry.SignerThresholdSet)
    assert (log.old_threshold, log.new_threshold) == (1, 3)


def test_set_signer_threshold__zero(registry, owner):
    with ape.reverts("registry: threshold must be 1 to 8"):
        registry.set_signer_threshold(0, sender=owner)


def test_set_signer_threshold__above_eight(registry, owner):
    with ape.reverts("registry: threshold must be 1 to 8"):
        registry.set_signer_threshold(9, sender=owner)


def test_set_signer_threshold__above_keeper_count(registry, owner, second_keeper):
    with ape.reverts("registry: threshold above keeper count"):
        registry.set_signer_threshold(3, sender=owner)
    assert registry.signer_threshold() == 1


def test_set_signer_threshold__eight_of_eight(registry, owner, submit, make_update):
    signers = [Account.from_key(bytes([0x40 + i]) * 32) for i in range(7)]
    for signer in signers:
        registry.add_keeper(signer.address, sender=owner)
    registry.set_signer_threshold(8, sender=owner)
    all_keys = [Account.from_key(bytes([1]) * 32), *signers]

    with ape.reverts("registry: not enough signatures"):
        submit([make_update()], keys=all_keys[:7])
    receipt = submit([make_update()], keys=all_keys)

    [log] = receipt.decode_logs(registry.RiskBatchRelayed)
    assert log.signers == 8


def test_set_signer_threshold__keeps_the_pause_flag(registry, owner, second_keeper):
    registry.pause(sender=owner)

    registry.set_signer_threshold(2, sender=owner)

    assert registry.paused()
    registry.unpause(sender=owner)
    assert not registry.paused()
    assert registry.signer_threshold() == 2


# Guardian and pause


def test_pause__by_guardian_logs_and_blocks(registry, guardian):
    receipt = registry.pause(sender=guardian)

    assert registry.paused()
    [log] = receipt.decode_logs(registry.Paused)
    assert log.account == guardian.address


def test_unpause__by_guardian(registry, guardian, submit, make_update):
    # The contract lets the guardian undo its own pause (owner or guardian, both ways).
    registry.pause(sender=guardian)

    receipt = registry.unpause(sender=guardian)

    assert not registry.paused()
    [log] = receipt.decode_logs(registry.Unpaused)
    assert log.account == guardian.address
    submit([make_update()])


def test_pause__by_owner_and_unpause(registry, owner):
    paused = registry.pause(sender=owner)
    unpaused = registry.unpause(sender=owner)

    assert paused.decode_logs(registry.Paused)[0].account == owner.address
    assert unpaused.decode_logs(registry.Unpaused)[0].account == owner.address
    assert not registry.paused()


def test_pause__already_paused(registry, owner, guardian):
    registry.pause(sender=owner)

    with ape.reverts("registry: already paused"):
        registry.pause(sender=guardian)


def test_unpause__not_paused(registry, owner):
    with ape.reverts("registry: not paused"):
        registry.unpause(sender=owner)


def test_pause__keeps_the_threshold(registry, owner, second_keeper):
    registry.set_signer_threshold(2, sender=owner)

    registry.pause(sender=owner)

    assert registry.signer_threshold() == 2


def test_set_guardian__replaces_and_logs(registry, owner, guardian, stranger):
    receipt = registry.set_guardian(stranger, sender=owner)

    assert registry.guardian() == stranger.address
    [log] = receipt.decode_logs(registry.GuardianSet)
    assert (log.old_guardian, log.new_guardian) == (guardian.address, stranger.address)
    with ape.reverts("registry: caller is not owner or guardian"):
        registry.pause(sender=guardian)
    registry.pause(sender=stranger)
    assert registry.paused()


def test_set_guardian__zero_removes_it(registry, owner, guardian):
    registry.set_guardian(ZERO, sender=owner)

    with ape.reverts("registry: caller is not owner or guardian"):
        registry.pause(sender=guardian)
    registry.pause(sender=owner)


# Ownership


def test_transfer_ownership__two_steps(registry, owner, stranger, accounts):
    new_owner = accounts[7]

    started = registry.transfer_ownership(new_owner, sender=owner)

    assert registry.owner() == owner.address
    assert registry.pending_owner() == new_owner.address
    [log] = started.decode_logs(registry.OwnershipTransferStarted)
    assert (log.previous_owner, log.new_owner) == (owner.address, new_owner.address)
    with ape.reverts("ownable: caller is not the owner"):
        registry.set_guardian(new_owner, sender=new_owner)  # not yet the owner
    with ape.reverts("ownable_2step: caller is not the new owner"):
        registry.accept_ownership(sender=stranger)

    accepted = registry.accept_ownership(sender=new_owner)

    assert registry.owner() == new_owner.address
    assert registry.pending_owner() == ZERO
    [log] = accepted.decode_logs(registry.OwnershipTransferred)
    assert (log.previous_owner, log.new_owner) == (owner.address, new_owner.address)
    with ape.reverts("ownable: caller is not the owner"):
        configure(registry, owner, 7)
    configure(registry, new_owner, 7)
    assert registry.is_configured(7)


def test_transfer_ownership__to_zero_cancels(registry, owner, accounts):
    new_owner = accounts[7]
    registry.transfer_ownership(new_owner, sender=owner)

    registry.transfer_ownership(ZERO, sender=owner)

    assert registry.pending_owner() == ZERO
    with ape.reverts("ownable_2step: caller is not the new owner"):
        registry.accept_ownership(sender=new_owner)
    assert registry.owner() == owner.address


def test_renounce_ownership__not_exported(registry):
    names = {abi.name for abi in registry.contract_type.mutable_methods}
    assert "transfer_ownership" in names
    assert "renounce_ownership" not in names
