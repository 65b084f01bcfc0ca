"""Shared test set-up. No oracle wiring here: a ``System`` installs the
oracles itself (tests/oracles/test_wiring.py checks that in a fresh
interpreter)."""

pytest_plugins = ["pytester"]
