"""One deployed system per module (ape isolates each test), keepers 0 and 1 registered."""

from __future__ import annotations

import pytest

from tests.feature_system import deploy_features


@pytest.fixture(scope="module", autouse=True)
def system(project, chain, owner, guardian, keepers, keeper, accounts, relayer, stranger):
    """Built before any test of the module, with every wider-scoped actor it uses, so that ape
    never has to rebase its snapshots."""
    return deploy_features(
        project, owner, guardian, [k.address for k in keepers[:2]], exchange=accounts[7]
    )


@pytest.fixture(scope="module")
def scenarios(system):
    return system.scenarios


@pytest.fixture(scope="module")
def engine(system):
    return system.engine


@pytest.fixture
def submit(system, keeper, relayer):
    """Sign scenario updates (keeper 0 unless told) and relay them; returns the receipt."""

    def _submit(updates, keys=None, signatures=None, sender=None):
        return system.submit_scenarios(
            updates, keys or [keeper], sender or relayer, signatures=signatures
        )

    return _submit
