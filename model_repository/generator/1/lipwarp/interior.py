"""Numpy side of the mouth layers: colours sampled from the face, and the inner-lip geometry.

The graph draws in a "mouth frame" (u: -1..1 corner to corner, v: pixels across the mouth)
inside a small region of interest, so this module hands it an ROI, the affine from ROI pixels
to (u, v), and the two inner-lip curves as piecewise-linear ramp tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipwarp import graphspec as spec
from lipwarp import landmarks as ix

IVORY = np.array([238.0, 232.0, 216.0])
SKIN_POINTS = (50, 280, 205, 425, 200, 18, 101, 330)
BRIGHT_SKIN_POINTS = (151, 9, 108, 337, 6, 197, 4, 117, 346, 36, 266)  # forehead, nose ridge, cheekbones


@dataclass(frozen=True)
class MouthLayer:
    roi: np.ndarray  # int64 [4]: y0, x0, y1, x1
    affine: np.ndarray  # float32 [2, 3]: absolute pixel (x, y, 1) -> (u, v)
    curves: np.ndarray  # float32 [2, 31]: v0, knots, inverse spans, rises (upper, lower)
    half_width_px: float
    gap_px: float  # opening at the middle of the mouth
    centre_px: np.ndarray  # [2] where u = v = 0
    axis: np.ndarray  # [2] unit vector of u (corner to corner)


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Mean RGB of the 3x3 neighbourhood around each point."""
    h, w = image.shape[:2]
    xs = np.clip(np.round(points[:, 0] - 0.5).astype(int), 1, w - 2)
    ys = np.clip(np.round(points[:, 1] - 0.5).astype(int), 1, h - 2)
    acc = np.zeros((len(points), 3))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            acc += image[ys + dy, xs + dx, :3]
    return acc / 9.0


@dataclass(frozen=True)
class FacePalette:
    mouth: np.ndarray  # [PALETTE_ROWS, 3] cavity, deep cavity, teeth, tongue, teeth in shadow
    fill: np.ndarray  # [3, 3] upper lip, lower lip, seam


LUMA = np.array([0.299, 0.587, 0.114])


def teeth_colours(bright_skin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lit and shadowed teeth: ivory hue pulled towards the skin's, a little darker than the
    brightest skin (teeth sit inside the mouth, in the face's light)."""
    bright_luma = max(float(bright_skin @ LUMA), 1.0)
    hue = 0.65 * IVORY / float(IVORY @ LUMA) + 0.35 * bright_skin / bright_luma
    lit = hue * min(0.82 * bright_luma, 205.0)
    return lit, lit * np.array([0.5, 0.43, 0.39])


def face_palette(image: np.ndarray, landmarks: np.ndarray) -> FacePalette:
    """Colours derived from this face's lips and skin."""
    lm = landmarks[:, :2]
    stations = slice(2, 9)
    upper = (lm[list(ix.OUTER_UPPER)][stations] * 0.45 + lm[list(ix.INNER_UPPER)][stations] * 0.55)
    lower = (lm[list(ix.OUTER_LOWER)][stations] * 0.45 + lm[list(ix.INNER_LOWER)][stations] * 0.55)
    upper_rgb = np.median(_sample(image, upper), axis=0)
    lower_rgb = np.median(_sample(image, lower), axis=0)
    skin_samples = _sample(image, lm[list(SKIN_POINTS + BRIGHT_SKIN_POINTS)])
    skin = np.median(skin_samples[:len(SKIN_POINTS)], axis=0)
    luma = skin_samples @ LUMA
    bright = skin_samples[luma >= np.percentile(luma, 75)].mean(axis=0)
    lip = (upper_rgb + lower_rgb) / 2
    teeth, teeth_shadow = teeth_colours(bright)
    # a warm red-brown derived from the lips; never redder than a plausible mouth
    warm = np.maximum(lip, 0.6 * skin + 30.0)
    cavity = warm * np.array([0.36, 0.17, 0.16])
    deep = warm * np.array([0.12, 0.045, 0.045])
    tongue = warm * np.array([0.95, 0.62, 0.64])
    mouth = np.clip(np.stack([cavity, deep, teeth, tongue, teeth_shadow]), 0, 255).astype(np.float32)
    fill = np.stack([upper_rgb, lower_rgb, lip * 0.5]).astype(np.float32)
    return FacePalette(mouth, fill)


def resample(polyline: np.ndarray, count: int = spec.CURVE_SEGMENTS + 1) -> np.ndarray:
    """Resample a corner-to-corner polyline to `count` points, uniformly in vertex index."""
    idx = np.linspace(0.0, len(polyline) - 1.0, count)
    base = np.arange(len(polyline))
    return np.stack([np.interp(idx, base, polyline[:, 0]), np.interp(idx, base, polyline[:, 1])], axis=1)


def band_feeds(name: str, layer: MouthLayer, params: dict[str, float], colours: np.ndarray) -> dict[str, np.ndarray]:
    vec = np.array([params[key] for key in spec.BAND_PARAMS], dtype=np.float32)
    return {f"{name}_roi": layer.roi, f"{name}_affine": layer.affine[None], f"{name}_curves": layer.curves[None],
            f"{name}_params": vec, f"{name}_colours": np.asarray(colours, dtype=np.float32)}


def mouth_fill_feeds(landmarks: np.ndarray, palette: FacePalette, side_px: int) -> dict[str, np.ndarray]:
    """Band that paints the source's open mouth shut (lip colours, dark seam where lips meet)."""
    layer = mouth_layer(landmarks[list(ix.INNER_UPPER), :2], landmarks[list(ix.INNER_LOWER), :2], side_px)
    params = {"strength": float(np.clip((layer.gap_px - 1.0) / 1.5, 0.0, 1.0)), "grow_top_px": 1.5,
              "feather_top_px": 1.0, "grow_bottom_px": 1.5, "min_height_px": 0.8,
              "line_fraction": spec.UPPER_SHARE, "line_width_px": spec.SEAM_WIDTH_PX, "line_strength": 0.6,
              "end_fade_u": 0.05, "highlight": 0.0}
    return band_feeds("fill", layer, params, palette.fill)


def _curve_tables(points_uv: np.ndarray) -> np.ndarray:
    """[..., 31] ramp tables of polylines [..., 11, 2] in (u, v)."""
    u = np.maximum.accumulate(points_uv[..., 0], axis=-1)
    v = points_uv[..., 1]
    span = np.maximum(np.diff(u, axis=-1), 1e-4)
    return np.concatenate([v[..., :1], u[..., :-1], 1.0 / span, np.diff(v, axis=-1)], axis=-1)


@dataclass(frozen=True)
class MouthLayers:
    """`MouthLayer`s of T frames, each field with a leading T axis."""

    roi: np.ndarray  # int64 [T, 4]
    affine: np.ndarray  # float32 [T, 2, 3]
    curves: np.ndarray  # float32 [T, 2, 31]
    half_width_px: np.ndarray  # [T]
    gap_px: np.ndarray  # [T]
    centre_px: np.ndarray  # [T, 2]
    axis: np.ndarray  # [T, 2]

    def __getitem__(self, i: int) -> MouthLayer:
        return MouthLayer(self.roi[i], self.affine[i], self.curves[i], float(self.half_width_px[i]),
                          float(self.gap_px[i]), self.centre_px[i], self.axis[i])


def mouth_layers(inner_upper_px: np.ndarray, inner_lower_px: np.ndarray, side_px: int,
                 margin_px: int = 3) -> MouthLayers:
    """ROIs and mouth-frame tables of T inner-lip contours ([T, 11, 2] upper, [T, 11, 2] lower)."""
    left, right = inner_upper_px[:, 0], inner_upper_px[:, -1]
    centre = (left + right) / 2
    width = np.linalg.norm(right - left, axis=-1)
    half_w = np.maximum(width / 2, 1.0)
    axis = (right - left) / np.maximum(width, 1e-6)[:, None]
    perp = np.stack([-axis[:, 1], axis[:, 0]], axis=-1)
    pts = np.concatenate([inner_upper_px, inner_lower_px], axis=1)
    lo, hi = pts.min(axis=1), pts.max(axis=1)
    x0 = np.clip(np.floor(lo[:, 0]) - margin_px, 0, side_px - 2).astype(np.int64)
    y0 = np.clip(np.floor(lo[:, 1]) - margin_px, 0, side_px - 2).astype(np.int64)
    x1 = np.clip(np.ceil(hi[:, 0]) + margin_px, x0 + 2, side_px).astype(np.int64)
    y1 = np.clip(np.ceil(hi[:, 1]) + margin_px, y0 + 2, side_px).astype(np.int64)
    along = (centre * axis).sum(-1)
    across = (centre * perp).sum(-1)
    affine = np.stack([np.concatenate([axis / half_w[:, None], (-along / half_w)[:, None]], axis=1),
                       np.concatenate([perp, -across[:, None]], axis=1)], axis=1)

    def to_uv(points: np.ndarray) -> np.ndarray:
        rel = points - centre[:, None]
        return np.stack([(rel * axis[:, None]).sum(-1) / half_w[:, None], (rel * perp[:, None]).sum(-1)], axis=-1)

    curves = np.stack([_curve_tables(to_uv(inner_upper_px)), _curve_tables(to_uv(inner_lower_px))], axis=1)
    gap = np.linalg.norm(inner_lower_px[:, 5] - inner_upper_px[:, 5], axis=-1)
    return MouthLayers(np.stack([y0, x0, y1, x1], axis=1), affine.astype(np.float32), curves.astype(np.float32),
                       half_w, gap, centre, axis)


def mouth_layer(inner_upper_px: np.ndarray, inner_lower_px: np.ndarray, side_px: int, margin_px: int = 3) -> MouthLayer:
    """ROI and mouth-frame tables of one inner-lip contour (11 upper, 11 lower points)."""
    return mouth_layers(np.asarray(inner_upper_px, dtype=np.float64)[None],
                        np.asarray(inner_lower_px, dtype=np.float64)[None], side_px, margin_px)[0]


def interior_vectors(layers: MouthLayers, iod: float, teeth: np.ndarray, tongue: np.ndarray) -> np.ndarray:
    """[T, INTERIOR_LEN] scalars of the interior drawing (graphspec layout), all in pixels of this crop."""
    gap = layers.gap_px
    vec = np.zeros((gap.shape[0], spec.INTERIOR_LEN), dtype=np.float32)
    vec[:, spec.OPEN_STRENGTH] = np.clip((gap - 1.3) / 1.5, 0.0, 1.0)
    vec[:, spec.HALF_WIDTH_PX] = layers.half_width_px
    vec[:, spec.TEETH_UPPER_PX] = teeth * np.minimum(0.15 * iod, 0.6 * gap)
    vec[:, spec.TEETH_LOWER_PX] = teeth * np.clip(0.35 * (gap - 0.2 * iod), 0.0, 0.06 * iod)
    vis = np.clip(tongue + 2.0 * (gap / iod - 0.22), 0.0, 1.0) * np.clip(gap / (0.1 * iod), 0, 1)
    vec[:, spec.TONGUE_VIS] = vis
    vec[:, spec.TONGUE_PX] = (0.2 + 0.2 * tongue) * gap
    vec[:, spec.DEPTH_PX] = 0.2 * iod
    return vec
