"""The tensor contracts of the three Triton stages, declared once: every input and output
(name, Triton datatype, shape with -1 for a dynamic size, optional or not) and the eight
`mouth_params` columns shared by `audio_features` and `generator`. model_repository's
config.pbtxt files and stage READMEs are checked against these declarations by a unit test
(tests/unit/test_stage_contracts.py), and the clients of proto/stageclient.py check every
request against them before sending it.

This module needs only numpy, so Triton's Python models can import it too."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MOUTH_PARAMS: tuple[str, ...] = (
    "jaw_open", "lip_open", "lip_width", "lip_round", "closure", "teeth", "tongue", "activity",
)
N_MOUTH_PARAMS = len(MOUTH_PARAMS)
N_LANDMARKS = 468  # MediaPipe Face Mesh
DEFAULT_MAX_FACES = 4

# Triton datatype -> numpy dtype (BYTES carries Python bytes objects in object arrays).
NUMPY_DTYPES: Mapping[str, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "BYTES": np.dtype(object),
}


class StageRequestError(ValueError):
    """A request that breaks a stage's contract (unknown or missing tensor, wrong dtype or
    shape) or that the stage refused as invalid: the caller's bug, never retried."""


class StageUnavailable(Exception):
    """Triton could not run a stage (server down, model not ready, internal failure): an
    infrastructure error, worth retrying."""


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str                 # Triton name: FP32, UINT8, INT32, BYTES
    shape: tuple[int, ...]        # -1: any size
    optional: bool = False

    @property
    def dtype(self) -> np.dtype:
        return NUMPY_DTYPES[self.datatype]

    def problem(self, array: np.ndarray) -> str | None:
        """Why `array` does not fit this tensor, or None."""
        if array.dtype != self.dtype:
            return f"{self.name}: dtype {array.dtype} where {self.dtype} ({self.datatype}) is expected"
        if array.ndim != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, array.shape, strict=True)
        ):
            wanted = "[" + ", ".join("*" if d == -1 else str(d) for d in self.shape) + "]"
            return f"{self.name}: shape {list(array.shape)} where {wanted} is expected"
        return None


@dataclass(frozen=True)
class StageContract:
    model: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    exactly_one_of: tuple[str, ...] = ()   # inputs of which one and only one is sent
    together: tuple[str, ...] = ()         # optional inputs sent all or none

    def input(self, name: str) -> Tensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise StageRequestError(f"{self.model} has no input {name!r}")

    def check_request(self, arrays: Mapping[str, np.ndarray], outputs: tuple[str, ...] = ()) -> None:
        """Raise StageRequestError unless the arrays are exactly a valid request."""
        problems = []
        for name in arrays:
            if name not in {t.name for t in self.inputs}:
                problems.append(f"unknown input {name!r}")
        for tensor in self.inputs:
            if tensor.name in arrays:
                problem = tensor.problem(np.asarray(arrays[tensor.name]))
                if problem:
                    problems.append(problem)
            elif not tensor.optional:
                problems.append(f"missing input {tensor.name!r}")
        if self.exactly_one_of and sum(name in arrays for name in self.exactly_one_of) != 1:
            problems.append("send exactly one of " + ", ".join(self.exactly_one_of))
        if self.together and 0 < sum(name in arrays for name in self.together) < len(self.together):
            problems.append(" and ".join(self.together) + " go together")
        known_outputs = {t.name for t in self.outputs}
        problems += [f"unknown output {name!r}" for name in outputs if name not in known_outputs]
        if problems:
            raise StageRequestError(f"{self.model}: " + "; ".join(problems))


AUDIO_FEATURES = StageContract(
    model="audio_features",
    inputs=(
        Tensor("audio", "FP32", (-1,)),
        Tensor("fps", "FP32", (1,)),
        Tensor("part", "INT32", (2,), optional=True),
    ),
    outputs=(
        Tensor("mouth_params", "FP32", (-1, N_MOUTH_PARAMS)),
        Tensor("energy", "FP32", (-1,)),
        Tensor("phones", "BYTES", (-1,)),
    ),
)

FACE_DETECTION = StageContract(
    model="face_detection",
    inputs=(
        Tensor("image", "UINT8", (-1, -1, -1), optional=True),
        Tensor("frames", "UINT8", (-1, -1, -1, 3), optional=True),
        Tensor("max_faces", "INT32", (1,), optional=True),
        Tensor("prior_boxes", "FP32", (-1, 4), optional=True),
    ),
    outputs=(
        Tensor("boxes", "FP32", (-1, 4)),
        Tensor("scores", "FP32", (-1,)),
        Tensor("landmarks", "FP32", (-1, N_LANDMARKS, 3)),
        Tensor("frame_index", "INT32", (-1,)),
    ),
    exactly_one_of=("image", "frames"),
)

GENERATOR = StageContract(
    model="generator",
    inputs=(
        Tensor("source", "UINT8", (-1, -1, -1, 3)),
        Tensor("source_landmarks", "FP32", (-1, N_LANDMARKS, 3)),
        Tensor("mouth_params", "FP32", (-1, N_MOUTH_PARAMS)),
        Tensor("motion", "FP32", (-1, 4)),
        Tensor("reference", "UINT8", (-1, -1, -1, 3), optional=True),
        Tensor("reference_landmarks", "FP32", (-1, N_LANDMARKS, 3), optional=True),
        Tensor("reference_opening", "FP32", (-1,), optional=True),
    ),
    outputs=(
        Tensor("frames", "UINT8", (-1, -1, -1, 3)),
        Tensor("mask", "FP32", (-1, -1, -1)),
    ),
    together=("reference", "reference_landmarks"),
)

STAGES: Mapping[str, StageContract] = {c.model: c for c in (AUDIO_FEATURES, FACE_DETECTION, GENERATOR)}
STAGE_MODELS: tuple[str, ...] = tuple(STAGES)


def contract(model: str) -> StageContract:
    try:
        return STAGES[model]
    except KeyError:
        raise StageRequestError(f"unknown stage model {model!r}") from None
