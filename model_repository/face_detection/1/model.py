"""Triton Python-backend adapter for the face_detection stage: tensors in, FaceMesh, tensors out.

The logic lives in facemesh.py beside this file; this module only maps Triton tensors.
"""

import os
import sys

# The Python backend stub ignores PYTHONPATH; LIPSYNCD_STAGE_PYTHONPATH carries the venv.
for _entry in reversed(os.environ.get("LIPSYNCD_STAGE_PYTHONPATH", "").split(":")):
    if _entry and _entry not in sys.path:
        sys.path.insert(0, _entry)

import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from proto.stage_refusal import refusal  # noqa: E402

MODEL_DIR = Path(__file__).resolve().parent
if str(MODEL_DIR) not in sys.path:
    sys.path.insert(0, str(MODEL_DIR))

from facemesh import NUM_LANDMARKS, FaceMesh  # noqa: E402

logger = logging.getLogger("face_detection")

DEFAULT_MAX_FACES = 4


def _optional_input(request: Any, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _max_faces(request: Any) -> int:
    value = _optional_input(request, "max_faces")
    return DEFAULT_MAX_FACES if value is None or value.size == 0 else int(value.reshape(-1)[0])


class TritonPythonModel:
    """One FaceMesh per model instance; requests are served one at a time."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("num_threads", {}).get("string_value", "1")
        self._face_mesh = FaceMesh(MODEL_DIR, num_threads=int(threads))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._execute_one(request))
            except ValueError as error:
                logger.warning("face_detection rejected a request: %s", error)
                responses.append(refusal(pb_utils, str(error)))
        return responses

    def _execute_one(self, request: Any) -> Any:
        # FaceMesh converts gray / RGBA and raises ValueError for other shapes.
        image = _optional_input(request, "image")
        frames = _optional_input(request, "frames")
        if (image is None) == (frames is None):
            raise ValueError("send exactly one of image [H, W, C] and frames [N, H, W, 3]")
        prior_boxes = _optional_input(request, "prior_boxes")
        max_faces = _max_faces(request)
        found: list[tuple[int, Any]] = []
        if image is not None:
            found = [(0, face) for face in self._face_mesh.detect(image, max_faces=max_faces, prior_boxes=prior_boxes)]
        else:
            assert frames is not None
            prior = prior_boxes
            for index, frame in enumerate(frames):
                faces = self._face_mesh.detect(frame, max_faces=max_faces, prior_boxes=prior)
                if not faces and prior is not None and len(prior):  # lost the track: a cut or an occlusion
                    faces = self._face_mesh.detect(frame, max_faces=max_faces)
                found += [(index, face) for face in faces]
                prior = np.array([face.box for face in faces], dtype=np.float32).reshape(-1, 4) if faces else None
        boxes = np.array([f.box for _, f in found], dtype=np.float32).reshape(-1, 4)
        scores = np.array([f.score for _, f in found], dtype=np.float32).reshape(-1)
        landmarks = np.array([f.landmarks for _, f in found], dtype=np.float32).reshape(-1, NUM_LANDMARKS, 3)
        frame_index = np.array([i for i, _ in found], dtype=np.int32).reshape(-1)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("boxes", boxes),
                pb_utils.Tensor("scores", scores),
                pb_utils.Tensor("landmarks", landmarks),
                pb_utils.Tensor("frame_index", frame_index),
            ]
        )

    def finalize(self) -> None:
        logger.info("face_detection unloaded")
