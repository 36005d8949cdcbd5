"""Benchmarks (`python -m mdw bench ...`): methods side by side in one run, tables written to files."""
