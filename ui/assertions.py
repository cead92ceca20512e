"""Signed, short-lived user assertions: how the UI calls the gateway as the person.

The UI holds one service API key (GATEWAY_API_KEY). With USER_ASSERTION_SECRET set it
adds `X-Durable-Chat-User: v1.<user, base64url>.<expiry, unix s>.<HMAC-SHA256>` to
every request, so the gateway's privacy, limits and costs apply to the person logged
in. The gateway accepts an assertion only with a key of UI_SERVICE_USERS (docs/security.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

HEADER = "X-Durable-Chat-User"
TTL_S = 60


def user_assertion(user: str, secret: bytes, now: float | None = None) -> str:
    expiry = int((time.time() if now is None else now) + TTL_S)
    name = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
    signed = f"v1.{name}.{expiry}"
    signature = hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()
    return f"{signed}.{signature}"
