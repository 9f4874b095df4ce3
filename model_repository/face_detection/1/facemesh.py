"""Faces with 468 landmarks from an RGB image: BlazeFace detection + MediaPipe Face Mesh.

Implements the pipeline of MediaPipe's face_landmark_front graph (Kartynnik et al. 2019,
"Real-time Facial Surface Geometry from Monocular Video on Mobile GPUs", arXiv:1907.06724):
detect, crop a square 1.5x the detector box rotated so the eyes are horizontal, regress
the mesh, map it back through the rotation. Previous-frame boxes can replace detection.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from blazeface import (
    FULL_RANGE,
    SHORT_RANGE,
    BlazeFaceDetector,
    Detection,
    iou,
    merge_detections,
    tile_regions,
)
from imagewarp import RotatedRect, sample_rect
from proto.ort_providers import session_providers

logger = logging.getLogger(__name__)

MESH_INPUT_SIZE = 192
NUM_LANDMARKS = 468
ROI_SCALE = 1.5
MIN_PRESENCE = 0.5
MAX_CANDIDATES = 16
DUPLICATE_IOU = 0.5
# Mesh indices of the outer eye corners (subject's right, left): MediaPipe's tracking ROI.
RIGHT_EYE_CORNER, LEFT_EYE_CORNER = 33, 263
# Re-crop a tracked face when its eye line is tilted more than this.
MAX_TRACKED_TILT_RAD = math.radians(8.0)


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # float32 [4]: x0, y0, x1, y1 in image pixels
    score: float  # detector score (or mesh presence score when tracked from a prior box)
    landmarks: np.ndarray  # float32 [468, 3]: x, y in image pixels, z relative depth (same scale as x)


@dataclass(frozen=True)
class MeshResult:
    landmarks: np.ndarray
    presence: float


def roi_from_detection(detection: Detection) -> RotatedRect:
    """MediaPipe FaceDetectionFrontDetectionToRoi: rotate by the eye line, 1.5x, square."""
    right_eye, left_eye = detection.keypoints[0], detection.keypoints[1]
    rotation = math.atan2(float(left_eye[1] - right_eye[1]), float(left_eye[0] - right_eye[0]))
    x0, y0, x1, y1 = (float(v) for v in detection.box)
    side = max(x1 - x0, y1 - y0) * ROI_SCALE
    return RotatedRect((x0 + x1) / 2, (y0 + y1) / 2, side, side, rotation)


def roi_from_box(box: np.ndarray, rotation_rad: float = 0.0) -> RotatedRect:
    """Square ROI 1.5x around an axis-aligned face box (a previous frame's output box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * ROI_SCALE
    return RotatedRect((x0 + x1) / 2, (y0 + y1) / 2, side, side, rotation_rad)


def roi_from_landmarks(landmarks: np.ndarray) -> RotatedRect:
    """MediaPipe FaceLandmarkLandmarksToRoi: box of the mesh in the eye-aligned frame, 1.5x."""
    eye_vector = landmarks[LEFT_EYE_CORNER, :2] - landmarks[RIGHT_EYE_CORNER, :2]
    rotation = math.atan2(float(eye_vector[1]), float(eye_vector[0]))
    cos_r, sin_r = math.cos(rotation), math.sin(rotation)
    points = landmarks[:, :2].astype(np.float64)
    local_x = points[:, 0] * cos_r + points[:, 1] * sin_r
    local_y = -points[:, 0] * sin_r + points[:, 1] * cos_r
    mid_x = (local_x.min() + local_x.max()) / 2
    mid_y = (local_y.min() + local_y.max()) / 2
    side = max(local_x.max() - local_x.min(), local_y.max() - local_y.min()) * ROI_SCALE
    center_x = mid_x * cos_r - mid_y * sin_r
    center_y = mid_x * sin_r + mid_y * cos_r
    return RotatedRect(center_x, center_y, side, side, rotation)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding box [4] of the mesh's x, y."""
    xy = landmarks[:, :2]
    return np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Accept HxW gray, HxWx1, HxWx3 or HxWx4 uint8 and return HxWx3 RGB."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an [H, W, 3] RGB (or 1-channel gray, 4-channel RGBA) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image, shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


class FaceMesh:
    """Detects faces and regresses their 468-point meshes; models load from model_dir."""

    def __init__(self, model_dir: Path, num_threads: int = 1) -> None:
        model_dir = Path(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self._short_range = BlazeFaceDetector(model_dir / SHORT_RANGE.onnx_name, SHORT_RANGE, options)
        full_range_path = model_dir / FULL_RANGE.onnx_name
        self._full_range = (
            BlazeFaceDetector(full_range_path, FULL_RANGE, options) if full_range_path.is_file() else None
        )
        self._mesh = ort.InferenceSession(
            str(model_dir / "face_landmark.onnx"), options, providers=session_providers()
        )
        self._mesh_input = self._mesh.get_inputs()[0].name

    def detect(self, image: np.ndarray, max_faces: int = 4, prior_boxes: np.ndarray | None = None) -> list[Face]:
        """Faces in an RGB uint8 image, largest first; prior_boxes [F, 4] track a previous frame."""
        image = to_rgb(image)
        priors = np.zeros((0, 4), np.float32) if prior_boxes is None else np.asarray(prior_boxes, np.float32)
        priors = priors.reshape(-1, 4)
        faces = self._track(image, priors)
        # Detect when not tracking, or when a tracked face was lost (left, occluded, moved too far).
        if len(faces) < max(1, len(priors)):
            for detection in self._detect_candidates(image)[:MAX_CANDIDATES]:
                face = self._face_from_detection(image, detection)
                if face is not None:
                    faces.append(face)
        return self._deduplicate(faces)[: max(0, max_faces)]

    def run_mesh(self, image: np.ndarray, roi: RotatedRect) -> MeshResult:
        """Regress the mesh inside roi; landmarks in image pixels, z scaled like x."""
        crop = sample_rect(image, roi, MESH_INPUT_SIZE, border="replicate")
        tensor = (crop * np.float32(1.0 / 255.0))[None]
        raw_landmarks, presence_logit = self._mesh.run(None, {self._mesh_input: tensor})
        local = raw_landmarks.reshape(NUM_LANDMARKS, 3).astype(np.float64)
        x, y = roi.to_image(local[:, 0], local[:, 1], MESH_INPUT_SIZE)
        z = local[:, 2] / MESH_INPUT_SIZE * roi.width
        landmarks = np.stack([x, y, z], axis=1).astype(np.float32)
        presence = 1.0 / (1.0 + math.exp(-float(presence_logit.reshape(-1)[0])))
        return MeshResult(landmarks, presence)

    def _detect_candidates(self, image: np.ndarray) -> list[Detection]:
        """Short-range model on the whole image; for small faces, full-range, then on tiles."""
        detections = self._short_range.detect(image)
        if detections:
            return detections
        tile_detector = self._full_range or self._short_range
        if self._full_range is not None:
            detections = self._full_range.detect(image)
            if detections:
                return detections
        for region in tile_regions(image.shape[1], image.shape[0]):
            detections.extend(tile_detector.detect(image, region))
        return merge_detections(detections)

    def _face_from_detection(self, image: np.ndarray, detection: Detection) -> Face | None:
        result = self.run_mesh(image, roi_from_detection(detection))
        if result.presence < MIN_PRESENCE:
            logger.debug("rejected detection (score %.2f): mesh presence %.2f", detection.score, result.presence)
            return None
        return Face(landmark_box(result.landmarks), detection.score, result.landmarks)

    def _track(self, image: np.ndarray, prior_boxes: np.ndarray) -> list[Face]:
        faces: list[Face] = []
        for box in prior_boxes:
            if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
                continue
            result = self.run_mesh(image, roi_from_box(box))
            if result.presence >= MIN_PRESENCE:
                roi = roi_from_landmarks(result.landmarks)
                if abs(roi.rotation_rad) > MAX_TRACKED_TILT_RAD:
                    result = self.run_mesh(image, roi)
            if result.presence >= MIN_PRESENCE:
                faces.append(Face(landmark_box(result.landmarks), result.presence, result.landmarks))
        return faces

    @staticmethod
    def _deduplicate(faces: list[Face]) -> list[Face]:
        """Drop meshes of the same face (tracked + re-detected, or overlapping tiles), largest first."""
        kept: list[Face] = []
        for face in sorted(faces, key=lambda f: -f.score):
            if kept and iou(face.box, np.stack([k.box for k in kept])).max() > DUPLICATE_IOU:
                continue
            kept.append(face)
        return sorted(kept, key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))

