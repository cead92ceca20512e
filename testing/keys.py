"""API keys of the test users, which the stacks of testing.stack give their gateways."""

from __future__ import annotations

from common.codec import EncryptionCodec, parse_keys

# API keys of the test stacks' gateways: user -> key.
TEST_API_KEYS = {
    "tester": "test-key-tester-0123456789",
    "other": "test-key-other-0123456789",
    "ui": "test-key-ui-0123456789abc",
    # The browser tests' UI users, as the gateway sees them when the UI acts for them
    # (their own keys let a test read what the UI started for each).
    "browser-test": "test-key-browser-test-0123456789",
    "browser-two": "test-key-browser-two-0123456789",
    # Users of tests/test_access_control.py only: limits are per user and shared by every
    # gateway of a stack (PostgreSQL, visibility), so no other test may count against them.
    "owner": "test-key-owner-0123456789",
    "intruder": "test-key-intruder-0123456789",
    "rate": "test-key-rate-0123456789ab",
    "busy": "test-key-busy-0123456789ab",
    # The one OPERATOR_USERS user of the test stack: may read histories through /codec.
    "operator": "test-key-operator-0123456789",
    # The chaos suite's one user (chaos/stack.py): its stacks know no other.
    "chaos": "chaos-suite-key-0123456789abcdef",
}


def auth_headers(user: str = "tester") -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_KEYS[user]}"}


# Payload keys of the test stack (common/codec.py): test-1 is active; test-2 is what a
# rotation test makes active. Fixed, so a history recorded encrypted replays later.
TEST_PAYLOAD_KEYS = (
    "test-1:wZZH/r0zKNBK47oTpAtNLd52u1XVdJT66kwsjrpOsEM=,"
    "test-2:5Tso1RZWxRIKgMkCIGrc+d++Xkk+9hVe9h3EUppejos="
)


def test_codec(active: str = "test-1") -> EncryptionCodec:
    """The codec the test stack's processes use (with `active` encrypting)."""
    return EncryptionCodec(parse_keys(TEST_PAYLOAD_KEYS), active)


# Signs the UI's user assertions in the browser stack (ui/assertions.py).
TEST_USER_ASSERTION_SECRET = "test-user-assertion-secret-0123456789"
