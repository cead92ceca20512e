"""Chaos suite of durable-chat: faults injected while chats run, invariants checked.

`python -m chaos` runs the scenarios (see `chaos.scenarios`) on a local stack started
for the purpose. docs/reliability.md has the figures and explains each fault. The load
test is a benchmark now (`make load`: `python -m bench.load`, docs/benchmarks.md).
"""
