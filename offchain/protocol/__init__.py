"""What mirrors and talks to the contracts: the registry's maths in Python (``margin_math``),
EIP-712 signing, typed JSON-RPC clients, the transaction sender and the deployment config.
Imports none of ``risk``, ``bots`` or ``devnet``."""
