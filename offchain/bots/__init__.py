"""The bots: the keeper and its live models, the liquidation bot, the tick loop, metrics, the
builders that turn a YAML config into a running bot, and the Silverback entry points
(``silverback run offchain.bots.keeper_bot:bot``) over the same ``Keeper`` and ``Liquidator``
that ``dmm keeper`` and ``dmm liquidator`` run. Never imports ``offchain.devnet``."""
