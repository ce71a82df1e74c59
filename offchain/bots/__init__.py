"""Bot entry points: Silverback modules (``silverback run offchain.bots.keeper_bot:bot``) over
the same ``Keeper`` and ``Liquidator`` that ``dmm keeper`` and ``dmm liquidator`` run."""
