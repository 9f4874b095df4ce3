"""Which ONNX Runtime execution providers the stage models run on.

LIPSYNCD_ORT_PROVIDERS lists them in order of preference (comma-separated); the default
prefers TensorRT, then CUDA, then the CPU. Providers this onnxruntime build lacks (the CPU
wheel has only the CPU one) are skipped, and the CPU provider always comes last, so a GPU
image on a CPU node still serves. The stage processes are Triton's Python backend stubs,
which have no settings module; this is the one place in them that reads the environment.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

PROVIDERS_ENV = "LIPSYNCD_ORT_PROVIDERS"
TRT_CACHE_ENV = "LIPSYNCD_TRT_CACHE_DIR"
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = "CPUExecutionProvider"


def preferred_providers(environ: Mapping[str, str] | None = None) -> list[str]:
    """The configured order: LIPSYNCD_ORT_PROVIDERS, else TensorRT, CUDA, CPU."""
    raw = (os.environ if environ is None else environ).get(PROVIDERS_ENV, "")
    names = [part.strip() for part in raw.split(",") if part.strip()]
    return names or list(DEFAULT_PROVIDERS)


def choose_providers(preferred: Sequence[str], available: Sequence[str]) -> list[str]:
    """The preferred providers this build has, in the preferred order, CPU last."""
    unknown = [name for name in preferred if not name.endswith("ExecutionProvider")]
    if unknown:
        raise ValueError(f"{PROVIDERS_ENV}: not execution provider names: {', '.join(unknown)}")
    chosen = [name for name in preferred if name in available and name != CPU]
    return [*dict.fromkeys(chosen), CPU]


def session_providers(environ: Mapping[str, str] | None = None) -> list[Any]:
    """Providers for ort.InferenceSession(..., providers=...), with TensorRT's engine cache
    (LIPSYNCD_TRT_CACHE_DIR, e.g. the plans `make engines` built) when TensorRT is chosen."""
    env = os.environ if environ is None else environ
    chosen = choose_providers(preferred_providers(env), ort.get_available_providers())
    skipped = [name for name in preferred_providers(env) if name not in chosen]
    if skipped:
        log.info("ONNX Runtime providers not in this build, skipped: %s", ", ".join(skipped))
    cache = env.get(TRT_CACHE_ENV, "")
    providers: list[Any] = []
    for name in chosen:
        if name == "TensorrtExecutionProvider" and cache:
            Path(cache).mkdir(parents=True, exist_ok=True)
            providers.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                     "trt_fp16_enable": True}))
        else:
            providers.append(name)
    return providers
