"""BlazeFace face detector (Bazarevsky et al. 2019, arXiv:1907.05047) decoded from ONNX.

Owns letterboxing, SSD anchor generation and box/keypoint decoding with the exact
options of MediaPipe's face_detection_short_range (128x128) and full_range (192x192)
graphs, and MediaPipe's weighted non-maximum suppression ("blending").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from imagewarp import RotatedRect, sample_rect
from proto.ort_providers import session_providers

SCORE_CLIP = 100.0
NMS_IOU = 0.3
# Images up to this long side are already close to the detectors' input size: no tiling.
MIN_TILED_SIDE = 512


@dataclass(frozen=True)
class DetectorSpec:
    """SsdAnchorsCalculator + TensorsToDetectionsCalculator options of one BlazeFace model."""

    onnx_name: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score: float


SHORT_RANGE = DetectorSpec("face_detection_short_range.onnx", 128, (8, 16, 16, 16), 1.0, 0.5)
FULL_RANGE = DetectorSpec("face_detection_full_range.onnx", 192, (4,), 0.0, 0.6)


@dataclass(frozen=True)
class Detection:
    """One face in image pixels: box x0, y0, x1, y1, six keypoints [6, 2] and a score.

    Keypoints follow MediaPipe: right eye, left eye, nose tip, mouth, right ear, left ear
    (the subject's right/left, so the right eye is on the image's left in a frontal view).
    """

    box: np.ndarray
    keypoints: np.ndarray
    score: float


def ssd_anchor_centers(spec: DetectorSpec) -> np.ndarray:
    """Anchor centres [N, 2] (x, y, normalised), as SsdAnchorsCalculator with fixed_anchor_size."""
    centers: list[np.ndarray] = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        per_cell = 0
        while layer < len(spec.strides) and spec.strides[layer] == stride:
            per_cell += 1 + (1 if spec.interpolated_scale_aspect_ratio > 0 else 0)
            layer += 1
        cells = math.ceil(spec.input_size / stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(grid, grid)
        cell_centers = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(cell_centers, per_cell, axis=0))
    return np.concatenate(centers, axis=0)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box [4] against boxes [N, 4]."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> list[Detection]:
    """MediaPipe's WEIGHTED non-max suppression: overlapping candidates are score-averaged."""
    order = np.argsort(-scores)
    remaining = order
    detections: list[Detection] = []
    while remaining.size:
        top = remaining[0]
        overlap = iou(boxes[top], boxes[remaining]) > NMS_IOU
        members = remaining[overlap]
        weights = scores[members][:, None]
        box = (boxes[members] * weights).sum(0) / weights.sum()
        kps = (keypoints[members] * weights[:, :, None]).sum(0) / weights.sum()
        detections.append(Detection(box.astype(np.float32), kps.astype(np.float32), float(scores[top])))
        remaining = remaining[~overlap]
    return detections


def merge_detections(detections: list[Detection]) -> list[Detection]:
    """Blend detections of the same faces found in overlapping tiles."""
    if not detections:
        return []
    boxes = np.stack([d.box for d in detections])
    keypoints = np.stack([d.keypoints for d in detections])
    scores = np.array([d.score for d in detections], dtype=np.float32)
    return weighted_nms(boxes, keypoints, scores)


def tile_regions(width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Square tiles with half-tile overlap, at most ~4x3 of them; none when the image is small.

    A tile is downscaled ~4x less than the whole image, so faces down to ~30 px in a 1080p
    frame reach the detector with enough pixels.
    """
    long_side, short_side = max(width, height), min(width, height)
    side = min(float(short_side), max(long_side / 2.5, 384.0))
    if long_side <= MIN_TILED_SIDE or side >= 0.8 * long_side:
        return []
    step = side / 2
    columns = math.ceil((width - side) / step) + 1
    rows = math.ceil((height - side) / step) + 1
    xs = np.linspace(0.0, width - side, columns)
    ys = np.linspace(0.0, height - side, rows)
    return [(float(x), float(y), float(x + side), float(y + side)) for y in ys for x in xs]


class BlazeFaceDetector:
    """Runs one BlazeFace ONNX model on a letterboxed view of (part of) an image."""

    def __init__(self, model_path: Path, spec: DetectorSpec, options: ort.SessionOptions) -> None:
        self._spec = spec
        self._session = ort.InferenceSession(str(model_path), options, providers=session_providers())
        self._input_name = self._session.get_inputs()[0].name
        self._anchors = ssd_anchor_centers(spec)

    def detect(self, image: np.ndarray, region: tuple[float, float, float, float] | None = None) -> list[Detection]:
        """Detect faces in image (or in region x0, y0, x1, y1 of it); coordinates in image pixels."""
        height, width = image.shape[:2]
        x0, y0, x1, y1 = region if region is not None else (0.0, 0.0, float(width), float(height))
        # Letterbox: a square of the region's long side, centred, padded with black (-1).
        side = max(x1 - x0, y1 - y0)
        square = RotatedRect((x0 + x1) / 2, (y0 + y1) / 2, side, side)
        size = self._spec.input_size
        pixels = sample_rect(image, square, size, border="zero")
        tensor = (pixels * np.float32(1.0 / 127.5) - np.float32(1.0))[None]
        outputs = self._session.run(None, {self._input_name: tensor})
        # Output names differ between the converted graphs; the shapes do not: [1, N, 16], [1, N, 1].
        regressors = next(o for o in outputs if o.shape[-1] == 16)
        classificators = next(o for o in outputs if o.shape[-1] == 1)
        logits = np.clip(classificators[0, :, 0].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self._spec.min_score
        if not keep.any():
            return []
        raw = regressors[0, keep] / size
        anchors = self._anchors[keep]
        centers = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centers - half, centers + half], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        # Undo the letterbox: normalised square coordinates -> image pixels.
        origin = np.array([square.center_x - side / 2, square.center_y - side / 2], dtype=np.float32)
        boxes = boxes * side + np.tile(origin, 2)
        keypoints = keypoints * side + origin
        return weighted_nms(boxes, keypoints, scores[keep])
