"""Mouth transplant for dubbing by re-synthesis (Video Rewrite, Bregler, Covell & Slaney,
SIGGRAPH 1997): the lower face of a reference frame of the same person (its mouth, lips,
chin) is warped onto a target frame's head, the target's jaw line is moved to where the
reference chin sits relative to the nose, colours are matched on a skin ring and the result
is blended with a feathered lower-face mask.

Numpy computes the geometry on a coarse grid (`plan_transplant`: similarity on the upper
face, thin-plate splines (Bookstein 1989) for both sampling fields, masks); the pixel work
(upsampling, one sample per image: bicubic for the reference's lips and teeth, bilinear
for its skin and for the target, colour transfer, seam correction, blending) runs either in numpy (`render_numpy`) or in the ONNX graph built by `../build_transplant.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRAPH_FILE = "transplant.onnx"
INPUTS = ("target", "reference", "target_offset", "reference_offset", "blend_mask", "warp_mask", "nose_ramp",
          "target_ring", "reference_ring", "seam_band", "seam_kernel_rows", "seam_kernel_cols", "reference_window",
          "sharp_window")
OUTPUTS = ("crop", "mask")
COARSE_STEP_PX = 8  # geometry and masks live on a grid of side/8 cells (crops are multiples of 32)
# Opponent colour space (luma + two chroma axes): a linear stand-in for Lab, so the
# per-channel mean/std transfer (Reinhard et al. 2001) stays a 3x3 matrix in the graph.
OPPONENT = np.array([[0.299, 0.587, 0.114], [-0.169, -0.331, 0.5], [0.5, -0.419, -0.081]], np.float32)
GAIN_LIMITS = (0.75, 1.33)
# Keys' cubic convolution (a = -0.5): the weights of the taps at -1, 0, 1, 2 as polynomials
# (t^3, t^2, t, 1) in the fraction t; the reference is sampled with it (sharp, one resampling).
CUBIC_COEFFICIENTS = ((-0.5, 1.0, -0.5, 0.0), (1.5, -2.5, 0.0, 1.0), (-1.5, 2.0, 0.5, 0.0), (0.5, -0.5, 0.0, 0.0))

# MediaPipe Face Mesh indices (Kartynnik et al. 2019).
UPPER_FACE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 8, 98, 327, 234, 454, 116, 345)
RIGHT_EYE = (33, 133, 159, 145)
LEFT_EYE = (362, 263, 386, 374)
JAW = (93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323)
CHEEKS = (200, 427, 216, 432, 418, 194, 202, 436, 207, 164, 421, 201, 165, 391, 422, 212, 50, 280,
          101, 330, 205, 425, 147, 376, 187, 411, 199, 175, 18, 83, 313)
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375)
NOSE = (1, 2, 98, 327, 4, 5, 195, 197, 6, 168, 129, 358, 64, 294)
SUBNASALE, UPPER_LIP_TOP, LOWER_LIP_BOTTOM, CHIN = 2, 0, 17, 152
MOUTH_CORNERS = (61, 291)
BORDER_ANCHORS_PER_SIDE = 8


@dataclass(frozen=True)
class TransplantPlan:
    """Everything the pixel stage needs. Only a window of the crop changes (the lower face and
    a cell of margin): the per-pixel maps cover that window, coarse at COARSE_STEP_PX cells
    ([Gh, Gw]); the skin rings cover the whole crop ([G, G]), measured on the unwarped crops."""

    side_px: int
    window: tuple[int, int, int, int]  # x0, y0, width, height in crop pixels (multiples of COARSE_STEP_PX)
    target_offset: np.ndarray  # float32 [1, 2, Gh, Gw]: target sample position - window pixel (px)
    reference_offset: np.ndarray  # float32 [1, 2, Gh, Gw]: reference sample position - window pixel (px)
    blend_mask: np.ndarray  # float32 [1, 1, Gh, Gw]: reference share in the composite (before nose_ramp)
    warp_mask: np.ndarray  # float32 [1, 1, Gh, Gw]: where the warped target differs from the target
    nose_ramp: np.ndarray  # float32 [7]: u, v affine in window (x, y); blend *= smoothstep(v - k u^2), 0 above the nose
    target_ring: np.ndarray  # float32 [1, 1, G, G]: skin ring weights on the target crop
    reference_ring: np.ndarray  # float32 [1, 1, G, G]: skin ring weights on the reference crop
    seam_band: np.ndarray  # float32 [1, 1, Gh, Gw]: skin where the two images meet (the seam)
    seam_kernel_rows: np.ndarray  # float32 [Gh, Gh]: Gaussian that spreads the seam's mismatch inwards (rows)
    seam_kernel_cols: np.ndarray  # float32 [Gw, Gw]: ... and across (columns)
    output_landmarks: np.ndarray  # float32 [468, 2]: where the composite's landmarks are
    # int64 [4]: x0, y0, width, height in window pixels (multiples of COARSE_STEP_PX) of the part
    # of the window where the reference shows (blend > 0, plus a cell of margin): the costly
    # sample of the reference is taken only there; elsewhere its share is exactly 0.
    reference_window: np.ndarray
    # int64 [4]: x0, y0, width, height in reference_window pixels (multiples of COARSE_STEP_PX) of
    # the lips and teeth (and a cell of margin): the reference is sampled bicubic there, where
    # its edges are, and bilinear over the rest of reference_window (skin: a third of the taps).
    sharp_window: np.ndarray

    def feeds(self, target: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
        return {"target": np.ascontiguousarray(target[None], np.uint8),
                "reference": np.ascontiguousarray(reference[None], np.uint8),
                "target_offset": self.target_offset, "reference_offset": self.reference_offset,
                "blend_mask": self.blend_mask, "warp_mask": self.warp_mask, "nose_ramp": self.nose_ramp,
                "target_ring": self.target_ring, "reference_ring": self.reference_ring,
                "seam_band": self.seam_band, "seam_kernel_rows": self.seam_kernel_rows,
                "seam_kernel_cols": self.seam_kernel_cols, "reference_window": self.reference_window,
                "sharp_window": self.sharp_window}

    def compose(self, target: np.ndarray, crop: np.ndarray, mask: np.ndarray,
                out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The window's (crop, mask) placed in the full crop: the target elsewhere, mask 0.
        `out`: (frame uint8 [S,S,3], mask float32 [S,S] of zeros) to write into (a batch's rows)."""
        x0, y0, w, h = self.window
        if out is None:
            out = (np.empty_like(target, np.uint8), np.zeros(target.shape[:2], np.float32))
        full, full_mask = out
        full[...] = target
        full[y0:y0 + h, x0:x0 + w] = crop
        full_mask[y0:y0 + h, x0:x0 + w] = mask
        return full, full_mask


# ---------------------------------------------------------------- geometry (numpy)

def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity mapping src points onto dst (Umeyama 1991)."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sig, vt = np.linalg.svd(d.T @ s)
    sign = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, sign]) @ vt
    scale = (sig * np.array([1.0, sign])).sum() / max((s**2).sum(), 1e-12)
    return np.concatenate([scale * rot, (md - scale * rot @ ms)[:, None]], axis=1)


def _apply(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ affine[:, :2].T + affine[:, 2]


SplineFit = tuple[np.ndarray, np.ndarray, np.ndarray]  # centres (scaled), radial weights, affine part


def _tps_fit(centres: np.ndarray, values: np.ndarray, side: float, reg: float = 1e-6) -> SplineFit:
    c = centres / side
    diff = c[:, None] - c[None]
    d2 = diff[..., 0] ** 2 + diff[..., 1] ** 2  # the same sums as .sum(-1), at half its time
    k = 0.5 * d2 * np.log(np.maximum(d2, 1e-12))
    n = len(c)
    k[np.diag_indices(n)] = reg
    p = np.concatenate([np.ones((n, 1)), c], 1)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, values.shape[1]))
    rhs[:n] = values
    sol = np.linalg.lstsq(system, rhs, rcond=None)[0] if not np.isfinite(system).all() else np.linalg.solve(system, rhs)
    return c, sol[:n], sol[n:]


def _tps_eval(fit: SplineFit, points: np.ndarray, side: float) -> np.ndarray:
    """The spline at points; the radial kernel in float32 (its log is most of the plan's
    time, and offsets need far less than float32's precision)."""
    c, w, a = fit
    x = points / side
    d2 = (x**2).sum(1)[:, None] + (c**2).sum(1)[None] - 2.0 * x @ c.T
    d2 = np.maximum(d2.astype(np.float32), np.float32(1e-12))
    k = np.float32(0.5) * d2 * np.log(d2)
    return (k @ w.astype(np.float32)).astype(np.float64) + np.concatenate([np.ones((len(x), 1)), x], 1) @ a


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _polygon_inside(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd test of meshgrid points (xs varies along columns, ys along rows), evaluated
    only inside the polygon's bounding box."""
    lo, hi = poly.min(0), poly.max(0)
    cols = np.flatnonzero((xs[0] >= lo[0]) & (xs[0] <= hi[0]))
    rows = np.flatnonzero((ys[:, 0] >= lo[1]) & (ys[:, 0] <= hi[1]))
    inside = np.zeros(xs.shape, bool)
    if cols.size and rows.size:
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        inside[box] = _scanline_inside(poly, xs[box], ys[box])
    return inside


def _scanline_inside(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Crossings of all edges at once (edges x points): odd count = inside."""
    xi, yi = poly[:, 0], poly[:, 1]
    xj, yj = np.roll(xi, 1), np.roll(yi, 1)
    keep = yi != yj  # a horizontal edge never crosses a scanline
    xi, yi, xj, yj = (a[keep][:, None] for a in (xi, yi, xj, yj))
    px, py = xs.ravel()[None], ys.ravel()[None]
    x_at = (xj - xi) * (py - yi) / (yj - yi) + xi
    crossings = (((yi > py) != (yj > py)) & (px < x_at)).sum(0)
    return (crossings % 2 == 1).reshape(xs.shape)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a square map, edges clamped (as a matrix product: maps are small)."""
    n = img.shape[0]
    idx = np.arange(n)
    k = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / max(sigma, 1e-3)) ** 2)
    k /= k.sum(1, keepdims=True)
    return k @ img @ k.T


@dataclass(frozen=True)
class _Frame:
    origin: np.ndarray
    axis_y: np.ndarray
    iod: float

    def down(self, pts: np.ndarray) -> np.ndarray:
        """Signed distance down the face from the eye line, in inter-ocular distances."""
        return ((pts - self.origin) @ self.axis_y) / self.iod


def _face_frame(lm: np.ndarray) -> _Frame:
    right, left = lm[list(RIGHT_EYE)].mean(0), lm[list(LEFT_EYE)].mean(0)
    axis_x = left - right
    iod = float(np.linalg.norm(axis_x))
    if not np.isfinite(iod) or iod < 1.0:
        raise ValueError("degenerate landmarks: the eyes coincide")
    axis_x /= iod
    return _Frame(origin=(left + right) / 2, axis_y=np.array([-axis_x[1], axis_x[0]]), iod=iod)


def _border_anchors(side: int) -> np.ndarray:
    t = np.linspace(0, side - 1, BORDER_ANCHORS_PER_SIDE, endpoint=False)
    e = float(side - 1)
    return np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([np.full_like(t, e), t], 1),
                           np.stack([e - t, np.full_like(t, e)], 1), np.stack([np.zeros_like(t), e - t], 1)])


def _border_window(xs: np.ndarray, ys: np.ndarray, side: int) -> np.ndarray:
    edge = np.minimum(np.minimum(xs, side - 1 - xs), np.minimum(ys, side - 1 - ys)) / side
    return _smoothstep((edge - 0.03) / 0.09)


def _ring(lm: np.ndarray, frame: _Frame, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Skin around the mouth (cheeks beside it, chin below it), inside the jaw, below the nose."""
    centre = lm[[UPPER_LIP_TOP, LOWER_LIP_BOTTOM]].mean(0)
    half_w = 0.5 * np.linalg.norm(lm[MOUTH_CORNERS[1]] - lm[MOUTH_CORNERS[0]])
    half_h = 0.5 * np.linalg.norm(lm[LOWER_LIP_BOTTOM] - lm[UPPER_LIP_TOP])
    axis_x = np.array([frame.axis_y[1], -frame.axis_y[0]])
    rel = np.stack([xs - centre[0], ys - centre[1]], -1)
    u, v = rel @ axis_x, rel @ frame.axis_y
    r = (u / (half_w * 1.25 + 1.0)) ** 2 + (v / (half_h * 1.25 + 0.12 * frame.iod)) ** 2
    jaw = _polygon_inside(_shrink(lm[list(JAW)], centre, 0.85), xs, ys)
    below = frame.down(np.stack([xs, ys], -1)) > frame.down(lm[SUBNASALE]) + 0.08
    return ((r > 1.0) & jaw & below).astype(np.float32)


def _shrink(poly: np.ndarray, centre: np.ndarray, factor: float) -> np.ndarray:
    return centre + (poly - centre) * factor


def plan_transplant(target_landmarks: np.ndarray, reference_landmarks: np.ndarray, side_px: int) -> TransplantPlan:
    """Sampling fields and masks that put the reference's lower face on the target's head."""
    tgt = np.asarray(target_landmarks, np.float64)[:, :2]
    ref = np.asarray(reference_landmarks, np.float64)[:, :2]
    frame = _face_frame(tgt)
    # 1. Reference -> target similarity on the rigid upper face (eyes, nose, forehead).
    sim = _similarity(ref[list(UPPER_FACE)], tgt[list(UPPER_FACE)])
    ref_on_tgt = _apply(sim, ref)
    # 2. Output landmarks: the target's above the nose, the reference's from the mouth down
    #    (so the chin follows the new mouth), a smooth blend in between.
    y = frame.down(tgt)
    y_nose, y_mouth = float(frame.down(tgt[SUBNASALE])), float(frame.down(tgt[[13, 14]].mean(0)))
    w = _smoothstep((y - y_nose) / max(y_mouth - y_nose, 1e-3))[:, None]
    shift = ref_on_tgt - tgt
    # The jaw line takes only the reference's drop (along the face), not its width: a small
    # yaw difference would otherwise bulge the silhouette against the background.
    jaw = list(JAW)
    shift[jaw] = (shift[jaw] @ frame.axis_y)[:, None] * frame.axis_y
    out = tgt + w * shift

    # 3. Coarse output grid (cell centres, pixel-centre coordinates).
    if side_px % COARSE_STEP_PX:
        raise ValueError(f"crop side {side_px} is not a multiple of {COARSE_STEP_PX}")
    g = side_px // COARSE_STEP_PX
    centres = (np.arange(g) + 0.5) * side_px / g - 0.5
    xs, ys = np.meshgrid(centres, centres)
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    border = _border_window(xs, ys, side_px)

    # 4. Target field: jaw, cheeks and nose move to the output positions; the border stays.
    t_idx = list(JAW) + list(CHEEKS) + list(NOSE) + list(UPPER_FACE)
    anchors = _border_anchors(side_px)
    t_fit = _tps_fit(np.concatenate([out[t_idx], anchors]),
                     np.concatenate([tgt[t_idx] - out[t_idx], np.zeros_like(anchors)]), side_px)
    y_grid = frame.down(grid).reshape(g, g)
    # ... fading out within ~0.4 IOD outside the jaw line, so only the chin's surroundings move.
    mouth_t = tgt[[UPPER_LIP_TOP, LOWER_LIP_BOTTOM]].mean(0)
    near = (_polygon_inside(_shrink(out[list(JAW)], mouth_t, 1.2), xs, ys)
            | _polygon_inside(_shrink(tgt[list(JAW)], mouth_t, 1.2), xs, ys))
    cell_iod = frame.iod / (side_px / g)
    near_soft = np.clip(_blur(near.astype(np.float64), 0.15 * cell_iod) * 2.0, 0.0, 1.0)
    # (one coarse cell of margin below the nose: upsampling spreads values by a cell)
    y_start = y_nose + 1.0 / cell_iod
    window = border * near_soft * _smoothstep((y_grid - y_start) / max(y_mouth - y_start, 0.05))
    # The spline is evaluated only where the window lets it move anything.
    t_off = np.zeros((g, g, 2))
    moving = window > 0
    t_off[moving] = _tps_eval(t_fit, grid[moving.ravel()], side_px) * window[moving][:, None]

    # 5. Masks: reference inside the (slightly shrunk) jaw below the nose, feathered.
    mouth_c = out[[UPPER_LIP_TOP, LOWER_LIP_BOTTOM]].mean(0)
    jaw_poly = _shrink(out[list(JAW)], mouth_c, 0.9)
    hard = _polygon_inside(jaw_poly, xs, ys).astype(np.float64)
    soft = np.clip(_blur(hard, 0.07 * cell_iod) * 1.6 - 0.3, 0.0, 1.0)
    y_lip = float(frame.down(out[UPPER_LIP_TOP]))
    ramp = _nose_ramp(frame, tgt, y_nose, y_lip)
    blend = soft * border
    # Sub-0.1-pixel motion is dropped, so the paste region stays the jaw's surroundings.
    magnitude = np.linalg.norm(t_off, axis=-1)
    t_off[magnitude < 0.1] = 0.0
    moved = np.clip(magnitude / 0.5, 0.0, 1.0) * (magnitude >= 0.1) * border

    # 6. Seam band: skin cells where the blend is partial, away from both mouths.
    partial = blend * _evaluate_ramp(ramp, xs, ys)
    lips = (_polygon_inside(_shrink(out[list(OUTER_LIPS)], mouth_c, 1.25), xs, ys)
            | _polygon_inside(_shrink(tgt[list(OUTER_LIPS)], mouth_t, 1.25), xs, ys))
    band = ((partial > 0.03) & (partial < 0.9) & ~lips).astype(np.float64) * border
    idx = np.arange(g)
    kernel = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / (0.5 * cell_iod)) ** 2)

    # 7. The window: every cell that changes anything, plus one cell of margin (linear
    #    upsampling reaches half a cell into the neighbours; the margin's outer half is 0).
    r0, r1, c0, c1 = _active_cells((blend > 0) | (moved > 0), g)
    rows, cols = slice(r0, r1), slice(c0, c1)
    b0, b1, a0, a1 = _active_cells(blend[rows, cols] > 0, r1 - r0, c1 - c0)
    x0, y0 = c0 * COARSE_STEP_PX, r0 * COARSE_STEP_PX
    origin = np.array([x0, y0], np.float64)  # window pixel + origin = crop pixel

    # 8. Reference field (window only): exactly the inverse similarity where w = 1 (teeth keep their shape).
    r_idx = list(OUTER_LIPS) + list(JAW) + list(CHEEKS) + list(NOSE) + list(UPPER_FACE)
    r_fit = _tps_fit(out[r_idx], ref[r_idx] - out[r_idx], side_px)
    win_grid = np.stack([xs[rows, cols].ravel(), ys[rows, cols].ravel()], 1)
    r_off = _tps_eval(r_fit, win_grid, side_px).reshape(r1 - r0, c1 - c0, 2)
    # The lips (and teeth between them) within the reference's part of the window.
    l0, l1, k0, k1 = _active_cells(lips[rows, cols][b0:b1, a0:a1] & (blend[rows, cols][b0:b1, a0:a1] > 0),
                                   b1 - b0, a1 - a0)

    def as_map(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[None, None], np.float32)

    def as_field(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((a + origin).transpose(2, 0, 1)[None], np.float32)

    return TransplantPlan(
        side_px=side_px,
        window=(x0, y0, (c1 - c0) * COARSE_STEP_PX, (r1 - r0) * COARSE_STEP_PX),
        target_offset=as_field(t_off[rows, cols]), reference_offset=as_field(r_off),
        blend_mask=as_map(blend[rows, cols]), warp_mask=as_map(moved[rows, cols]),
        nose_ramp=_shift_ramp(ramp, origin),
        target_ring=as_map(_ring(tgt, frame, xs, ys)),
        reference_ring=as_map(_ring(ref, _face_frame(ref), xs, ys)),
        seam_band=as_map(band[rows, cols]),
        seam_kernel_rows=np.ascontiguousarray(kernel[rows, rows], np.float32),
        seam_kernel_cols=np.ascontiguousarray(kernel[cols, cols], np.float32),
        output_landmarks=out.astype(np.float32),
        reference_window=np.array([a0, b0, a1 - a0, b1 - b0], np.int64) * COARSE_STEP_PX,
        sharp_window=np.array([k0, l0, k1 - k0, l1 - l0], np.int64) * COARSE_STEP_PX)


def _active_cells(active: np.ndarray, g: int, gw: int | None = None) -> tuple[int, int, int, int]:
    """Row and column range [r0, r1) x [c0, c1) of the active cells plus one cell of margin
    (on a g x g grid, or g x gw)."""
    gw = g if gw is None else gw
    rows, cols = np.flatnonzero(active.any(1)), np.flatnonzero(active.any(0))
    if rows.size == 0:  # nothing changes: a one-cell window in the middle
        return g // 2, g // 2 + 1, gw // 2, gw // 2 + 1
    return max(0, rows[0] - 1), min(g, rows[-1] + 2), max(0, cols[0] - 1), min(gw, cols[-1] + 2)


def _shift_ramp(ramp: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The nose ramp's affine terms for window coordinates (crop = window + shift)."""
    out = ramp.astype(np.float64).copy()
    out[2] += ramp[0] * shift[0] + ramp[1] * shift[1]
    out[5] += ramp[3] * shift[0] + ramp[4] * shift[1]
    return out.astype(np.float32)


def _nose_ramp(frame: _Frame, tgt: np.ndarray, y_nose: float, y_lip: float) -> np.ndarray:
    """Top edge of the blend, evaluated per pixel in the pixel stage (the nose-to-lip distance
    is only a cell or two of the coarse grid): just below the nose in the middle, curving
    down and softening towards the cheeks, where a straight edge would show as a line.
    t = v - k u^2 with u (IOD, across the face from the nose) and v (ramp lengths, down)."""
    axis_x = np.array([frame.axis_y[1], -frame.axis_y[0]])
    centre = tgt[SUBNASALE]
    y0 = y_nose + 0.03
    length = max(0.7 * (y_lip - y_nose) - 0.03, 0.08) * frame.iod
    u = [axis_x[0] / frame.iod, axis_x[1] / frame.iod, -(centre @ axis_x) / frame.iod]
    v = [frame.axis_y[0] / length, frame.axis_y[1] / length,
         -(frame.origin @ frame.axis_y + y0 * frame.iod) / length]
    k = 0.6 * frame.iod / length  # the edge drops 0.6 IOD per IOD^2 of lateral distance
    return np.array(u + v + [k], np.float32)


def _evaluate_ramp(ramp: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    u = xs * ramp[0] + ys * ramp[1] + ramp[2]
    v = xs * ramp[3] + ys * ramp[4] + ramp[5]
    return _smoothstep(v - ramp[6] * u * u)


# ---------------------------------------------------------------- pixels (numpy reference)

def upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C, Gh, Gw] -> [C, H, W]: linear, half-pixel centres, edge clamped (ONNX Resize linear)."""
    def axis(cells: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
        i0 = np.floor(pos).astype(int)
        return i0, np.minimum(i0 + 1, cells - 1), (pos - i0).astype(np.float32)

    r0, r1, fy = axis(coarse.shape[-2], height)
    c0, c1, fx = axis(coarse.shape[-1], width)
    rows = coarse[:, r0] * (1 - fy)[None, :, None] + coarse[:, r1] * fy[None, :, None]
    return rows[:, :, c0] * (1 - fx) + rows[:, :, c1] * fx


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of [S, S, 3] at pixel-centre coordinates, edge clamped -> float32."""
    h, w = image.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    img = image.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def sample_bicubic(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bicubic (Keys, a = -0.5) sample of [S, S, 3] at pixel-centre coordinates, edge clamped -> float32."""
    h, w = image.shape[:2]
    x = np.clip(x, 0, w - 1).astype(np.float32)
    y = np.clip(y, 0, h - 1).astype(np.float32)
    x0, y0 = np.floor(x), np.floor(y)

    def weights(t: np.ndarray) -> list[np.ndarray]:
        return [((c3 * t + c2) * t + c1) * t + c0 for c3, c2, c1, c0 in
                (np.asarray(row, np.float32) for row in CUBIC_COEFFICIENTS)]

    wx, wy = weights(x - x0), weights(y - y0)
    img = image.astype(np.float32)
    out = np.zeros(x.shape + (3,), np.float32)
    for j, dy in enumerate((-1, 0, 1, 2)):
        rows = np.clip(y0 + dy, 0, h - 1).astype(int)
        for i, dx in enumerate((-1, 0, 1, 2)):
            cols = np.clip(x0 + dx, 0, w - 1).astype(int)
            out += (wy[j] * wx[i])[..., None] * img[rows, cols]
    return out


def colour_transfer(target: np.ndarray, reference: np.ndarray, target_ring: np.ndarray,
                    reference_ring: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, bias) mapping reference RGB onto the target's skin statistics (Reinhard
    et al. 2001 mean/std transfer, in the opponent space)."""
    stats = []
    for image, ring in ((target, target_ring), (reference, reference_ring)):
        g = ring.shape[-1]
        step = image.shape[0] // g
        small = image[: g * step, : g * step].astype(np.float32).reshape(g, step, g, step, 3).mean((1, 3))
        opp = small @ OPPONENT.T
        wts = ring.reshape(g, g, 1)
        total = max(float(wts.sum()), 1.0)
        mean = (opp * wts).sum((0, 1)) / total
        std = np.sqrt(((opp - mean) ** 2 * wts).sum((0, 1)) / total + 1.0)
        stats.append((mean, std))
    (mt, st), (mr, sr) = stats
    gain = np.clip(st / sr, *GAIN_LIMITS)
    inv = np.linalg.inv(OPPONENT)
    matrix = inv @ np.diag(gain) @ OPPONENT
    return matrix.astype(np.float32), (inv @ (mt - gain * mr)).astype(np.float32)


def render_numpy(plan: TransplantPlan, target: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixel stage in numpy: the same arithmetic as the ONNX graph (on the plan's window)."""
    crop, mask = render_window_numpy(plan, target, reference)
    return plan.compose(target, crop, mask)


def render_window_numpy(plan: TransplantPlan, target: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, _, w, h = plan.window
    bx, by = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    t_off = upsample(plan.target_offset[0], h, w)
    r_off = upsample(plan.reference_offset[0], h, w)
    blend = upsample(plan.blend_mask[0], h, w)[0] * _evaluate_ramp(plan.nose_ramp, bx[None, :], by[:, None])
    paste = np.maximum(blend, upsample(plan.warp_mask[0], h, w)[0])
    blend = blend[..., None]
    warped_t = sample_bilinear(target, bx[None, :] + t_off[0], by[:, None] + t_off[1])
    # The reference only inside plan.reference_window (its share is 0 elsewhere: zeros there).
    rx, ry, rw, rh = (int(v) for v in plan.reference_window)
    inner = (slice(ry, ry + rh), slice(rx, rx + rw))
    warped_r = np.zeros((h, w, 3), np.float32)
    ref_x, ref_y = (bx[None, :] + r_off[0])[inner], (by[:, None] + r_off[1])[inner]
    warped_r[inner] = sample_bilinear(reference, ref_x, ref_y)
    sx, sy, sw, sh = (int(v) for v in plan.sharp_window)
    sharp = (slice(ry + sy, ry + sy + sh), slice(rx + sx, rx + sx + sw))
    warped_r[sharp] = sample_bicubic(reference, ref_x[sy:sy + sh, sx:sx + sw], ref_y[sy:sy + sh, sx:sx + sw])
    matrix, bias = colour_transfer(target, reference, plan.target_ring[0, 0], plan.reference_ring[0, 0])
    matched = warped_r @ matrix.T + bias
    # Membrane-like seam correction (a cheap stand-in for Poisson blending, Perez et al. 2003):
    # the low-frequency mismatch measured on the seam band is spread inwards and added.
    step = COARSE_STEP_PX
    gh, gw = h // step, w // step
    diff = (warped_t - matched).reshape(gh, step, gw, step, 3).mean((1, 3)).transpose(2, 0, 1)
    band, rows, cols = plan.seam_band[0], plan.seam_kernel_rows, plan.seam_kernel_cols
    numerator = rows @ (diff * band) @ cols.T
    denominator = rows @ band @ cols.T
    matched = matched + upsample(numerator / (denominator + 1e-3), h, w).transpose(1, 2, 0)
    # paste_crop blends with the paste mask again: give the reference its share relative to it.
    share = np.minimum(blend / np.maximum(paste[..., None], 1e-6), 1.0)
    composite = warped_t + share * (matched - warped_t)
    crop = np.floor(np.clip(composite, 0, 255) + 0.5).astype(np.uint8)
    return crop, paste.astype(np.float32)


class TransplantGraph:
    """Runs the pixel stage in the ONNX graph (`transplant.onnx`, built by build_transplant.py)."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from proto.ort_providers import session_providers

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # One frame per run: the arena holds one crop's working set (crops are at most
        # 512 px), and reusing it saves a page-faulting allocation per buffer per frame.
        options.enable_cpu_mem_arena = True
        self._session = ort.InferenceSession(str(Path(model_dir) / GRAPH_FILE), options,
                                             providers=session_providers())

    def render(self, plan: TransplantPlan, target: np.ndarray, reference: np.ndarray,
               out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        crop, mask = self._session.run(list(OUTPUTS), plan.feeds(target, reference))
        return plan.compose(target, crop[0], mask[0], out)


def transplant_mouth(target_crop: np.ndarray, target_landmarks: np.ndarray, reference_crop: np.ndarray,
                     reference_landmarks: np.ndarray, graph: TransplantGraph | None = None,
                     out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference's mouth on the target frame: (crop uint8 [S,S,3], paste mask float32 [S,S]),
    written into `out` when given (see TransplantPlan.compose).

    Landmarks are [468, 3] (or [468, 2]) in each crop's pixels; both crops are S x S.
    """
    target_crop, reference_crop = np.asarray(target_crop), np.asarray(reference_crop)
    side = target_crop.shape[0]
    if target_crop.shape != (side, side, 3) or reference_crop.shape != target_crop.shape:
        raise ValueError(f"crops must both be [S, S, 3], got {list(target_crop.shape)} and {list(reference_crop.shape)}")
    plan = plan_transplant(target_landmarks, reference_landmarks, side)
    if graph is not None:
        return graph.render(plan, target_crop, reference_crop, out)
    crop, mask = render_window_numpy(plan, target_crop, reference_crop)
    return plan.compose(target_crop, crop, mask, out)
