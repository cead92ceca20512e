"""The local stack behind `make up`: embedded PostgreSQL, the Temporal dev server, the
LLM simulator, a worker fleet, the gateway and the UI, supervised by circus.

Circus restarts a process that dies (e.g. a worker killed with `kill -9`) and leaves
the others running; Ctrl-C stops everything cleanly.
"""
