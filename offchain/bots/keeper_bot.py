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

from offchain.bots._common import NonOverlapping, as_block, bot_config, bot_key, bot_web3
from offchain.bots.builders import build_keeper
from offchain.bots.metrics import serve

bot = SilverbackBot()
_cfg = bot_config()
_w3 = bot_web3(_cfg, bot.provider)
keeper = build_keeper(_cfg, _w3, str(_cfg["registry"]), bot_key("DMM_KEEPER_KEY"), dry_run=False)
if _cfg.get("metrics_port"):
    serve(keeper.metrics, int(_cfg["metrics_port"]))  # /metrics and the /healthz watchdog
_tick = NonOverlapping("keeper", keeper.tick)


@bot.on_(chain.blocks)
def on_block(block: Any) -> dict[str, int]:
    result = _tick(as_block(block))
    if result is None:
        return {"skipped": 1}
    keeper.metrics.tick_done()
    return {
        "updates": len(result.updates),
        "refused": sum(d.action == "refuse" for d in result.decisions),
        "gas_wei": result.sent.cost_wei if result.sent else 0,
    }
