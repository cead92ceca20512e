"""Start the Chainlit UI: ``python -m ui`` (from any directory).

Chainlit keeps its config (``.chainlit/config.toml``), ``chainlit.md`` and scratch files
in its app root; this launcher points that root at ``ui/`` (``CHAINLIT_APP_ROOT``) and
passes host and port from ``UI_HOST`` / ``UI_PORT``. Extra arguments go to
``chainlit run`` (for example ``--debug``). Equivalent by hand, from the repo root:

    CHAINLIT_APP_ROOT=ui chainlit run ui/app.py --headless --host 127.0.0.1 --port 8501
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

UI_DIR = Path(__file__).resolve().parent


def main(argv: list[str]) -> None:
    # Must be set before chainlit is imported: its config module reads it at import.
    os.environ["CHAINLIT_APP_ROOT"] = str(UI_DIR)
    from pydantic import ValidationError

    from ui.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        missing = ", ".join(str(error["loc"][0]).upper() for error in exc.errors())
        message = f"The UI's configuration is incomplete: set {missing} (see ui/settings.py)."
        raise SystemExit(message) from None
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", settings.chainlit_auth_secret.get_secret_value())

    from chainlit.cli import cli

    args = [
        "run",
        str(UI_DIR / "app.py"),
        "--headless",
        "--host",
        settings.ui_host,
        "--port",
        str(settings.ui_port),
        *argv,
    ]
    cli.main(args=args, prog_name="chainlit")


if __name__ == "__main__":
    main(sys.argv[1:])
