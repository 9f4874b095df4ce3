"""Typed wrappers over the three Triton stages (gRPC, `tritonclient`): the orchestrator's
only way to the models. Tensor contracts and the raw clients live in proto/stages.py and
proto/stageclient.py. `TritonStages` is the real client; tests may pass any object with
the same methods (the `Stages` protocol) to run the pipeline without a server."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from proto.stageclient import MAX_MESSAGE_BYTES, AsyncStageClient  # noqa: F401 (re-exported)
from proto.stages import DEFAULT_MAX_FACES, StageRequestError

log = logging.getLogger(__name__)


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


def render_ahead(stages: object) -> int:
    """Generator batches a renderer keeps requested beyond the one it is composing: one per
    generator instance (as Triton's model configuration says), so each has work queued.
    Stages that do not report instances (test doubles) get one."""
    instances = getattr(stages, "instances", None) or {}
    return max(1, int(instances.get("generator", 1)))


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
                       reference_landmarks: np.ndarray | None = None,
                       reference_opening: np.ndarray | None = None) -> Rendered: ...


class TritonStages:
    """The stages served by Triton over gRPC: the typed calls the pipeline makes, thin over
    proto.stageclient.AsyncStageClient (which checks each request against the contract and
    tells request errors from an unavailable stage)."""

    def __init__(self, url: str = "", timeout_s: float = 300.0,
                 client: AsyncStageClient | None = None, shared_memory: bool = False) -> None:
        self.client = client or AsyncStageClient(url, timeout_s, shared_memory=shared_memory)
        # Instances per model, read from Triton's model configuration by load_instance_counts().
        self.instances: dict[str, int] = {}

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        return await self.client.ready()

    async def load_instance_counts(self) -> dict[str, int]:
        self.instances = await self.client.instance_counts()
        return self.instances

    async def audio_features(self, audio_16k: np.ndarray, fps: float,
                             part: tuple[int, int] = (0, 1)) -> AudioFeatures:
        """Mouth parameters of the speech; with part=(i, n) those of its i-th of n parts
        (split at pauses by the stage), which concatenate in order to the whole answer."""
        arrays = {"audio": audio_16k.astype(np.float32, copy=False), "fps": np.array([fps], np.float32)}
        if part != (0, 1):
            arrays["part"] = np.array(part, np.int32)
        out = await self.client.infer("audio_features", ("mouth_params", "energy"), **arrays)
        return AudioFeatures(mouth_params=out["mouth_params"], energy=out["energy"])

    async def detect_faces(self, image: np.ndarray, max_faces: int = DEFAULT_MAX_FACES,
                           prior_boxes: np.ndarray | None = None) -> list[DetectedFace]:
        arrays = {"image": np.asarray(image, dtype=np.uint8), "max_faces": np.array([max_faces], np.int32)}
        if prior_boxes is not None and len(prior_boxes):
            arrays["prior_boxes"] = prior_boxes.astype(np.float32)
        out = await self.client.infer("face_detection", ("boxes", "scores", "landmarks"), **arrays)
        return [DetectedFace(box=out["boxes"][i], score=float(out["scores"][i]), landmarks=out["landmarks"][i])
                for i in range(out["boxes"].shape[0])]

    async def track_faces(self, frames: np.ndarray, max_faces: int = DEFAULT_MAX_FACES,
                          prior_boxes: np.ndarray | None = None) -> list[list[DetectedFace]]:
        """The faces of each of N consecutive frames [N, H, W, 3], tracked through them by
        the stage in one request (the first frame from `prior_boxes` when given)."""
        arrays = {"frames": np.asarray(frames, dtype=np.uint8), "max_faces": np.array([max_faces], np.int32)}
        if prior_boxes is not None and len(prior_boxes):
            arrays["prior_boxes"] = prior_boxes.astype(np.float32)
        out = await self.client.infer("face_detection", ("boxes", "scores", "landmarks", "frame_index"), **arrays)
        faces: list[list[DetectedFace]] = [[] for _ in range(frames.shape[0])]
        for i, index in enumerate(out["frame_index"]):
            faces[int(index)].append(DetectedFace(box=out["boxes"][i], score=float(out["scores"][i]),
                                                  landmarks=out["landmarks"][i]))
        return faces

    async def generate(self, source: np.ndarray, source_landmarks: np.ndarray,
                       mouth_params: np.ndarray, motion: np.ndarray,
                       reference: np.ndarray | None = None,
                       reference_landmarks: np.ndarray | None = None,
                       reference_opening: np.ndarray | None = None) -> Rendered:
        """Parametric mouths, or with `reference` crops (+ their landmarks) the reference
        frames' own mouths transplanted onto `source` (dubbing by re-synthesis), each opened
        reference_opening IODs wider when that is given."""
        if (reference is None) != (reference_landmarks is None):
            raise StageRequestError("reference and reference_landmarks go together")
        if reference_opening is not None and reference is None:
            raise StageRequestError("reference_opening needs reference")
        arrays = {"source": np.asarray(source, dtype=np.uint8),
                  "source_landmarks": source_landmarks.astype(np.float32),
                  "mouth_params": mouth_params.astype(np.float32),
                  "motion": motion.astype(np.float32)}
        if reference is not None and reference_landmarks is not None:
            arrays["reference"] = np.asarray(reference, dtype=np.uint8)
            arrays["reference_landmarks"] = reference_landmarks.astype(np.float32)
        if reference_opening is not None:
            arrays["reference_opening"] = np.asarray(reference_opening, dtype=np.float32)
        count, side = mouth_params.shape[0], np.asarray(source).shape[1]
        sizes = {"frames": count * side * side * 3, "mask": count * side * side * 4}  # uint8 RGB, float32
        out = await self.client.infer_arrays("generator", ("frames", "mask"), arrays, output_bytes=sizes)
        return Rendered(frames=out["frames"], masks=out["mask"])
