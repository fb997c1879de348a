"""Experiments whose findings are kept (EXPERIMENTS.md, benchmarks/results/) but whose code ships nothing."""
