"""Blending generated face crops back into full frames: the crop and its feathered mask are
resampled to the face's place in the frame and alpha-composited only where the mask is
non-zero, so everything outside the generator's region stays bit-exact."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from preprocess.align import CropBox

cv2.setNumThreads(1)  # frames are composed on one core while the generator has the other


def paste_crop(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, box: CropBox) -> None:
    """Composite `crop` (size x size RGB) into `frame` in place through `mask` (0..1)."""
    h, w = frame.shape[:2]
    alpha8 = (np.clip(mask, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    # Only the rows and columns where the mask is non-zero are resampled and blended.
    rows = np.flatnonzero(alpha8.any(axis=1))
    cols = np.flatnonzero(alpha8.any(axis=0))
    if rows.size == 0:
        return
    scale = box.size / box.side
    x0, y0 = int(np.floor(box.x0)), int(np.floor(box.y0))
    fx0 = max(0, int(np.ceil(box.x0)), x0 + int(np.floor(cols[0] / scale)) - 1)
    fy0 = max(0, int(np.ceil(box.y0)), y0 + int(np.floor(rows[0] / scale)) - 1)
    fx1 = min(w, int(np.floor(box.x0 + box.side)), x0 + int(np.ceil((cols[-1] + 1) / scale)) + 1)
    fy1 = min(h, int(np.floor(box.y0 + box.side)), y0 + int(np.ceil((rows[-1] + 1) / scale)) + 1)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    rgb, alpha = _resample(crop, alpha8, box, (fx0, fy0, fx1, fy1))
    # PIL's C compositing: dst + (src - dst) * a / 255 with rounding, per 8-bit channel.
    dst = Image.fromarray(np.ascontiguousarray(frame[fy0:fy1, fx0:fx1]))  # strided arrays take a slow path
    dst.paste(Image.fromarray(np.ascontiguousarray(rgb)), (0, 0), Image.fromarray(np.ascontiguousarray(alpha)))
    frame[fy0:fy1, fx0:fx1] = np.asarray(dst)


def _resample(crop: np.ndarray, alpha8: np.ndarray, box: CropBox,
              region: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The crop and its alpha over the frame pixels `region` (x0, y0, x1, y1), bilinear:
    frame pixel centre fx + 0.5 lies at crop pixel (fx + 0.5 - box.x0) * scale - 0.5."""
    fx0, fy0, fx1, fy1 = region
    size = (fx1 - fx0, fy1 - fy0)
    scale = box.size / box.side
    if scale > 1.0:
        # The crop is larger than its place in the frame (a small face): area-aware shrink.
        area = ((fx0 - box.x0) * scale, (fy0 - box.y0) * scale, (fx1 - box.x0) * scale, (fy1 - box.y0) * scale)
        return (np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR, box=area)),
                np.asarray(Image.fromarray(alpha8).resize(size, Image.Resampling.BILINEAR, box=area)))
    if box.integral:
        # The whole crop resized onto its box is that same mapping, and several times
        # faster than a general warp; then the region is cut out of it.
        side = int(box.side)
        ox, oy = fx0 - int(box.x0), fy0 - int(box.y0)
        rgb = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(alpha8, (side, side), interpolation=cv2.INTER_LINEAR)
        return rgb[oy:oy + size[1], ox:ox + size[0]], alpha[oy:oy + size[1], ox:ox + size[0]]
    to_crop = np.array([[scale, 0.0, (fx0 + 0.5 - box.x0) * scale - 0.5],
                        [0.0, scale, (fy0 + 0.5 - box.y0) * scale - 0.5]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return (cv2.warpAffine(crop, to_crop, size, flags=flags, borderMode=cv2.BORDER_REPLICATE),
            cv2.warpAffine(alpha8, to_crop, size, flags=flags, borderMode=cv2.BORDER_REPLICATE))
