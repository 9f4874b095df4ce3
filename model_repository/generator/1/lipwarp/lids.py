"""Eyelid geometry for blinks, measured once per source: each eye's frame (u along the eye,
v down across it, in source pixels), its upper lid margin and closed-lid line as curve tables,
the height of lid skin to stretch down and the width of the lash line along the margin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipwarp import graphspec as spec
from lipwarp import landmarks as ix
from lipwarp.interior import LUMA, mouth_layer, resample
from lipwarp.landmarks import FaceFrame

BROW_LOWER = ((46, 53, 52, 65, 55), (276, 283, 282, 295, 285))  # subject's right, left
EYE_CONTOURS = ((ix.RIGHT_UPPER, ix.RIGHT_LOWER), (ix.LEFT_UPPER, ix.LEFT_LOWER))
OVERLAP_IOD = 0.05  # the closed lid line sits this far past the lower lid margin (hides the waterline)
EDGE_SHADE, CAST_SHADOW = 0.16, 0.3


@dataclass(frozen=True)
class EyeLids:
    affine: np.ndarray  # float32 [2, 2, 3]: absolute source pixel (x, y, 1) -> (u, v) per eye
    curves: np.ndarray  # float32 [2, 2, 31]: upper lid margin, closed lid line per eye
    params: np.ndarray  # float32 [2, EYE_PARAMS_LEN]: lid height, lash width (px), shading
    outlines_px: np.ndarray  # [2, 22, 2]: where a blink can change pixels (lid skin to shadow)
    axes: np.ndarray  # [2, 2] unit vectors along each eye


def _luma_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    xs = np.clip(np.round(points[..., 0] - 0.5).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[..., 1] - 0.5).astype(int), 0, h - 1)
    return image[ys, xs, :3].astype(np.float64) @ LUMA


def _lid_extents(image: np.ndarray, upper: np.ndarray, down: np.ndarray, iod: float) -> tuple[float, float]:
    """(lash width, lid skin height) in pixels above the margin, from luma profiles across the
    lid's middle: the dark run starting at the margin is the lash line; the skin above it ends
    where the brow (or a deep fold) begins, and only part of it is taken."""
    reach = int(np.ceil(0.35 * iod))
    steps = np.arange(-1, reach + 1, dtype=np.float64)  # pixels above the margin
    lashes, lids = [], []
    for point in upper[3:8]:
        profile = _luma_at(image, point[None] - steps[:, None] * down[None])
        skin = np.percentile(profile[int(0.05 * iod) + 1:int(0.2 * iod) + 2], 80)  # the lid, not the forehead
        dark = profile < 0.82 * skin
        first = [k for k in range(min(4, len(dark))) if dark[k]]
        k = first[0] if first else 0
        if first:  # follow the dark run upwards, bridging one-pixel breaks
            while k + 1 < len(dark) and (dark[k + 1] or (k + 2 < len(dark) and dark[k + 2])):
                k += 1
        lash = steps[k] if first else 0.0
        brow = [j for j in range(k + 3, len(dark)) if profile[j] < 0.8 * skin]
        lashes.append(lash)
        lids.append(steps[brow[0]] if brow else steps[-1])
    lash_px = float(np.clip(np.median(lashes) + 1.0, max(0.025 * iod, 1.0), 0.1 * iod))
    lid_px = float(np.clip(lash_px + 0.7 * (np.median(lids) - lash_px), lash_px + 0.05 * iod, 0.22 * iod))
    return lash_px, lid_px


def eye_lids(image: np.ndarray, landmarks: np.ndarray, frame: FaceFrame) -> EyeLids:
    lm, iod = landmarks[:, :2].astype(np.float64), frame.iod_px
    affines, curves, params, outlines, axes = [], [], [], [], []
    for (upper_ids, lower_ids), brow in zip(EYE_CONTOURS, BROW_LOWER, strict=True):
        upper, lower = resample(lm[list(upper_ids)]), resample(lm[list(lower_ids)])
        axis = (upper[-1] - upper[0]) / max(float(np.linalg.norm(upper[-1] - upper[0])), 1e-6)
        down = np.array([-axis[1], axis[0]])
        bulge = np.sqrt(np.sin(np.linspace(0, np.pi, len(upper))))[:, None]
        closed = lower + down * OVERLAP_IOD * iod * bulge
        layer = mouth_layer(upper, closed, side_px=1 << 20)
        brow_gap = float((upper[5] - lm[list(brow)].mean(axis=0)) @ down)
        lash_px, lid_px = _lid_extents(image, upper, down, iod)
        lid_px = max(min(lid_px, 0.8 * brow_gap), lash_px + 0.05 * iod)
        lash_closed_px = float(np.clip(0.6 * lash_px, max(0.03 * iod, 1.2), lash_px))
        vec = np.zeros(spec.EYE_PARAMS_LEN)
        vec[[spec.LID_HEIGHT_PX, spec.LASH_PX, spec.LASH_CLOSED_PX, spec.EDGE_SHADE, spec.CAST_SHADOW]] = (
            lid_px, lash_px, lash_closed_px, EDGE_SHADE, CAST_SHADOW)
        affines.append(layer.affine)
        curves.append(layer.curves)
        params.append(vec)
        outlines.append(np.concatenate([upper - down * (lid_px + 2.0), (closed + down * (2.0 * lash_px + 2.0))[::-1]]))
        axes.append(axis)
    return EyeLids(np.stack(affines).astype(np.float32), np.stack(curves).astype(np.float32),
                   np.stack(params).astype(np.float32), np.stack(outlines), np.stack(axes))
