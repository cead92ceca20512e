"""durable-chat's Chainlit UI: a chat that talks only to the gateway over HTTP.

Run it with ``python -m ui`` (see ``ui/__main__.py``); the handlers are in ``ui/app.py``.

Chainlit reads its app root (``.chainlit/`` config, ``chainlit.md``, scratch ``.files/``)
from ``CHAINLIT_APP_ROOT`` when it is first imported, and creates what is missing there.
Importing this package points that root at ``ui/`` unless it is already set, so nothing
that imports the UI's modules writes Chainlit files into the current directory.
"""

import os
from pathlib import Path

os.environ.setdefault("CHAINLIT_APP_ROOT", str(Path(__file__).resolve().parent))
