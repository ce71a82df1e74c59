"""ProfileRegistry governance: construction, class bounds, heartbeat, define_class (bounds,
retire) and what the engine receives."""

import ape
import pytest

from tests.conftest import WAD
from tests.feature_system import PROFILE_HEARTBEAT, profile_update
from tests.profiles.conftest import MAX_CLASS_MULTIPLIER, MIN_CLASS_MULTIPLIER


def test_init__refuses_zero_addresses_and_heartbeat(project, owner, system):
    zero = ape.utils.ZERO_ADDRESS
    with ape.reverts("profiles: zero address"):
        project.ProfileRegistry.deploy(zero, system.engine, 1, sender=owner)
    with ape.reverts("profiles: zero address"):
        project.ProfileRegistry.deploy(system.registry, zero, 1, sender=owner)
    for heartbeat in (0, 2**32):
        with ape.reverts("profiles: heartbeat out of range"):
            project.ProfileRegistry.deploy(system.registry, system.engine, heartbeat, sender=owner)


def test_init__bounds_start_at_one_and_the_deployer_owns(project, owner, system):
    fresh = project.ProfileRegistry.deploy(system.registry, system.engine, 600, sender=owner)
    assert (fresh.min_multiplier(), fresh.max_multiplier(), fresh.heartbeat()) == (WAD, WAD, 600)
    assert fresh.owner() == owner.address
    assert fresh.RISK_REGISTRY() == system.registry.address
    assert fresh.ENGINE() == system.engine.address
    # Until governance widens the bounds, only 1x classes can be defined.
    with ape.reverts("profiles: class multiplier outside the bounds"):
        fresh.define_class(1, (WAD - 1, 0, 0), sender=owner)


def test_set_class_bounds__stores_and_logs(profiles, owner):
    receipt = profiles.set_class_bounds(8 * WAD // 10, 2 * WAD, sender=owner)
    assert (profiles.min_multiplier(), profiles.max_multiplier()) == (8 * WAD // 10, 2 * WAD)
    [log] = receipt.decode_logs(profiles.ClassBoundsSet)
    assert (log.min_multiplier, log.max_multiplier) == (8 * WAD // 10, 2 * WAD)


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (WAD // 2 - 1, WAD, "profiles: min multiplier must be 0.5x to 1x"),
        (WAD + 1, 2 * WAD, "profiles: min multiplier must be 0.5x to 1x"),
        (WAD, WAD - 1, "profiles: max multiplier must be 1x to 4x"),
        (WAD, 4 * WAD + 1, "profiles: max multiplier must be 1x to 4x"),
    ],
)
def test_set_class_bounds__refuses_outside_the_absolute_band(profiles, owner, low, high, message):
    with ape.reverts(message):
        profiles.set_class_bounds(low, high, sender=owner)


def test_set_class_bounds__keeps_classes_defined_earlier(profiles, define, owner):
    define(1, 3 * WAD)
    profiles.set_class_bounds(WAD, 2 * WAD, sender=owner)
    assert profiles.account_class(1).multiplier == 3 * WAD


def test_set_heartbeat__stores_logs_and_keeps_landed_expiries(
    profiles, define, submit, owner, trader, chain
):
    define(1, 2 * WAD)
    landed = submit([profile_update(chain.pending_timestamp, trader, 1)]).timestamp
    receipt = profiles.set_heartbeat(60, sender=owner)
    [log] = receipt.decode_logs(profiles.HeartbeatSet)
    assert (log.old_heartbeat, log.new_heartbeat) == (PROFILE_HEARTBEAT, 60)
    assert profiles.heartbeat() == 60
    assert profiles.profile(trader, 0).expires_at == landed + PROFILE_HEARTBEAT
    for heartbeat in (0, 2**32):
        with ape.reverts("profiles: heartbeat out of range"):
            profiles.set_heartbeat(heartbeat, sender=owner)


def test_governance__only_the_owner(profiles, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        profiles.set_class_bounds(WAD, WAD, sender=stranger)
    with ape.reverts("ownable: caller is not the owner"):
        profiles.set_heartbeat(60, sender=stranger)
    with ape.reverts("ownable: caller is not the owner"):
        profiles.define_class(1, (WAD, 0, 0), sender=stranger)


def test_engine_sync__only_the_profile_registry(engine, stranger, trader):
    with ape.reverts("engine: caller is not the profile registry"):
        engine.sync_class(1, WAD // 2, sender=stranger)
    with ape.reverts("engine: caller is not the profile registry"):
        engine.sync_profile(trader, 0, 1, 2**40 - 1, sender=stranger)


def test_define_class__stores_logs_and_pushes_the_multiplier(
    profiles, define, submit, engine, trader, chain
):
    receipt = define(3, 15 * WAD // 10, 1_000 * WAD, 50 * WAD)
    assert profiles.account_class(3) == (15 * WAD // 10, 1_000 * WAD, 50 * WAD)
    [log] = receipt.decode_logs(profiles.ClassDefined)
    assert log.class_id == 3
    assert tuple(log.old_class) == (0, 0, 0)
    assert tuple(log.new_class) == (15 * WAD // 10, 1_000 * WAD, 50 * WAD)
    # Redefining logs the old class and reaches accounts already in it at once.
    define(3, 2 * WAD)
    landed = submit([profile_update(chain.pending_timestamp, trader, 3)]).timestamp
    details = engine.account_details(trader, 0)
    assert (details.class_id, details.class_multiplier, details.class_expires_at) == (
        3,
        2 * WAD,
        landed + PROFILE_HEARTBEAT,
    )
    receipt = define(3, 3 * WAD)
    [log] = receipt.decode_logs(profiles.ClassDefined)
    assert tuple(log.old_class) == (2 * WAD, 0, 0)
    assert engine.account_details(trader, 0).class_multiplier == 3 * WAD


@pytest.mark.parametrize("class_id", [0, 8])
def test_define_class__id_out_of_range(profiles, owner, class_id):
    with ape.reverts("profiles: class id must be 1 to 7"):
        profiles.define_class(class_id, (WAD, 0, 0), sender=owner)


@pytest.mark.parametrize("multiplier", [MIN_CLASS_MULTIPLIER - 1, MAX_CLASS_MULTIPLIER + 1, 1])
def test_define_class__multiplier_outside_the_bounds(profiles, owner, multiplier):
    with ape.reverts("profiles: class multiplier outside the bounds"):
        profiles.define_class(1, (multiplier, 0, 0), sender=owner)


def test_define_class__bounds_themselves_are_accepted(define, profiles):
    define(1, MIN_CLASS_MULTIPLIER)
    define(7, MAX_CLASS_MULTIPLIER)
    assert profiles.account_class(1).multiplier == MIN_CLASS_MULTIPLIER
    assert profiles.account_class(7).multiplier == MAX_CLASS_MULTIPLIER


def test_define_class__retired_class_falls_back_to_one_at_once(
    profiles, define, submit, engine, trader, chain
):
    define(2, WAD // 2)
    submit([profile_update(chain.pending_timestamp, trader, 2)])
    assert engine.account_details(trader, 0).class_multiplier == WAD // 2
    define(2, 0)
    assert engine.account_details(trader, 0).class_multiplier == WAD
    assert engine.account_details(trader, 0).class_id == 2  # the profile stays, the class is gone
    assert not profiles.is_eligible(trader, 0, 2)
    with ape.reverts("profiles: class not defined"):
        submit([profile_update(chain.pending_timestamp, trader, 2)])
