"""One deployed system per module (ape isolates each test), keepers 0 and 1 registered, class
bounds widened to [0.5x, 4x]."""

from __future__ import annotations

import pytest

from tests.conftest import WAD
from tests.feature_system import deploy_features

MIN_CLASS_MULTIPLIER = WAD // 2
MAX_CLASS_MULTIPLIER = 4 * WAD


@pytest.fixture(scope="module", autouse=True)
def system(
    project, chain, owner, guardian, keepers, keeper, accounts, relayer, stranger, trader, maker
):
    """Built before any test of the module, with every wider-scoped actor it uses, so that ape
    never has to rebase its snapshots."""
    built = deploy_features(
        project, owner, guardian, [k.address for k in keepers[:2]], exchange=accounts[7]
    )
    built.profiles.set_class_bounds(MIN_CLASS_MULTIPLIER, MAX_CLASS_MULTIPLIER, sender=owner)
    return built


@pytest.fixture(scope="module")
def profiles(system):
    return system.profiles


@pytest.fixture(scope="module")
def engine(system):
    return system.engine


@pytest.fixture(scope="session")
def trader(accounts):
    return accounts[4]


@pytest.fixture(scope="session")
def maker(accounts):
    return accounts[5]


@pytest.fixture
def submit(system, keeper, relayer):
    """Sign profile updates (keeper 0 unless told) and relay them; returns the receipt."""

    def _submit(updates, keys=None, signatures=None, sender=None):
        return system.submit_profiles(
            updates, keys or [keeper], sender or relayer, signatures=signatures
        )

    return _submit


@pytest.fixture
def define(profiles, owner):
    """Define class ``class_id`` (multiplier, min volume and min equity in USD WAD)."""

    def _define(class_id, multiplier, min_volume=0, min_equity=0):
        return profiles.define_class(class_id, (multiplier, min_volume, min_equity), sender=owner)

    return _define
