"""API keys of the test users, which the stacks of testing.stack give their gateways."""

from __future__ import annotations

# API keys of the test stacks' gateways: user -> key.
TEST_API_KEYS = {
    "tester": "test-key-tester-0123456789",
    "other": "test-key-other-0123456789",
    "ui": "test-key-ui-0123456789abc",
    # Users of tests/test_access_control.py only: limits are per user and shared by every
    # gateway of a stack (PostgreSQL, visibility), so no other test may count against them.
    "owner": "test-key-owner-0123456789",
    "intruder": "test-key-intruder-0123456789",
    "rate": "test-key-rate-0123456789ab",
    "busy": "test-key-busy-0123456789ab",
    # The chaos suite's one user (chaos/stack.py): its stacks know no other.
    "chaos": "chaos-suite-key-0123456789abcdef",
}


def auth_headers(user: str = "tester") -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_KEYS[user]}"}
