"""The person's own mouth appearances in a tracked video, for dubbing by re-synthesis
("Video Rewrite", Bregler, Covell & Slaney, SIGGRAPH 1997): every usable source frame gets a
mouth-shape descriptor measured from its landmarks (head pose removed by Procrustes) and
mapped into the 8-parameter space of the `audio_features` stage, calibrated on the video."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from preprocess.decode import FrameStore

log = logging.getLogger(__name__)

N_PARAMS = 8
JAW, LIP_OPEN, LIP_WIDTH, LIP_ROUND, CLOSURE, TEETH, TONGUE, ACTIVITY = range(N_PARAMS)

# MediaPipe Face Mesh indices (Kartynnik et al. 2019).
STABLE = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 10, 151, 9, 8, 234, 454, 98, 327, 2)
EYES = ((33, 133), (362, 263))
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
GAP_PAIRS = ((82, 87), (13, 14), (312, 317))
LIP_CENTRES = (0, 17, 13, 14)
MOUTH_CORNERS = (61, 291)
SUBNASALE, CHIN = 2, 152

# Anatomical floors (inter-ocular distances) for the calibrated ranges: a person who never
# opens wide in the video keeps small library values, so wide targets fall back.
MIN_GAP_RANGE_IOD = 0.30
MIN_JAW_RANGE_IOD = 0.18
MIN_WIDTH_RANGE_IOD = 0.08
MIN_ROUND_RANGE_IOD = 0.04
MIN_TEETH_RANGE = 0.03  # bright inner-mouth area, IOD^2
MAX_POSE_RAD = np.radians(35.0)


@dataclass(frozen=True)
class Calibration:
    """Raw descriptor -> parameter: value = (raw - zero) / span, per column, then clipped."""

    zero: np.ndarray  # float64 [8]
    span: np.ndarray  # float64 [8]; NaN where a column is not measured


@dataclass(frozen=True)
class MouthLibrary:
    """One row per source frame; `usable` marks frames whose mouth may be transplanted."""

    params: np.ndarray  # float32 [N, 8], audio-feature space (0 where unusable)
    raw: np.ndarray  # float32 [N, 8], raw measurements in IOD units (NaN where no face)
    pose: np.ndarray  # float32 [N, 3] yaw, pitch, roll in radians (0 where no face)
    usable: np.ndarray  # bool [N]
    calibration: Calibration

    @property
    def count(self) -> int:
        return int(self.params.shape[0])


def _kabsch(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Similarity (R, s, t) with reference ~ s * points @ R.T + t (least squares)."""
    mp, mr = points.mean(0), reference.mean(0)
    p, r = points - mp, reference - mr
    u, sig, vt = np.linalg.svd(r.T @ p)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    scale = float((sig * np.array([1.0, 1.0, d])).sum() / max((p**2).sum(), 1e-12))
    return rot, scale, mr - scale * mp @ rot.T


def _canonical_reference(stable: np.ndarray) -> np.ndarray:
    """Generalised Procrustes mean of the stable points, scaled to unit inter-ocular distance."""
    reference = stable[0] - stable[0].mean(0)
    for _ in range(3):
        aligned = []
        for pts in stable:
            rot, s, t = _kabsch(pts, reference)
            aligned.append(s * pts @ rot.T + t)
        reference = np.mean(aligned, axis=0)
        reference -= reference.mean(0)
        iod = np.linalg.norm(reference[[2, 3]].mean(0) - reference[[0, 1]].mean(0))
        reference /= iod
    return reference


def _euler(rot: np.ndarray) -> np.ndarray:
    yaw = np.arctan2(-rot[2, 0], np.hypot(rot[0, 0], rot[1, 0]))
    pitch = np.arctan2(rot[2, 1], rot[2, 2])
    roll = np.arctan2(rot[1, 0], rot[0, 0])
    return np.array([yaw, pitch, roll])


def canonical_landmarks(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmarks [N,468,3] (NaN rows = no face) in a pose-free head frame in IOD units.

    Returns (canonical [N,468,3], pose [N,3] relative to the video's mean head, iod_px [N]).
    """
    n = landmarks.shape[0]
    has_face = np.isfinite(landmarks).all(axis=(1, 2))
    pts = landmarks.astype(np.float64)
    canonical = np.full_like(pts, np.nan)
    pose = np.zeros((n, 3))
    iod_px = np.full(n, np.nan)
    if not has_face.any():
        return canonical, pose, iod_px
    reference = _canonical_reference(pts[has_face][:, list(STABLE)][:: max(1, int(has_face.sum()) // 200)])
    for i in np.flatnonzero(has_face):
        rot, s, t = _kabsch(pts[i, list(STABLE)], reference)
        canonical[i] = s * pts[i] @ rot.T + t
        # The video's mean head is the reference; pose is this frame's rotation back from it.
        pose[i] = _euler(rot.T)
        iod_px[i] = 1.0 / s
    return canonical, pose, iod_px


def _polygon_mask(poly: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Even-odd point-in-polygon test for the pixel centres of a w x h window at (x0, y0)."""
    ys, xs = np.mgrid[y0:y0 + h, x0:x0 + w] + 0.5
    inside = np.zeros((h, w), bool)
    xj, yj = poly[-1]
    for xi, yi in poly:
        cross = (yi > ys) != (yj > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xj - xi) * (ys - yi) / (yj - yi) + xi
        inside ^= cross & (xs < x_at)
        xj, yj = xi, yi
    return inside


def inner_mouth_colours(frame: np.ndarray, landmarks: np.ndarray, iod_px: float) -> tuple[float, float]:
    """(teeth, tongue) areas in IOD^2: bright low-saturation and red mid-bright pixels inside
    the inner-lip polygon, relative to the skin just below the lower lip."""
    poly = landmarks[list(INNER_UPPER) + list(INNER_LOWER[-2:0:-1]), :2].astype(np.float64)
    h, w = frame.shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 1:
        return 0.0, 0.0
    inside = _polygon_mask(poly, x0, y0, x1 - x0, y1 - y0)
    if not inside.any():
        return 0.0, 0.0
    rgb = np.asarray(frame[y0:y1, x0:x1], dtype=np.float32)[inside]
    cx, cy = landmarks[17, :2] + (landmarks[17, :2] - landmarks[14, :2]) * 0.6
    sx, sy = int(np.clip(cx, 2, w - 3)), int(np.clip(cy, 2, h - 3))
    skin_luma = float(np.asarray(frame[sy - 2:sy + 3, sx - 2:sx + 3], dtype=np.float32).mean())
    luma = rgb.mean(1)
    sat = (rgb.max(1) - rgb.min(1)) / np.maximum(rgb.max(1), 1.0)
    teeth = (luma > 0.75 * skin_luma) & (sat < 0.45)
    tongue = (~teeth) & (luma > 0.35 * skin_luma) & (rgb[:, 0] > 1.35 * rgb[:, 1])
    px_per_iod2 = max(iod_px, 1.0) ** 2
    return float(teeth.sum()) / px_per_iod2, float(tongue.sum()) / px_per_iod2


def measure_mouths(frames: np.ndarray | FrameStore | None, landmarks: np.ndarray,
                   colours: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-frame descriptors [N, 8] (same column order as the parameters, IOD units) and pose.

    jaw: subnasale-to-chin drop; lip_open: inner-lip gap; lip_width: corner distance;
    lip_round: lip-centre protrusion in front of the corners; closure: vermilion thickness
    (pressed lips thin out); teeth/tongue: inner-mouth colour areas (only where `colours`
    is set, when given: reading the frames is the costly part); activity: mouth speed.
    """
    canonical, pose, iod_px = canonical_landmarks(landmarks)
    n = landmarks.shape[0]
    raw = np.full((n, N_PARAMS), np.nan)
    c = canonical
    raw[:, JAW] = c[:, CHIN, 1] - c[:, SUBNASALE, 1]
    raw[:, LIP_OPEN] = np.mean([c[:, b, 1] - c[:, a, 1] for a, b in GAP_PAIRS], axis=0)
    raw[:, LIP_WIDTH] = c[:, MOUTH_CORNERS[1], 0] - c[:, MOUTH_CORNERS[0], 0]
    # MediaPipe z grows away from the camera: protrusion = corners' z minus the lip centres' z.
    raw[:, LIP_ROUND] = c[:, list(MOUTH_CORNERS), 2].mean(1) - c[:, list(LIP_CENTRES), 2].mean(1)
    raw[:, CLOSURE] = (c[:, 13, 1] - c[:, 0, 1]) + (c[:, 17, 1] - c[:, 14, 1])
    raw[:, TEETH] = 0.0
    raw[:, TONGUE] = 0.0
    for i in np.flatnonzero(np.isfinite(iod_px)):
        if frames is not None and (colours is None or colours[i]):
            raw[i, TEETH], raw[i, TONGUE] = inner_mouth_colours(frames[i], landmarks[i], iod_px[i])
    lips = c[:, list(INNER_UPPER) + list(INNER_LOWER), :2]
    speed = np.zeros(n)
    speed[1:] = np.linalg.norm(np.diff(lips, axis=0), axis=2).mean(1)
    raw[:, ACTIVITY] = np.nan_to_num(speed)
    raw[~np.isfinite(iod_px)] = np.nan
    return raw.astype(np.float32), pose.astype(np.float32)


def _percentiles(values: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    return float(np.percentile(v, lo)), float(np.percentile(v, hi))


def calibrate(raw: np.ndarray) -> Calibration:
    """Scales from the video itself (percentiles), never narrower than the anatomical floors."""
    zero, span = np.zeros(N_PARAMS), np.ones(N_PARAMS)
    for col, floor in ((JAW, MIN_JAW_RANGE_IOD), (LIP_OPEN, MIN_GAP_RANGE_IOD)):
        p5, p95 = _percentiles(raw[:, col], 5, 95)
        zero[col], span[col] = p5, max(p95 - p5, floor)
    p5, p50 = _percentiles(raw[:, LIP_WIDTH], 5, 50)
    _, p95 = _percentiles(raw[:, LIP_WIDTH], 50, 95)
    zero[LIP_WIDTH], span[LIP_WIDTH] = p50, max(p95 - p50, p50 - p5, MIN_WIDTH_RANGE_IOD)
    p50, p95 = _percentiles(raw[:, LIP_ROUND], 50, 95)
    zero[LIP_ROUND], span[LIP_ROUND] = p50, max(p95 - p50, MIN_ROUND_RANGE_IOD)
    p5, p50 = _percentiles(raw[:, CLOSURE], 5, 50)
    zero[CLOSURE], span[CLOSURE] = p50, -max(p50 - p5, 1e-3)  # thinner than usual = pressed
    _, p95 = _percentiles(raw[:, TEETH], 50, 95)
    span[TEETH] = max(p95, MIN_TEETH_RANGE)
    _, p95 = _percentiles(raw[:, TONGUE], 50, 98)
    span[TONGUE] = max(p95, MIN_TEETH_RANGE)
    p50, p90 = _percentiles(raw[:, ACTIVITY], 50, 90)
    zero[ACTIVITY], span[ACTIVITY] = 0.5 * p50, max(p90 - 0.5 * p50, 1e-3)
    return Calibration(zero=zero, span=span)


def to_params(raw: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Raw descriptors [N, 8] -> mouth parameters [N, 8] in the audio-feature ranges."""
    params = (raw.astype(np.float64) - calibration.zero) / calibration.span
    params[:, LIP_WIDTH] = np.clip(params[:, LIP_WIDTH], -1.0, 1.0)
    others = [JAW, LIP_OPEN, LIP_ROUND, TEETH, TONGUE, ACTIVITY]
    # Opening and jaw may exceed 1 (wider than the video's 95th percentile): keep up to 1.5.
    params[:, others] = np.clip(params[:, others], 0.0, 1.5)
    params[:, [LIP_ROUND, TEETH, TONGUE, ACTIVITY]] = np.minimum(params[:, [LIP_ROUND, TEETH, TONGUE, ACTIVITY]], 1.0)
    gap_closed = np.clip(1.0 - params[:, LIP_OPEN] / 0.08, 0.0, 1.0)
    params[:, CLOSURE] = np.clip(params[:, CLOSURE], 0.0, 1.0) * gap_closed
    return np.nan_to_num(params).astype(np.float32)


def to_raw(params: np.ndarray, calibration: Calibration) -> np.ndarray:
    """Inverse of `to_params` on the unclipped range: the descriptor a parameter row asks for."""
    return (np.asarray(params, np.float64) * calibration.span + calibration.zero).astype(np.float32)


def _unreliable(raw: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Frames whose mouth measurement is implausible: landmark jitter spikes (a hand, a
    microphone or motion blur over the mouth) or a head turned too far for a clean warp."""
    bad = np.abs(pose[:, :2]).max(1) > MAX_POSE_RAD
    gap = raw[:, LIP_OPEN].astype(np.float64)
    finite = np.isfinite(gap)
    if finite.sum() >= 5:
        filled = np.interp(np.arange(len(gap)), np.flatnonzero(finite), gap[finite])
        before, after = np.roll(filled, 1), np.roll(filled, -1)
        before[0], after[-1] = filled[0], filled[-1]
        # A spike leaves the range of both neighbours (a ramp, however steep, does not).
        spike = np.maximum(filled - np.maximum(before, after), 0) + np.maximum(np.minimum(before, after) - filled, 0)
        mad = np.median(np.abs(spike - np.median(spike))) + 1e-6
        bad |= spike > np.median(spike) + 8.0 * mad + 0.05
    return bad


def build_library(frames: np.ndarray | FrameStore | None, landmarks: list[np.ndarray | None] | np.ndarray,
                  scores: np.ndarray | None = None, min_score: float = 0.5,
                  sample: np.ndarray | None = None) -> MouthLibrary:
    """Measure and calibrate the mouth of every tracked frame (None / NaN = no face); with
    `sample` (bool [N]) only those frames are read for colours and may be usable."""
    if isinstance(landmarks, list):
        stacked = np.full((len(landmarks), 468, 3), np.nan, np.float32)
        for i, lm in enumerate(landmarks):
            if lm is not None:
                stacked[i] = lm
        landmarks = stacked
    raw, pose = measure_mouths(frames, np.asarray(landmarks, np.float32), sample)
    usable = np.isfinite(raw).all(1) & ~_unreliable(raw, pose)
    if sample is not None:
        usable &= np.asarray(sample, bool)
    if scores is not None:
        usable &= np.asarray(scores) >= min_score
    calibration = calibrate(raw[usable] if usable.any() else raw)
    params = to_params(raw, calibration)
    params[~usable] = 0.0
    log.info("mouth library: %d of %d frames usable", int(usable.sum()), len(usable))
    return MouthLibrary(params=params, raw=np.nan_to_num(raw, nan=np.nan), pose=np.nan_to_num(pose),
                        usable=usable, calibration=calibration)
