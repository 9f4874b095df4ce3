"""Schemathesis against the gateway's own OpenAPI schema: generated
requests to every operation of a live gateway, with a valid API key and without, must
never get a 5xx. Bounded (30 examples per operation) so it runs in well under a minute."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.integration.live_gateway import LiveGateway, start_live_gateway

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzzed_gateway(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str
) -> Iterator[LiveGateway]:
    with contextmanager(start_live_gateway)(tmp_path_factory.mktemp("fuzz"), nats_url) as live:
        yield live


@pytest.fixture(scope="module")
def api_key(fuzzed_gateway: LiveGateway) -> str:
    return fuzzed_gateway.make_account(api_credits=1_000_000)[1]


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None,
    suppress_health_check=list(HealthCheck), derandomize=True,
)


def fuzz_every_operation(live: LiveGateway, headers: dict[str, str]) -> None:
    """Each operation's generated cases (schemathesis strategies run by hypothesis here,
    not by its pytest plugin): every answer must be below 500 and the gateway alive."""
    # /readyz answers 503 on purpose here (no Triton): it is the one designed 5xx.
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json").exclude(path="/readyz")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    calls: dict[str, int] = {}
    for operation in operations:

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=headers, timeout=30)
            calls[operation.label] = calls.get(operation.label, 0) + 1
            case.validate_response(response, checks=[not_a_server_error])

        check()
        assert live.process.poll() is None, f"the gateway died fuzzing {operation.label}"
    print(f"fuzzed {sum(calls.values())} requests over {len(calls)} operations: {calls}")
    assert len(calls) == len(operations)


def test_no_request_with_a_valid_key_gets_a_server_error(
    fuzzed_gateway: LiveGateway, api_key: str
) -> None:
    fuzz_every_operation(fuzzed_gateway, {"Authorization": f"Bearer {api_key}"})
    assert fuzzed_gateway.healthy()


def test_no_request_without_a_key_gets_a_server_error(fuzzed_gateway: LiveGateway) -> None:
    fuzz_every_operation(fuzzed_gateway, {})
    assert fuzzed_gateway.healthy()
