"""Blending generated face crops back into full frames: the crop and its feathered mask are
resampled to the face's place in the frame and alpha-composited only where the mask is
non-zero, so everything outside the generator's region stays bit-exact."""
from __future__ import annotations

import numpy as np
from PIL import Image

from preprocess.align import CropBox


def paste_crop(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, box: CropBox) -> None:
    """Composite `crop` (size x size RGB) into `frame` in place through `mask` (0..1)."""
    h, w = frame.shape[:2]
    x0, y0 = int(np.floor(box.x0)), int(np.floor(box.y0))
    side_px = int(np.ceil(box.x0 + box.side)) - x0
    if side_px <= 0:
        return
    # Resample the crop into the integer-aligned frame region it covers.
    scale = box.size / box.side
    region = ((x0 - box.x0) * scale, (y0 - box.y0) * scale,
              (x0 + side_px - box.x0) * scale, (y0 + side_px - box.y0) * scale)
    rgb = np.asarray(Image.fromarray(crop).transform(
        (side_px, side_px), Image.Transform.EXTENT, region, resample=Image.Resampling.BILINEAR))
    alpha = np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").transform(
        (side_px, side_px), Image.Transform.EXTENT, region, resample=Image.Resampling.BILINEAR))
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(w, x0 + side_px), min(h, y0 + side_px)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    sub_a = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    rows, cols = np.nonzero(sub_a > 1e-3)
    if rows.size == 0:
        return
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    a = np.clip(sub_a[r0:r1, c0:c1], 0.0, 1.0)[..., None]
    src = rgb[fy0 - y0 + r0 : fy0 - y0 + r1, fx0 - x0 + c0 : fx0 - x0 + c1].astype(np.float32)
    dst = frame[fy0 + r0 : fy0 + r1, fx0 + c0 : fx0 + c1]
    dst[:] = np.clip(src * a + dst.astype(np.float32) * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
