"""Configuration of the Chainlit UI, read from the environment (and ``.env``).

Every field maps to the environment variable of the same name in upper case:

- ``GATEWAY_URL`` (``http://127.0.0.1:8000``): the gateway, the UI's only backend.
- ``GATEWAY_API_KEY``: the UI's own API key for the gateway (``make up`` generates it).
- ``UI_HOST`` (``127.0.0.1``) and ``UI_PORT`` (``8501``): where Chainlit listens.
- ``DATABASE_URL`` (``postgresql://postgres@127.0.0.1:5433/durable_chat``): the database of
  Chainlit's data layer (users, conversations, messages); the same one as the backend's.
- ``CHAINLIT_AUTH_SECRET`` (required): signs Chainlit's login tokens.
- ``UI_USERNAME`` (``admin``) and ``UI_PASSWORD``: a password login from the environment
  (optional when ``UI_USERS_FILE`` has users).
- ``UI_USERS_FILE``: password users, names and scrypt hashes (``python -m ui.users add``).
- ``UI_TRUSTED_USER_HEADER``: behind an authenticating proxy, the header naming the user
  (e.g. ``X-Forwarded-User``): Chainlit's header login. OAuth/OIDC providers: Chainlit's
  own ``OAUTH_*`` variables (docs/security.md).
- ``USER_ASSERTION_SECRET``: signs the user assertion the UI sends the gateway with each
  request, so the gateway sees the person, not the UI (the gateway has the same secret).
- ``TEMPORAL_UI_URL`` (``http://localhost:8233``) and ``TEMPORAL_NAMESPACE`` (``default``):
  the links to each workflow's history.
- ``UI_UPDATE_INTERVAL_S`` (``0.1``): shortest pause between two updates of a reply on
  screen while its answer streams.
- ``UI_RECONNECT_GIVE_UP_S`` (``300``): how long the UI keeps reconnecting to a chat's
  event stream while the gateway is unreachable before it says so and stops.
- ``UI_GATEWAY_TIMEOUT_S`` (``10``): timeout of one gateway request (and of connecting
  to the event stream).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class UISettings(BaseSettings):
    """Everything the UI reads from its environment; secrets have no default."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8000"
    gateway_api_key: SecretStr | None = None
    ui_host: str = "127.0.0.1"
    ui_port: int = 8501
    database_url: str = "postgresql://postgres@127.0.0.1:5433/durable_chat"
    chainlit_auth_secret: SecretStr
    ui_username: str = "admin"
    ui_password: SecretStr | None = None
    ui_users_file: Path | None = None
    ui_trusted_user_header: str | None = None
    user_assertion_secret: SecretStr | None = None
    temporal_ui_url: str = "http://localhost:8233"
    temporal_namespace: str = "default"
    ui_update_interval_s: float = Field(default=0.1, gt=0)
    ui_reconnect_give_up_s: float = Field(default=300.0, gt=0)
    ui_gateway_timeout_s: float = Field(default=10.0, gt=0)

    @property
    def asyncpg_dsn(self) -> str:
        """``DATABASE_URL`` in the form asyncpg accepts (no SQLAlchemy driver suffix)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@lru_cache(maxsize=1)
def get_settings() -> UISettings:
    """The process-wide settings, read once."""
    return UISettings()  # type: ignore[call-arg]  # fields come from the environment
