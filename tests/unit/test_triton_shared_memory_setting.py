"""When the orchestrator passes tensors to Triton through shared memory: only when every
Triton is on this host, unless the setting says otherwise."""
from __future__ import annotations

import pytest

from orchestrator.settings import OrchestratorSettings


@pytest.mark.parametrize(("urls", "setting", "on"), [
    ("", "auto", True),  # the default triton_url, 127.0.0.1
    ("127.0.0.1:8011,localhost:8021,[::1]:8031", "auto", True),
    ("127.0.0.1:8011,triton-1.triton:8001", "auto", False),  # one server on another host
    ("triton-0.triton:8001", "auto", False),
    ("triton-0.triton:8001", "true", True),
    ("127.0.0.1:8011", "false", False),
])
def test_shared_memory_is_on_for_a_triton_on_this_host(urls: str, setting: str, on: bool) -> None:
    settings = OrchestratorSettings(triton_urls=urls, triton_shared_memory=setting)  # type: ignore[arg-type]
    assert settings.triton_shared_memory_on is on


def test_an_unknown_value_is_refused() -> None:
    with pytest.raises(ValueError, match="triton_shared_memory"):
        OrchestratorSettings(triton_shared_memory="yes")  # type: ignore[arg-type]
