"""What tests, benchmarks, chaos runs and capacity measurements use to start, drive and
check durable-chat: one of each, never shipped (`pip install .` leaves it out).

    testing.stack      the stack on free ports (the processes `make up` runs)
    testing.keys       the API keys of test users
    testing.chats      start a chat (gateway or Temporal), wait for a status, read chunks
    testing.sse        a chat's SSE stream, on httpx-sse
    testing.oracle     the simulator's answer to a request, without asking it
    testing.simulator  the simulator's controls (faults, pace, variant), a private one
    testing.workers    a worker on its own task queue; a worker identity to its process
    testing.operator   Temporal's CLI as the operator (terminate, reset, cancel, schedules)
"""
