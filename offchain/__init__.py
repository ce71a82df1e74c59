"""Dynamic Margin off-chain tooling.

Data flows one way through the modules, top to bottom:

prices -> volatility -> risk_measures -> calibration -> signing -> chain -> bots.
A module imports only from the stages above it.
"""

__version__ = "0.1.0"
WAD = 10**18
