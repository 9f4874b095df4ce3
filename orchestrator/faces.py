"""Choosing faces: the largest by default, the ones under the white part of `mask_image`
when one is given, left to right for conversations; faces too small to animate refused."""
from __future__ import annotations

import numpy as np

from orchestrator.stages import DetectedFace
from preprocess.errors import MediaError
from proto.vocabulary import ErrorCode

MIN_FACE_PX = 40  # face box side in output pixels below which the mouth is a few pixels
MASK_COVERAGE_MIN = 0.5  # share of a face's landmarks on the mask's white part for the mask to pick it
MAX_FACES = 8  # faces the face_detection stage returns per image or frame (any more are ignored)


def scale_face(face: DetectedFace, sx: float, sy: float) -> DetectedFace:
    box = face.box * np.array([sx, sy, sx, sy], np.float32)
    landmarks = face.landmarks * np.array([sx, sy, (sx + sy) / 2], np.float32)
    return DetectedFace(box=box, score=face.score, landmarks=landmarks)


def mask_coverage(face: DetectedFace, mask: np.ndarray) -> float:
    """Fraction of the face's landmarks that fall on white (>= 128) pixels of the mask."""
    h, w = mask.shape[:2]
    xs = np.clip(face.landmarks[:, 0].astype(int), 0, w - 1)
    ys = np.clip(face.landmarks[:, 1].astype(int), 0, h - 1)
    return float(np.mean(mask[ys, xs] >= 128))


def select_faces(faces: list[DetectedFace], count: int, mask: np.ndarray | None) -> list[DetectedFace]:
    """Pick `count` faces: under the mask first (then by size), else the largest ones."""
    if not faces:
        raise MediaError(ErrorCode.FACE_NOT_FOUND, "No face found in the image")
    if mask is not None:
        covered = [f for f in faces if mask_coverage(f, mask) > MASK_COVERAGE_MIN]
        others = [f for f in faces if all(f is not c for c in covered)]  # identity: arrays inside
        faces = sorted(covered, key=lambda f: -f.area) + sorted(others, key=lambda f: -f.area)
    else:
        faces = sorted(faces, key=lambda f: -f.area)
    if len(faces) < count:
        raise MediaError(ErrorCode.TWO_FACES_REQUIRED, f"{count} faces are needed; found {len(faces)}")
    chosen = faces[:count]
    for face in chosen:
        side = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
        if side < MIN_FACE_PX:
            raise MediaError(
                ErrorCode.FACE_TOO_SMALL,
                f"The face is too small to animate ({side:.0f} px at the output size; at least {MIN_FACE_PX} px)",
            )
    return sorted(chosen, key=lambda f: float(f.box[0] + f.box[2]))
