"""The keeper as a Silverback bot: one tick per new block, time from the block.

    DMM_CONFIG=offchain/bots/keeper.example.yaml DMM_KEEPER_KEY=0x... \\
        silverback run offchain.bots.keeper_bot:bot --network ethereum:local:foundry

The hot key comes from ``DMM_KEEPER_KEY`` (or ``--account``-style alias through ``dmm keeper``);
without it the bot runs dry: it computes, signs nothing and sends nothing. Each handler returns
the tick's figures, which Silverback records as metrics.
"""

from __future__ import annotations

from typing import Any

from ape import chain
from silverback import SilverbackBot

from offchain.bots._common import (
    NonOverlapping,
    as_block,
    bot_config,
    bot_key,
    bot_web3,
    required,
    startup,
)
from offchain.bots.builders import build_keeper, config_histories
from offchain.bots.metrics import serve
from offchain.bots.preflight import (
    check_histories,
    check_keeper_contracts,
    check_keeper_key,
    check_markets,
    check_profile_classes,
    check_registry,
)
from offchain.protocol.chain import FeedClient, RegistryClient

bot = SilverbackBot()
with startup("keeper"):
    _cfg = bot_config()
    _key = bot_key("DMM_KEEPER_KEY")
    _w3 = bot_web3(_cfg, bot.provider)
    _registry = RegistryClient(_w3, required(_cfg, "registry"))
    check_registry(_w3, _registry)
    _readings = check_markets(_w3, _registry, FeedClient(_w3), _cfg.markets())
    check_keeper_key(_registry, _key.address if _key else None, _key is None)
    _histories = config_histories(_cfg)
    check_histories(_cfg, _histories, _readings)
    check_keeper_contracts(_w3, _cfg, _registry.address)
    keeper = build_keeper(_cfg, _w3, _registry.address, _key, dry_run=False, histories=_histories)
    if keeper.profiles is not None and _cfg.file.profiles is not None:
        check_profile_classes(keeper.profiles, _cfg.file.profiles.scale)
    if _cfg.metrics_port("keeper"):
        serve(keeper.metrics, _cfg.metrics_port("keeper"))  # /metrics and /healthz
_tick = NonOverlapping("keeper", keeper.tick)


@bot.on_(chain.blocks)
def on_block(block: Any) -> dict[str, int]:
    result = _tick(as_block(block))
    if result is None:
        return {"skipped": 1}
    keeper.metrics.tick_done()
    return {
        "updates": len(result.updates),
        "scenario_updates": len(result.scenario_updates),
        "profile_updates": len(result.profile_updates),
        "refused": sum(d.action == "refuse" for d in result.decisions),
        "gas_wei": result.sent.cost_wei if result.sent else 0,
    }
