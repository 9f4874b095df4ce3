"""Triton Python-backend adapter of the `audio_features` stage; the logic lives in `mouthcues`.

The stub ignores PYTHONPATH, so the LIPSYNCD_STAGE_PYTHONPATH bootstrap below runs before
any third-party import.
"""

import os
import sys

for _entry in reversed(os.environ.get("LIPSYNCD_STAGE_PYTHONPATH", "").split(":")):
    if _entry and _entry not in sys.path:
        sys.path.insert(0, _entry)
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from mouthcues.acoustics import SAMPLE_RATE_HZ  # noqa: E402
from mouthcues.pipeline import MouthFeatures, extract_mouth_features  # noqa: E402
from mouthcues.recognition import PhoneRecognizer  # noqa: E402
from mouthcues.words import settings_from_parameters  # noqa: E402
from proto.stage_refusal import refusal  # noqa: E402

log = logging.getLogger(__name__)
_LIBC_NAME = ctypes.util.find_library("c")  # looked up once: it runs ldconfig
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None

MAX_AUDIO_S = 3600.0  # the product caps audio at 600 s; the stage refuses only absurd inputs


class TritonPythonModel:
    """audio (FP32 [-1], 16 kHz mono) + fps (FP32 [1]) (+ optional part INT32 [index, count])
    → mouth_params [T, 8], energy [T], phones (of that part of the audio)."""

    def initialize(self, args: dict[str, Any]) -> None:
        self._decoder = PhoneRecognizer(settings=settings_from_parameters(json.loads(args["model_config"]).get("parameters", {})))

    def execute(self, requests: list[Any]) -> list[Any]:
        answers = [self._answer(request) for request in requests]
        _release_heap()
        return answers

    def _answer(self, request: Any) -> Any:
        audio = np.asarray(pb_utils.get_input_tensor_by_name(request, "audio").as_numpy(), np.float32).reshape(-1)
        fps_values = pb_utils.get_input_tensor_by_name(request, "fps").as_numpy().reshape(-1)
        if fps_values.size != 1 or not np.isfinite(fps_values[0]) or fps_values[0] <= 0:
            return refusal(pb_utils, f"fps must be one positive number, got {fps_values.tolist()}")
        if audio.shape[0] > MAX_AUDIO_S * SAMPLE_RATE_HZ:
            return refusal(pb_utils, f"audio longer than {MAX_AUDIO_S:.0f} s")
        part = pb_utils.get_input_tensor_by_name(request, "part")
        index, count = (0, 1)
        if part is not None:
            values = part.as_numpy().reshape(-1)
            if values.size != 2:
                return refusal(pb_utils, f"part must be [index, count], got {values.tolist()}")
            index, count = int(values[0]), int(values[1])
        try:
            features = extract_mouth_features(audio, float(fps_values[0]), self._decoder, index, count)
        except ValueError as exc:
            log.warning("audio_features refused a request: %s", exc)
            return refusal(pb_utils, str(exc))
        return _response(features)

    def finalize(self) -> None:
        del self._decoder


def _response(features: MouthFeatures) -> Any:
    phones = np.array([segment.describe().encode() for segment in features.phones], dtype=np.object_)
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("mouth_params", features.mouth_params.astype(np.float32)),
            pb_utils.Tensor("energy", features.energy.astype(np.float32)),
            pb_utils.Tensor("phones", phones),
        ]
    )


def _release_heap() -> None:
    """Hand the heap freed by a long audio back to the system: the stub idles between jobs
    and would otherwise keep its largest request's worth of memory."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)

