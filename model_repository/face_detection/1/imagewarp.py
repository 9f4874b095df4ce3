"""Bilinear resampling of an image region onto a fixed-size tensor.

Mirrors what MediaPipe's ImageToTensorCalculator does with OpenCV: the corners of a
(possibly rotated) source rectangle are mapped onto the corners of the output tensor and
every output pixel is sampled bilinearly, without anti-aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

BorderMode = Literal["zero", "replicate"]


@dataclass(frozen=True)
class RotatedRect:
    """A rectangle in image pixels: centre, size and rotation (radians, clockwise on screen)."""

    center_x: float
    center_y: float
    width: float
    height: float
    rotation_rad: float = 0.0

    def to_image(self, u: np.ndarray, v: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Map output-tensor coordinates (u, v) in [0, out_size] to image pixel coordinates."""
        dx = (u / out_size - 0.5) * self.width
        dy = (v / out_size - 0.5) * self.height
        cos_r, sin_r = np.cos(self.rotation_rad), np.sin(self.rotation_rad)
        x = self.center_x + dx * cos_r - dy * sin_r
        y = self.center_y + dx * sin_r + dy * cos_r
        return x, y


def sample_rect(image: np.ndarray, rect: RotatedRect, out_size: int, border: BorderMode) -> np.ndarray:
    """Resample rect of an HxWxC uint8 image to float32 [out_size, out_size, C] in 0..255.

    Runs as one OpenCV affine warp (`cv2.warpAffine`, bilinear, the inverse map from output
    pixel to image pixel, replicate or zero borders), as MediaPipe itself does; the numpy
    `bilinear` below is the reference it is tested against (tests/unit/test_imagewarp.py).
    """
    channels = image.shape[2]
    if channels not in (1, 3):
        grid = np.arange(out_size, dtype=np.float32)
        u, v = np.meshgrid(grid, grid)
        x, y = rect.to_image(u, v, out_size)
        return bilinear(image, x.astype(np.float32), y.astype(np.float32), border)
    cos_r, sin_r = float(np.cos(rect.rotation_rad)), float(np.sin(rect.rotation_rad))
    sx, sy = rect.width / out_size, rect.height / out_size
    # OpenCV-style map from output index (u, v) to image pixel centre (x, y).
    inverse = np.array([
        [sx * cos_r, -sy * sin_r, rect.center_x - rect.width / 2 * cos_r + rect.height / 2 * sin_r],
        [sx * sin_r, sy * cos_r, rect.center_y - rect.width / 2 * sin_r - rect.height / 2 * cos_r],
    ])
    warped = cv2.warpAffine(
        np.ascontiguousarray(image), inverse, (out_size, out_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )
    out = np.asarray(warped, dtype=np.float32)
    return out.reshape(out_size, out_size, channels)


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: BorderMode) -> np.ndarray:
    """Sample image at float pixel coordinates (pixel centres at integers, as in OpenCV)."""
    height, width = image.shape[:2]
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0i = x0.astype(np.int64)
    y0i = y0.astype(np.int64)
    src = image.astype(np.float32, copy=False)
    out = np.zeros(x.shape + (image.shape[2],), dtype=np.float32)
    for ox, oy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xi = x0i + ox
        yi = y0i + oy
        values = src[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
        if border == "zero":
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            values = values * inside[..., None]
        out += weight * values
    return out
