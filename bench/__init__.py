"""Benchmarks of durable-chat against the real stack (see docs/benchmarks.md).

Run one with `python -m bench.<name> --size tiny|full`, or all with
`python -m bench.run_all`. Each starts its own stack on free ports
(`testing.stack.LocalStack`) and stops every process it started, by pid.
"""
