"""Benchmarks: gas on ape's local network, timings on this machine."""
