"""The face_detection stage's crop (`sample_rect`, one OpenCV affine warp) against its numpy
reference (`bilinear`): the same pixels for rotated rectangles inside the image and past its
edges, with replicated and zero borders, and for gray images."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "model_repository" / "face_detection" / "1"))
from imagewarp import RotatedRect, bilinear, sample_rect  # noqa: E402

SIZE = 64


def _image(channels: int) -> np.ndarray:
    """A smooth picture (ramps and waves): bilinear sampling is exact to a level or so on it."""
    y, x = np.mgrid[0:120, 0:160].astype(np.float32)
    planes = [128 + 100 * np.sin(x / 9 + c) * np.cos(y / 11 - c) for c in range(channels)]
    return np.clip(np.stack(planes, axis=2), 0, 255).astype(np.uint8)


def _reference(image: np.ndarray, rect: RotatedRect, border: str) -> np.ndarray:
    grid = np.arange(SIZE, dtype=np.float32)
    u, v = np.meshgrid(grid, grid)
    x, y = rect.to_image(u, v, SIZE)
    return bilinear(image, x.astype(np.float32), y.astype(np.float32), border)  # type: ignore[arg-type]


@pytest.mark.parametrize("border", ["replicate", "zero"])
@pytest.mark.parametrize("rect", [
    RotatedRect(80, 60, 50, 50, 0.0),        # inside, upright
    RotatedRect(70, 55, 40, 60, 0.35),       # inside, turned
    RotatedRect(20, 100, 90, 90, -0.6),      # past the left and bottom edges
])
@pytest.mark.parametrize("channels", [3, 1])
def test_the_warp_samples_what_the_numpy_reference_samples(border: str, rect: RotatedRect, channels: int) -> None:
    image = _image(channels)
    got = sample_rect(image, rect, SIZE, border)  # type: ignore[arg-type]
    want = _reference(image, rect, border)
    assert got.shape == want.shape == (SIZE, SIZE, channels) and got.dtype == np.float32
    # OpenCV interpolates at 1/32 pixel and rounds to whole levels; the reference does neither.
    difference = np.abs(got - want)
    assert np.percentile(difference, 99) <= 2.0 and difference.max() <= 4.0, difference.max()
