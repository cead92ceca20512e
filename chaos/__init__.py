"""Chaos suite of durable-chat: faults injected while chats run, invariants checked.

`python -m chaos` runs the scenarios (see `chaos.scenarios`) on a local stack started
for the purpose; `python -m chaos.load` runs the load test. docs/reliability.md has
the figures and explains each fault.
"""
