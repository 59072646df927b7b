"""Fuzz every operation of the OpenAPI schema with schemathesis: no request gets a 5xx."""

from __future__ import annotations

import contextlib
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from ._util import auth

schemathesis = pytest.importorskip("schemathesis")

# More with PRIVRANK_FUZZ_EXAMPLES=500 (the default keeps `make test` quick).
EXAMPLES_PER_OPERATION = int(os.environ.get("PRIVRANK_FUZZ_EXAMPLES", "10"))


def test_no_request_gets_a_server_error(make_client, model_dir, keys) -> None:
    client = make_client(model_dir=model_dir, rate_limit=0)
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    headers = auth(keys["admin"])
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")
            assert response.status_code < 500

        with contextlib.suppress(AssertionError):  # recorded above; fuzz the other operations
            fuzz()
    assert failures == []
    # The fuzzer got past validation too, not only 4xx answers.
    assert statuses[200] > 0 and statuses[422] > 0, statuses
