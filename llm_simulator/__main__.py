"""``python -m llm_simulator``: serve the simulator with uvicorn on ``SIM_HOST``:``SIM_PORT``.

Runs in the foreground until SIGINT/SIGTERM (handled by uvicorn: stop accepting, let open
responses finish for up to a few seconds, then exit 0), so it fits a process manager.
Logging is left unconfigured here; uvicorn logs at level ``warning``.
"""

from __future__ import annotations

import uvicorn

from llm_simulator.app import create_app
from llm_simulator.settings import SimulatorSettings

#: Seconds open streams get to finish after SIGTERM before they are cut.
GRACEFUL_SHUTDOWN_S = 5


def main() -> None:
    """Read the settings from the environment and serve until signalled."""
    settings = SimulatorSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    main()
