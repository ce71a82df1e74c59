"""The devnet: deploying a whole system on a local node, replaying prices into mock feeds, and
the demo (scenario, run, report)."""
