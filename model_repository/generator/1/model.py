"""Triton Python-backend adapter of the `generator` stage; the logic lives in `lipwarp`
(parametric mouths) and `transplant_batch` (requests with the optional `reference` inputs).

The stub ignores PYTHONPATH, so the LIPSYNCD_STAGE_PYTHONPATH bootstrap below runs before
any third-party import.
"""

import os
import sys

for _entry in reversed(os.environ.get("LIPSYNCD_STAGE_PYTHONPATH", "").split(":")):
    if _entry and _entry not in sys.path:
        sys.path.insert(0, _entry)
_HERE = os.path.dirname(os.path.abspath(__file__))
# one core per stage instance: a multi-threaded BLAS only adds spin-waiting to the small solves
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from lipwarp.render import Renderer  # noqa: E402
from proto.stage_refusal import refusal  # noqa: E402
from transplant_batch import TransplantRenderer  # noqa: E402

log = logging.getLogger(__name__)
_LIBC_NAME = ctypes.util.find_library("c")  # looked up once: it runs ldconfig
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None

MAX_FRAMES_PER_REQUEST = 4096


class TritonPythonModel:
    """source [N,S,S,3] u8 + source_landmarks [N,468,3] + mouth_params [T,8] + motion [T,4]
    (+ optional reference [M,S,S,3] u8 + reference_landmarks [M,468,3] + reference_opening [M])
    -> frames [T,S,S,3] u8, mask [T,S,S] f32 (N, M = 1 or T)."""

    def initialize(self, args: dict[str, Any]) -> None:
        threads = int(os.environ.get("LIPSYNCD_GENERATOR_THREADS", "1"))
        self._renderer = Renderer(Path(_HERE), threads=threads)
        self._transplant = TransplantRenderer(Path(_HERE), threads=threads, opener=self._renderer)

    def execute(self, requests: list[Any]) -> list[Any]:
        answers = [self._answer(request) for request in requests]
        _release_heap()
        return answers

    def _answer(self, request: Any) -> Any:
        def tensor(name: str) -> np.ndarray:
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

        try:
            mouth = tensor("mouth_params")
            if mouth.shape[0] > MAX_FRAMES_PER_REQUEST:
                return refusal(pb_utils, f"at most {MAX_FRAMES_PER_REQUEST} frames per request, got {mouth.shape[0]}")
            reference = pb_utils.get_input_tensor_by_name(request, "reference")
            reference_landmarks = pb_utils.get_input_tensor_by_name(request, "reference_landmarks")
            opening = pb_utils.get_input_tensor_by_name(request, "reference_opening")
            if (reference is None) != (reference_landmarks is None):
                return refusal(pb_utils, "reference and reference_landmarks must be sent together")
            if opening is not None and reference is None:
                return refusal(pb_utils, "reference_opening needs reference")
            if reference is not None:
                frames, masks = self._transplant.render(tensor("source"), tensor("source_landmarks"),
                                                        reference.as_numpy(), reference_landmarks.as_numpy(),
                                                        count=mouth.shape[0], mouth_params=mouth,
                                                        opening=opening.as_numpy() if opening is not None else None)
            else:
                frames, masks = self._renderer.render(tensor("source"), tensor("source_landmarks"), mouth,
                                                      tensor("motion"))
        except ValueError as exc:
            log.warning("generator refused a request: %s", exc)
            return refusal(pb_utils, str(exc))
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("frames", frames),
            pb_utils.Tensor("mask", masks),
        ])

    def finalize(self) -> None:
        del self._renderer, self._transplant


def _release_heap() -> None:
    """Hand freed heap back to the system after each request: without it glibc keeps the
    largest batch's buffers (a 720p job's) for as long as the instance lives."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)

