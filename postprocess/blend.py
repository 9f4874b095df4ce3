"""Blending generated face crops back into full frames: the crop and its feathered mask are
resampled to the face's place in the frame and alpha-composited only where the mask is
non-zero, so everything outside the generator's region stays bit-exact."""
from __future__ import annotations

import numpy as np
from PIL import Image

from preprocess.align import CropBox

ALPHA_ONE = 256  # 8-bit alpha scaled so that the blend is integer arithmetic


def paste_crop(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, box: CropBox) -> None:
    """Composite `crop` (size x size RGB) into `frame` in place through `mask` (0..1)."""
    h, w = frame.shape[:2]
    x0, y0 = int(np.floor(box.x0)), int(np.floor(box.y0))
    # Only the rows and columns where the mask is non-zero are resampled and blended.
    rows = np.flatnonzero(mask.max(axis=1) > 1e-3)
    cols = np.flatnonzero(mask.max(axis=0) > 1e-3)
    if rows.size == 0:
        return
    scale = box.size / box.side
    fx0 = max(0, int(np.ceil(box.x0)), x0 + int(np.floor(cols[0] / scale)) - 1)
    fy0 = max(0, int(np.ceil(box.y0)), y0 + int(np.floor(rows[0] / scale)) - 1)
    fx1 = min(w, int(np.floor(box.x0 + box.side)), x0 + int(np.ceil((cols[-1] + 1) / scale)) + 1)
    fy1 = min(h, int(np.floor(box.y0 + box.side)), y0 + int(np.ceil((rows[-1] + 1) / scale)) + 1)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    # The frame region [fx0, fx1) x [fy0, fy1) in crop coordinates.
    region = ((fx0 - box.x0) * scale, (fy0 - box.y0) * scale,
              (fx1 - box.x0) * scale, (fy1 - box.y0) * scale)
    size = (fx1 - fx0, fy1 - fy0)
    rgb = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR, box=region))
    alpha8 = (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    alpha = np.asarray(Image.fromarray(alpha8).resize(size, Image.Resampling.BILINEAR, box=region))
    a = (alpha.astype(np.uint16) + (alpha >> 7))[..., None]  # 0..255 -> 0..256
    dst = frame[fy0:fy1, fx0:fx1]
    dst[:] = ((rgb.astype(np.uint16) * a + dst.astype(np.uint16) * (ALPHA_ONE - a) + 128) >> 8).astype(np.uint8)
