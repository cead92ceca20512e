"""Deterministic workflow code. Nothing here performs I/O."""
