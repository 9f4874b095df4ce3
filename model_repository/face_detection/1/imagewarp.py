"""Bilinear resampling of an image region onto a fixed-size tensor (numpy only).

Mirrors what MediaPipe's ImageToTensorCalculator does with OpenCV: the corners of a
(possibly rotated) source rectangle are mapped onto the corners of the output tensor and
every output pixel is sampled bilinearly, without anti-aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

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

    Runs as one affine warp in Pillow's C code (the numpy `bilinear` below is the
    reference it is tested against); replicate borders are made by edge-padding first.
    """
    height, width, channels = image.shape
    if channels not in (1, 3):
        grid = np.arange(out_size, dtype=np.float32)
        u, v = np.meshgrid(grid, grid)
        x, y = rect.to_image(u, v, out_size)
        return bilinear(image, x.astype(np.float32), y.astype(np.float32), border)
    cos_r, sin_r = float(np.cos(rect.rotation_rad)), float(np.sin(rect.rotation_rad))
    sx, sy = rect.width / out_size, rect.height / out_size
    # OpenCV-style map from output index (u, v) to image pixel centre (x, y).
    a, b = sx * cos_r, -sy * sin_r
    c = rect.center_x - rect.width / 2 * cos_r + rect.height / 2 * sin_r
    d, e = sx * sin_r, sy * cos_r
    f = rect.center_y - rect.width / 2 * sin_r - rect.height / 2 * cos_r
    pad = 0
    if border == "replicate":
        corners_x = [c, a * out_size + c, b * out_size + c, a * out_size + b * out_size + c]
        corners_y = [f, d * out_size + f, e * out_size + f, d * out_size + e * out_size + f]
        overflow = max(0.0, -min(corners_x), -min(corners_y),
                       max(corners_x) - (width - 1), max(corners_y) - (height - 1))
        pad = int(np.ceil(overflow)) + 2 if overflow > 0 else 0
        if pad:
            image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    source = Image.fromarray(image[..., 0] if channels == 1 else image)
    # Pillow samples at (coefficients . (X + 0.5, Y + 0.5)) with pixel centres at +0.5.
    coefficients = (a, b, c + pad - 0.5 * a - 0.5 * b + 0.5,
                    d, e, f + pad - 0.5 * d - 0.5 * e + 0.5)
    warped = source.transform((out_size, out_size), Image.Transform.AFFINE, coefficients,
                              resample=Image.Resampling.BILINEAR, fillcolor=0)
    out = np.asarray(warped, dtype=np.float32)
    return out[..., None] if channels == 1 else out


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
