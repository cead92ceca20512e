"""Encrypted payloads: an AES-GCM `PayloadCodec` for every Temporal client and worker.

With PAYLOAD_ENCRYPTION_KEYS set, every payload the SDK writes (workflow and activity
inputs and results, heartbeat details, query answers, the summaries shown in the
Temporal UI) is stored encrypted: `encoding: binary/encrypted`, the id of the key in
`encryption-key-id`, the data a 12-byte random nonce followed by the AES-256-GCM
ciphertext (with its tag) of the original payload, serialised. Decoding picks the key by
that id, so keys rotate: add a new key, make it active (PAYLOAD_ENCRYPTION_KEY_ID), and
keep the old ones as long as a history written under them may be read (the chat's
retention); payloads without the encrypted encoding (histories written before
encryption was turned on) pass through unchanged.

Operators read histories through the codec endpoint (`/codec/decode` on the gateway,
docs/security.md). Keys come from settings, are never logged, and never reach a
workflow.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Sequence

import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_NONCE_BYTES = 12


class PayloadKeyError(ValueError):
    """A payload names a key this process does not have, or its key does not open it."""


def parse_keys(raw: str) -> dict[str, bytes]:
    """`"k1:<base64 of 32 bytes>,k2:..."` -> `{"k1": b"...", "k2": b"..."}`."""
    keys: dict[str, bytes] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key_id, sep, encoded = pair.partition(":")
        try:
            key = base64.b64decode(encoded, validate=True) if sep else b""
        except binascii.Error:
            key = b""
        if not key_id or len(key) != 32:
            raise ValueError(
                "PAYLOAD_ENCRYPTION_KEYS must be id:key pairs, each key 32 bytes in base64 "
                "(python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
            )
        keys[key_id] = key
    return keys


def new_key() -> str:
    """A fresh 256-bit key, base64 (what `make up` generates)."""
    return base64.b64encode(os.urandom(32)).decode()


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """AES-256-GCM with the active key; decodes with whichever key a payload names."""

    def __init__(self, keys: dict[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError(f"PAYLOAD_ENCRYPTION_KEY_ID {active_key_id!r} is not a known key id")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key_id = active_key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.active_key_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self.active_key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; one that is not encrypted is returned as it is."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode()
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"a payload is encrypted with key {key_id!r}, which this process does not "
                "have (PAYLOAD_ENCRYPTION_KEYS must keep every key still in use)"
            )
        try:
            plain = cipher.decrypt(payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:], None)
        except InvalidTag as err:
            raise PayloadKeyError(f"a payload does not open with key {key_id!r}") from err
        return Payload.FromString(plain)


def data_converter(codec: EncryptionCodec | None) -> temporalio.converter.DataConverter:
    """The SDK's default converter, with `codec` when encryption is on."""
    default = temporalio.converter.DataConverter.default
    return default if codec is None else dataclasses.replace(default, payload_codec=codec)
