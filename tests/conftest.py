"""Shared fixtures: a real nats-server and a real tritonserver, each once per session."""
pytest_plugins = [
    "tests.integration.fixtures_nats",
    "tests.integration.fixtures_triton",
    "tests.integration.conftest_gateway",
]
