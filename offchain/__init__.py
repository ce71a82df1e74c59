"""Dynamic Margin off-chain tooling, in four packages that follow the data one way:

``risk``      prices -> volatility -> risk measures -> scenarios -> margin parameters -> backtest
              (pure numpy; of the others it uses only ``protocol``'s registry maths it replays)
``protocol``  the contracts' maths in Python, EIP-712 signing, chain clients, the transaction
              sender, the deployment config (imports none of the other three)
``bots``      the keeper, its live models, the liquidator, the tick loop, metrics, and the
              Silverback entry points (never imports ``devnet``)
``devnet``    deploying a devnet system, price replay and the demo

``cli`` (the ``dmm`` command) and ``cli_ops`` (the operator commands) sit on top; no package
imports them. ``tests/test_layout.py`` enforces the flow.
"""

__version__ = "0.1.0"
WAD = 10**18
