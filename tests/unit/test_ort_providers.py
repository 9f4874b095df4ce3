"""ONNX Runtime provider choice for the stage models (proto/ort_providers.py)."""
from __future__ import annotations

import onnxruntime as ort
import pytest

from proto.ort_providers import (
    DEFAULT_PROVIDERS,
    choose_providers,
    preferred_providers,
    session_providers,
)


def test_default_order_prefers_tensorrt_then_cuda_then_cpu() -> None:
    assert preferred_providers({}) == list(DEFAULT_PROVIDERS)
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(DEFAULT_PROVIDERS, gpu_build) == gpu_build


def test_missing_providers_are_skipped_and_cpu_is_always_last() -> None:
    assert choose_providers(DEFAULT_PROVIDERS, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider"],
                            ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_configured_order_is_read_from_the_environment() -> None:
    env = {"LIPSYNCD_ORT_PROVIDERS": " CUDAExecutionProvider , CPUExecutionProvider "}
    assert preferred_providers(env) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_a_misspelt_provider_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="LIPSYNCD_ORT_PROVIDERS.*cuda"):
        choose_providers(["cuda"], ["CPUExecutionProvider"])


def test_this_build_gets_only_what_it_has() -> None:
    """On this machine's CPU wheel the GPU defaults fall back to the CPU provider (the stage
    tests then run real sessions with that list)."""
    providers = session_providers({})
    available = ort.get_available_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert all((p if isinstance(p, str) else p[0]) in available for p in providers)
