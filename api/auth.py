"""Who is calling: API keys (bearer tokens) from `API_KEYS`, and per-user limits.

`API_KEYS` lists `user:key` pairs separated by commas (`make up` generates one for
the developer and one for the Chainlit UI). A request carries its key as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Keys are looked up by their
SHA-256 (one dictionary lookup: no comparison loop whose time depends on where the
matching key is, nor on how much of a wrong key matches) and never logged; workflows
only ever see the user id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Annotated

from fastapi import Depends, Header, Request

from api.deps import SettingsDep
from common.errors import NotAuthenticatedError
from common.settings import Settings

ANONYMOUS = "anonymous"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(raw: str) -> dict[bytes, str]:
    """`"alice:k1,bob:k2"` -> `{sha256(k1): "alice", sha256(k2): "bob"}`; malformed pairs
    are refused."""
    keys: dict[bytes, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        user, sep, key = pair.partition(":")
        if not sep or not user or len(key) < 16:
            raise ValueError("API_KEYS must be user:key pairs with keys of 16+ characters")
        if '"' in user or "\\" in user:
            # Temporal's visibility cannot match such a ChatUserId (no quoting works), so
            # the user's running chats could not be counted.
            raise ValueError(f"API_KEYS: user {user!r} must not contain '\"' or '\\'")
        keys[key_digest(key)] = user
    return keys


def _keys(settings: Settings) -> dict[bytes, str]:
    raw = settings.api_keys.get_secret_value() if settings.api_keys else ""
    return parse_api_keys(raw)


ASSERTION_HEADER = "X-Durable-Chat-User"


def asserted_user(assertion: str, secret: bytes, now: float | None = None) -> str:
    """The user of a `v1.<user>.<expiry>.<hmac>` assertion (ui/assertions.py);
    NotAuthenticatedError when it is malformed, forged or expired."""
    try:
        version, name, expiry, signature = assertion.split(".")
        user = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        expires_at = int(expiry)
    except (ValueError, UnicodeDecodeError) as err:
        raise NotAuthenticatedError("The user assertion is malformed.") from err
    expected = hmac.new(secret, f"{version}.{name}.{expiry}".encode(), hashlib.sha256).hexdigest()
    if version != "v1" or not hmac.compare_digest(signature, expected):
        raise NotAuthenticatedError("The user assertion is not valid.")
    if expires_at < (time.time() if now is None else now):
        raise NotAuthenticatedError("The user assertion has expired.")
    if not user or '"' in user or "\\" in user or len(user) > 200:
        raise NotAuthenticatedError("The user assertion names no valid user.")
    return user


def current_user(
    request: Request,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
    x_durable_chat_user: Annotated[str | None, Header()] = None,
) -> str:
    """The user the request acts for: its API key's, or, for a key of UI_SERVICE_USERS
    presenting a signed user assertion (`X-Durable-Chat-User`), the asserted person.
    401 without a valid key; an assertion from any other key is refused."""
    key_user = _key_user(request, settings, authorization, x_api_key)
    if x_durable_chat_user is None or not settings.auth_enabled:
        return key_user
    secret = settings.user_assertion_secret
    if secret is None or key_user not in settings.ui_service_user_set:
        raise NotAuthenticatedError(
            "Only the UI's service key may act for a user (UI_SERVICE_USERS, "
            "USER_ASSERTION_SECRET)."
        )
    return asserted_user(x_durable_chat_user, secret.get_secret_value().encode())


def _key_user(
    request: Request,
    settings: Settings,
    authorization: str | None,
    x_api_key: str | None,
) -> str:
    """The user id the request's API key belongs to; 401 without a valid key."""
    if not settings.auth_enabled:
        return ANONYMOUS
    presented = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        presented = authorization[7:].strip()
    if not presented:
        raise NotAuthenticatedError("An API key is required: send 'Authorization: Bearer <key>'.")
    keys: dict[bytes, str] = request.app.state.api_keys
    user = keys.get(key_digest(presented))
    if user is None:
        raise NotAuthenticatedError("This API key is not valid.")
    return user


CurrentUser = Annotated[str, Depends(current_user)]


def load_api_keys(settings: Settings) -> dict[bytes, str]:
    """Parsed once at start-up (a malformed API_KEYS stops the gateway with a clear error)."""
    return _keys(settings)
