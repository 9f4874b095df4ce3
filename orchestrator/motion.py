"""Seeded "life" motion for a talking face: eye blinks and small head sway, roll and nods.

`plan_motion` returns per-frame [blink, head_dx, head_dy, head_roll]. Head motion is
low-pass filtered noise whose amplitude follows voice activity, plus small nods on the
onsets of loud syllables; blinks come every ~2-6 s, and often right after a phrase ends.
The same inputs and seed always give the same plan, and each of its random draws comes from
the seed and what it decides alone (the sway; the regular blinks; each phrase end's blink by
its frame; each blink's length by its start): a change in the speech changes the motion only
near it, never redraws the rest of the video.

Prompt vocabulary (case-insensitive words of the job's `prompt`; factors multiply, the
product is clamped to [0, 2.5]; other words are ignored): see `PROMPT_STYLES`:
    still / frozen / motionless  → almost no head motion (blinks stay)
    calm / relaxed / subtle / serious → less motion
    neutral / natural            → default
    expressive / animated / lively → more motion
    energetic / excited / enthusiastic → much more motion, more nodding
    nervous / anxious            → more frequent blinks, slightly more motion
    sleepy / tired               → slower, longer blinks, less motion
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

MOTION_COLUMNS: tuple[str, ...] = ("blink", "head_dx", "head_dy", "head_roll")
HEAD_SHIFT_LIMIT = 0.03  # fraction of the face size
HEAD_ROLL_LIMIT_RAD = 0.05


@dataclass(frozen=True)
class MotionStyle:
    """Multipliers a prompt word applies to the default motion."""

    motion: float = 1.0  # head sway/roll amplitude
    nod: float = 1.0  # speech-driven nod amplitude
    blink_rate: float = 1.0  # blinks per second
    blink_length: float = 1.0  # blink duration


PROMPT_STYLES: dict[str, MotionStyle] = {
    **dict.fromkeys(("still", "frozen", "motionless"), MotionStyle(0.05, 0.05)),
    **dict.fromkeys(("calm", "relaxed", "subtle", "serious"), MotionStyle(0.5, 0.5)),
    **dict.fromkeys(("neutral", "natural"), MotionStyle()),
    **dict.fromkeys(("expressive", "animated", "lively"), MotionStyle(1.6, 1.6)),
    **dict.fromkeys(("energetic", "excited", "enthusiastic"), MotionStyle(1.9, 2.0, 1.1)),
    **dict.fromkeys(("nervous", "anxious"), MotionStyle(1.2, 1.0, 1.8, 0.9)),
    **dict.fromkeys(("sleepy", "tired"), MotionStyle(0.6, 0.5, 0.8, 1.5)),
}

MEAN_BLINK_INTERVAL_S = 3.8
BLINK_DURATION_S = (0.15, 0.25)
PHRASE_END_BLINK_PROBABILITY = 0.6
MIN_PHRASE_S = 0.8
SWAY_SMOOTHING_S = 0.45  # Gaussian sigma of the head-sway noise: slow, natural drift
BASE_SHIFT = 0.006  # head sway (fraction of face) in silence; doubled while speaking
BASE_ROLL_RAD = 0.010
# Keys of the independent random draws (with the seed; `_draws`).
SWAY_DRAWS, BLINK_DRAWS, PHRASE_BLINK_DRAWS, BLINK_SHAPE_DRAWS = 1, 2, 3, 4
NOD_SHIFT = 0.008


def style_from_prompt(prompt: str) -> MotionStyle:
    """Combine the styles of every known word in the prompt."""
    motion = nod = rate = length = 1.0
    for word in re.findall(r"[a-z]+", prompt.lower()):
        style = PROMPT_STYLES.get(word)
        if style is not None:
            motion, nod = motion * style.motion, nod * style.nod
            rate, length = rate * style.blink_rate, length * style.blink_length
    return MotionStyle(_clamp(motion, 0.0), _clamp(nod, 0.0), _clamp(rate, 0.2), _clamp(length, 0.5))


def _clamp(value: float, low: float, high: float = 2.5) -> float:
    return float(np.clip(value, low, high))


def _blink_profile(n_frames: int) -> np.ndarray:
    """Eyelid closure over one blink: fast close (40%), slower open (60%)."""
    phase = np.linspace(0.0, 1.0, n_frames + 2)[1:-1]
    closing = np.sin(0.5 * np.pi * np.clip(phase / 0.4, 0, 1))
    opening = np.cos(0.5 * np.pi * np.clip((phase - 0.4) / 0.6, 0, 1))
    return np.where(phase < 0.4, closing, opening)


def _phrase_ends(activity: np.ndarray, fps: float) -> list[int]:
    speaking = activity > 0.5
    ends, run = [], 0
    for index, active in enumerate(speaking):
        if active:
            run += 1
        else:
            if run >= MIN_PHRASE_S * fps:
                ends.append(index)
            run = 0
    return ends


def _draws(seed: int, *key: int) -> np.random.Generator:
    """The random draws of one part of the plan: from the seed and that part's own key."""
    return np.random.default_rng([seed, *key])


def _blink_starts(n_frames: int, fps: float, activity: np.ndarray, style: MotionStyle, seed: int) -> list[int]:
    mean_interval_s = MEAN_BLINK_INTERVAL_S / style.blink_rate
    starts: list[float] = []
    rng = _draws(seed, BLINK_DRAWS)
    t_s = rng.uniform(0.5, mean_interval_s)
    while t_s * fps < n_frames:
        starts.append(t_s)
        interval_s = rng.gamma(4.0, mean_interval_s / 4.0)
        t_s += float(np.clip(interval_s, 0.5 * mean_interval_s, 2.0 * mean_interval_s))
    for end in _phrase_ends(activity, fps):
        draw = _draws(seed, PHRASE_BLINK_DRAWS, end)
        end_s = end / fps + draw.uniform(0.1, 0.3)
        if draw.random() < PHRASE_END_BLINK_PROBABILITY and all(abs(end_s - s) > 1.0 for s in starts):
            starts.append(end_s)
    return sorted(int(round(s * fps)) for s in starts if s * fps < n_frames)


def _blinks(n_frames: int, fps: float, activity: np.ndarray, style: MotionStyle, seed: int) -> np.ndarray:
    blink = np.zeros(n_frames)
    for start in _blink_starts(n_frames, fps, activity, style, seed):
        rng = _draws(seed, BLINK_SHAPE_DRAWS, start)
        duration_s = rng.uniform(*BLINK_DURATION_S) * style.blink_length
        length = max(int(round(duration_s * fps)), 3)
        profile = _blink_profile(length) * rng.uniform(0.9, 1.0)
        stop = min(start + length, n_frames)
        blink[start:stop] = np.maximum(blink[start:stop], profile[: stop - start])
    return blink


def _smooth_noise(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance low-pass noise [n_frames, 3]."""
    white = rng.standard_normal((n_frames, 3))
    noise = gaussian_filter1d(white, SWAY_SMOOTHING_S * fps, axis=0, mode="reflect")
    return noise / (noise.std(axis=0, keepdims=True) + 1e-9) if n_frames > 1 else noise * 0.0


def _nods(energy: np.ndarray, fps: float) -> np.ndarray:
    """Downward head motion on loudness onsets (stressed syllables), eased in and out."""
    envelope = gaussian_filter1d(energy, 0.04 * fps, mode="nearest")
    onset = np.clip(np.diff(envelope, prepend=envelope[:1]) * fps, 0.0, None)
    nod = gaussian_filter1d(onset, 0.12 * fps, mode="nearest")
    return nod / (np.percentile(nod, 99) + 1e-6) if nod.size else nod


def plan_motion(
    energy: np.ndarray, activity: np.ndarray, fps: float, seed: int, prompt: str = ""
) -> np.ndarray:
    """Per-frame float32 [T, 4]: blink (0..1), head_dx, head_dy (±0.03 face), head_roll (±0.05 rad)."""
    energy = np.clip(np.asarray(energy, dtype=np.float64).reshape(-1), 0.0, 1.0)
    activity = np.clip(np.asarray(activity, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if energy.shape != activity.shape:
        raise ValueError(f"energy {energy.shape} and activity {activity.shape} differ in length")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n_frames = energy.shape[0]
    plan = np.zeros((n_frames, 4), dtype=np.float32)
    if n_frames == 0:
        return plan
    style = style_from_prompt(prompt)
    seed &= 0xFFFFFFFFFFFFFFFF
    # 1. Blinks: a renewal process plus blinks after phrases.
    plan[:, 0] = _blinks(n_frames, fps, activity, style, seed)
    # 2. Head sway: low-pass noise, twice as large while speaking, ramped smoothly.
    speaking = gaussian_filter1d(activity, 0.3 * fps, mode="nearest")
    gain = style.motion * (1.0 + speaking)
    sway = _smooth_noise(n_frames, fps, _draws(seed, SWAY_DRAWS))
    dx = BASE_SHIFT * gain * sway[:, 0]
    dy = BASE_SHIFT * 0.7 * gain * sway[:, 1]
    roll = BASE_ROLL_RAD * gain * sway[:, 2]
    # 3. Nods on stressed syllables (head dips: +dy is down).
    dy = dy + NOD_SHIFT * style.nod * _nods(energy * activity, fps)
    # 4. Soft limits keep motion smooth while bounded.
    plan[:, 1] = HEAD_SHIFT_LIMIT * np.tanh(dx / HEAD_SHIFT_LIMIT)
    plan[:, 2] = HEAD_SHIFT_LIMIT * np.tanh(dy / HEAD_SHIFT_LIMIT)
    plan[:, 3] = HEAD_ROLL_LIMIT_RAD * np.tanh(roll / HEAD_ROLL_LIMIT_RAD)
    return plan
