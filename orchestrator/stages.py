"""Typed wrappers over the three Triton stages (gRPC, `tritonclient`): the orchestrator's
only way to the models. `TritonStages` is the real client; tests may pass any object with
the same methods (the `Stages` protocol) to run the pipeline without a server."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)

STAGE_MODELS = ("audio_features", "face_detection", "generator")
# Generator batches a renderer keeps requested beyond the one it is composing: one per
# generator instance (model_repository/generator/config.pbtxt), so each has work queued.
# One instance: on two cores the compositing and encoding keep the other core busy (a
# second instance measured no faster and holds another ~250 MiB).
RENDER_AHEAD = 1
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


class StageUnavailable(Exception):
    """Triton could not run a stage (server down, model not ready): our error, retried."""


@dataclass(frozen=True)
class AudioFeatures:
    mouth_params: np.ndarray   # float32 [T, 8]
    energy: np.ndarray         # float32 [T]


@dataclass(frozen=True)
class DetectedFace:
    box: np.ndarray            # float32 [4] x0, y0, x1, y1
    score: float
    landmarks: np.ndarray      # float32 [468, 3]

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


@dataclass(frozen=True)
class Rendered:
    frames: np.ndarray         # uint8 [T, S, S, 3]
    masks: np.ndarray          # float32 [T, S, S]


class Stages(Protocol):
    async def audio_features(self, audio_16k: np.ndarray, fps: float,
                             part: tuple[int, int] = (0, 1)) -> AudioFeatures: ...

    async def detect_faces(self, image: np.ndarray, max_faces: int = 4,
                           prior_boxes: np.ndarray | None = None) -> list[DetectedFace]: ...

    async def track_faces(self, frames: np.ndarray, max_faces: int = 4,
                          prior_boxes: np.ndarray | None = None) -> list[list[DetectedFace]]: ...

    async def generate(self, source: np.ndarray, source_landmarks: np.ndarray,
                       mouth_params: np.ndarray, motion: np.ndarray,
                       reference: np.ndarray | None = None,
                       reference_landmarks: np.ndarray | None = None) -> Rendered: ...


def _input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


class TritonStages:
    """The stages served by Triton over gRPC."""

    def __init__(self, url: str, timeout_s: float = 300.0) -> None:
        self._client = grpcclient.InferenceServerClient(
            url=url,
            channel_args=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._timeout_s = timeout_s

    async def close(self) -> None:
        await self._client.close()

    async def ready(self) -> bool:
        try:
            if not await self._client.is_server_ready():
                return False
            for name in STAGE_MODELS:
                if not await self._client.is_model_ready(name):
                    return False
            return True
        except InferenceServerException:
            return False

    async def _infer(self, model: str, inputs: list[grpcclient.InferInput], outputs: list[str]) -> dict[str, np.ndarray]:
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._client.infer(model, inputs, outputs=requested,
                                              client_timeout=self._timeout_s)
        except InferenceServerException as exc:
            raise StageUnavailable(f"{model}: {exc.message()}") from exc
        return {name: result.as_numpy(name) for name in outputs}

    async def audio_features(self, audio_16k: np.ndarray, fps: float,
                             part: tuple[int, int] = (0, 1)) -> AudioFeatures:
        """Mouth parameters of the speech; with part=(i, n) those of its i-th of n parts
        (split at pauses by the stage), which concatenate in order to the whole answer."""
        inputs = [_input("audio", audio_16k.astype(np.float32, copy=False), "FP32"),
                  _input("fps", np.array([fps], np.float32), "FP32")]
        if part != (0, 1):
            inputs.append(_input("part", np.array(part, np.int32), "INT32"))
        out = await self._infer("audio_features", inputs, ["mouth_params", "energy"])
        return AudioFeatures(mouth_params=out["mouth_params"], energy=out["energy"])

    async def detect_faces(self, image: np.ndarray, max_faces: int = 4,
                           prior_boxes: np.ndarray | None = None) -> list[DetectedFace]:
        inputs = [_input("image", np.ascontiguousarray(image, dtype=np.uint8), "UINT8"),
                  _input("max_faces", np.array([max_faces], np.int32), "INT32")]
        if prior_boxes is not None and len(prior_boxes):
            inputs.append(_input("prior_boxes", prior_boxes.astype(np.float32), "FP32"))
        out = await self._infer("face_detection", inputs, ["boxes", "scores", "landmarks"])
        return [DetectedFace(box=out["boxes"][i], score=float(out["scores"][i]), landmarks=out["landmarks"][i])
                for i in range(out["boxes"].shape[0])]

    async def track_faces(self, frames: np.ndarray, max_faces: int = 4,
                          prior_boxes: np.ndarray | None = None) -> list[list[DetectedFace]]:
        """The faces of each of N consecutive frames [N, H, W, 3], tracked through them by
        the stage in one request (the first frame from `prior_boxes` when given)."""
        inputs = [_input("frames", np.ascontiguousarray(frames, dtype=np.uint8), "UINT8"),
                  _input("max_faces", np.array([max_faces], np.int32), "INT32")]
        if prior_boxes is not None and len(prior_boxes):
            inputs.append(_input("prior_boxes", prior_boxes.astype(np.float32), "FP32"))
        out = await self._infer("face_detection", inputs, ["boxes", "scores", "landmarks", "frame_index"])
        faces: list[list[DetectedFace]] = [[] for _ in range(frames.shape[0])]
        for i, index in enumerate(out["frame_index"]):
            faces[int(index)].append(DetectedFace(box=out["boxes"][i], score=float(out["scores"][i]),
                                                  landmarks=out["landmarks"][i]))
        return faces

    async def generate(self, source: np.ndarray, source_landmarks: np.ndarray,
                       mouth_params: np.ndarray, motion: np.ndarray,
                       reference: np.ndarray | None = None,
                       reference_landmarks: np.ndarray | None = None) -> Rendered:
        """Parametric mouths, or with `reference` crops (+ their landmarks) the reference
        frames' own mouths transplanted onto `source` (dubbing by re-synthesis)."""
        inputs = [_input("source", np.ascontiguousarray(source, dtype=np.uint8), "UINT8"),
                  _input("source_landmarks", source_landmarks.astype(np.float32), "FP32"),
                  _input("mouth_params", mouth_params.astype(np.float32), "FP32"),
                  _input("motion", motion.astype(np.float32), "FP32")]
        if (reference is None) != (reference_landmarks is None):
            raise ValueError("reference and reference_landmarks go together")
        if reference is not None and reference_landmarks is not None:
            inputs += [_input("reference", np.ascontiguousarray(reference, dtype=np.uint8), "UINT8"),
                       _input("reference_landmarks", reference_landmarks.astype(np.float32), "FP32")]
        out = await self._infer("generator", inputs, ["frames", "mask"])
        return Rendered(frames=out["frames"], masks=out["mask"])
