"""Code shared by the workflow, the activities, the gateway and the worker.

Nothing here performs I/O at import time, so the workflow sandbox may import
`common.models` and `common.errors` freely.
"""
