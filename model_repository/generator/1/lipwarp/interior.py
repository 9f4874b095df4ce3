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
from lipwarp.landmarks import FaceFrame

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


def band_feeds(name: str, layer: "MouthLayer", params: dict[str, float], colours: np.ndarray) -> dict[str, np.ndarray]:
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


def _curve_table(points_uv: np.ndarray) -> np.ndarray:
    u = np.maximum.accumulate(points_uv[:, 0])
    v = points_uv[:, 1]
    span = np.maximum(np.diff(u), 1e-4)
    return np.concatenate([[v[0]], u[:-1], 1.0 / span, np.diff(v)])


def mouth_layer(inner_upper_px: np.ndarray, inner_lower_px: np.ndarray, side_px: int, margin_px: int = 3) -> MouthLayer:
    """ROI and mouth-frame tables of one inner-lip contour (11 upper, 11 lower points)."""
    left, right = inner_upper_px[0], inner_upper_px[-1]
    centre = (left + right) / 2
    width = float(np.linalg.norm(right - left))
    half_w = max(width / 2, 1.0)
    axis = (right - left) / max(width, 1e-6)
    perp = np.array([-axis[1], axis[0]])
    pts = np.concatenate([inner_upper_px, inner_lower_px])
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - margin_px, 0, side_px - 2))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - margin_px, 0, side_px - 2))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + margin_px, x0 + 2, side_px))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + margin_px, y0 + 2, side_px))
    affine = np.array([[*(axis / half_w), -centre @ axis / half_w], [*perp, -centre @ perp]])

    def to_uv(p: np.ndarray) -> np.ndarray:
        rel = p - centre
        return np.stack([rel @ axis / half_w, rel @ perp], axis=1)

    curves = np.stack([_curve_table(to_uv(inner_upper_px)), _curve_table(to_uv(inner_lower_px))])
    gap = float(np.linalg.norm(inner_lower_px[5] - inner_upper_px[5]))
    return MouthLayer(np.array([y0, x0, y1, x1], dtype=np.int64), affine.astype(np.float32),
                      curves.astype(np.float32), half_w, gap, centre, axis)


def interior_vector(layer: MouthLayer, frame: FaceFrame, teeth: float, tongue: float) -> np.ndarray:
    """Scalars of the interior drawing (graphspec layout), all in pixels of this crop."""
    iod, gap = frame.iod_px, layer.gap_px
    vec = np.zeros(spec.INTERIOR_LEN, dtype=np.float32)
    vec[spec.OPEN_STRENGTH] = np.clip((gap - 1.3) / 1.5, 0.0, 1.0)
    vec[spec.HALF_WIDTH_PX] = layer.half_width_px
    vec[spec.TEETH_UPPER_PX] = teeth * min(0.15 * iod, 0.6 * gap)
    vec[spec.TEETH_LOWER_PX] = teeth * float(np.clip(0.35 * (gap - 0.2 * iod), 0.0, 0.06 * iod))
    vis = float(np.clip(tongue + 2.0 * (gap / iod - 0.22), 0.0, 1.0)) * float(np.clip(gap / (0.1 * iod), 0, 1))
    vec[spec.TONGUE_VIS] = vis
    vec[spec.TONGUE_PX] = (0.2 + 0.2 * tongue) * gap
    vec[spec.DEPTH_PX] = 0.2 * iod
    return vec
