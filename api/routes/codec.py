"""/codec: Temporal's remote codec protocol, for operators reading encrypted histories.

`POST /codec/decode` and `POST /codec/encode` take and return a `Payloads` message in
protobuf JSON, as the Temporal Web UI (`temporal server start-dev --ui-codec-endpoint`,
or the UI's codec server setting) and CLI (`--codec-endpoint`, `--codec-auth`) send it.
Allowed: an API key of an OPERATOR_USERS user, or a browser on one of
CODEC_TRUSTED_ORIGINS (CORS answered for those only). docs/security.md says what a
deployment must configure.
"""

from __future__ import annotations

from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Header, Path, Request, Response
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payloads

from api.auth import current_user
from api.deps import SettingsDep
from common.codec import EncryptionCodec, PayloadKeyError
from common.errors import ChatNotFoundError, InvalidRequestError, NotAuthenticatedError

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/codec", tags=["operators"], include_in_schema=False)

Action = Annotated[Literal["encode", "decode"], Path()]
_MAX_BODY = 8 * 1024 * 1024


def _cors(origin: str | None, settings: SettingsDep) -> dict[str, str]:
    if origin is None or origin.rstrip("/") not in settings.codec_origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, X-Namespace, Authorization",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


@router.options("/{action}")
async def preflight(
    action: Action, settings: SettingsDep, origin: Annotated[str | None, Header()] = None
) -> Response:
    return Response(status_code=204, headers=_cors(origin, settings))


@router.post("/{action}")
async def codec(
    action: Action,
    request: Request,
    settings: SettingsDep,
    origin: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Response:
    cors = _cors(origin, settings)
    if not cors:  # not the trusted UI: an operator's key
        user = current_user(request, settings, authorization, x_api_key)
        if user not in settings.operators:
            raise NotAuthenticatedError(
                "The codec endpoint is for operators: this key's user is not in OPERATOR_USERS."
            )
    payload_codec: EncryptionCodec | None = request.app.state.codec
    if payload_codec is None:
        raise ChatNotFoundError("codec", "Payload encryption is off: there is nothing to decode.")
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise InvalidRequestError("At most 8 MiB of payloads per request.")
    try:
        payloads = json_format.Parse(body, Payloads())
        if action == "decode":
            out = await payload_codec.decode(payloads.payloads)
        else:
            out = await payload_codec.encode(payloads.payloads)
    except (json_format.ParseError, DecodeError) as err:
        raise InvalidRequestError(f"Not a Payloads message in protobuf JSON: {err}") from err
    except PayloadKeyError as err:
        raise InvalidRequestError(str(err)) from err
    log.info("codec used", action=action, payloads=len(out), via="ui" if cors else "key")
    return Response(
        json_format.MessageToJson(Payloads(payloads=out)),
        media_type="application/json",
        headers=cors,
    )
