"""The liquidation bot as a Silverback bot: one scan (and its liquidations) per new block.

    DMM_CONFIG=offchain/bots/keeper.example.yaml DMM_LIQUIDATOR_KEY=0x... \\
        silverback run offchain.bots.liquidator_bot:bot --network ethereum:local:foundry

Without ``DMM_LIQUIDATOR_KEY`` it runs dry (scans and logs what it would do).
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
from offchain.bots.builders import build_liquidator
from offchain.bots.metrics import serve
from offchain.bots.preflight import check_engine, check_liquidator_funds
from offchain.protocol.chain import EngineClient

bot = SilverbackBot()
with startup("liquidator"):
    _cfg = bot_config()
    _key = bot_key("DMM_LIQUIDATOR_KEY")
    _w3 = bot_web3(_cfg, bot.provider)
    _engine = EngineClient(_w3, required(_cfg, "engine"))
    check_engine(_w3, _engine, _cfg.file.registry)
    check_liquidator_funds(
        _engine,
        _key.address if _key else None,
        _cfg.liquidator_config().liquidator_subaccount,
        _key is None,
    )
    liquidator = build_liquidator(_cfg, _w3, _engine.address, _key, dry_run=False)
    if _cfg.metrics_port("liquidator"):
        serve(liquidator.metrics, _cfg.metrics_port("liquidator"))  # /metrics and /healthz
_tick = NonOverlapping("liquidator", liquidator.tick)


@bot.on_(chain.blocks)
def on_block(block: Any) -> dict[str, float]:
    result = _tick(as_block(block))
    if result is None:
        return {"skipped": 1}
    liquidator.metrics.tick_done()
    return {
        "liquidatable": len(result.scan.liquidatable),
        "liquidations": result.liquidations,
        "backstops": result.backstops,
        "scan_seconds": result.scan.seconds,
    }
