"""The risk model, pure numpy: prices -> volatility -> risk measures -> stress scenarios ->
calibration to registry parameters -> walk-forward backtest. Uses only ``offchain.protocol``
(the registry maths it replays and the update type it produces)."""
