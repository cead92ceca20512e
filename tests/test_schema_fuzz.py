"""Property-based fuzzing of the gateway from its own OpenAPI schema (schemathesis).

Every operation gets generated requests; the checks are schemathesis's defaults: no
5xx, status codes and bodies as the schema documents them, correct content types.
The SSE route is left out (an endless stream is not a response schemathesis can
validate); its bad inputs are covered by tests/test_events.py. Driven with Hypothesis
directly (schemathesis's pytest fixture loader does not run on this pytest version).
"""

from __future__ import annotations

import schemathesis

# Imported here, at collection, not lazily inside the test: pytest rewrites
# schemathesis's modules (a pytest plugin) with the ast module, whose recursion
# counter CPython 3.11.7 leaves wrong after an earlier failed conversion in the
# same process (python/cpython#106905): in one CI run, after another test had timed out,
# this import failed with "AST constructor recursion depth mismatch".
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from testing.keys import auth_headers
from testing.stack import LocalStack

MAX_EXAMPLES = 10


def test_gateway_conforms_to_its_schema(stack: LocalStack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway_url}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if not result.ok().path.endswith("/events")
    ]
    assert len(operations) >= 5

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:  # type: ignore[no-untyped-def]
            for limit in ("max_tokens", "max_output_tokens", "max_completion_tokens"):
                if isinstance(case.body, dict) and isinstance(case.body.get(limit), int):
                    case.body[limit] = max(1, min(case.body[limit], 50))  # short chats
            case.call_and_validate(
                headers=auth_headers(),
                timeout=30,
                # A schema-valid prompt can still be refused with 422 for what JSON Schema
                # cannot say (only blanks, control characters): documented, not a bug.
                excluded_checks=[positive_data_acceptance],
            )

        check()
