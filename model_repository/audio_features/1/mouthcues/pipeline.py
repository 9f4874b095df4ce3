"""Speech → per-video-frame mouth parameters: the whole `audio_features` computation.

Phone-driven viseme tracks (word-aligned or allphone phones + dominance co-articulation) are
fused with language-independent acoustic tracks, gated by voice activity, led slightly ahead
of the sound as real mouths are, and resampled to the requested frame rate; bilabial closures
are placed on the video frames at their own time, held long enough to be seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .acoustics import SAMPLE_RATE_HZ, TRACK_RATE_HZ, AcousticTracks, analyse_audio, quiet_cut_points
from .closures import closure_frames, closure_intervals
from .coarticulation import (
    PhoneTracks,
    blend_dominance,
    impose_closures,
    smooth_critically_damped,
)
from .phones import PhoneSegment
from .recognition import PhoneRecognizer
from .visemes import CLOSURE, JAW, LIP_OPEN, LIP_ROUND, LIP_WIDTH, N_SHAPE, SHAPE_PARAMS, TEETH, TONGUE

# The stage's output columns (proto/stages.py MOUTH_PARAMS, checked by test_stage_contracts):
# the viseme shape columns, then how active the speech is.
MOUTH_PARAMS: tuple[str, ...] = (*SHAPE_PARAMS, "activity")
ACTIVITY = MOUTH_PARAMS.index("activity")
LEAD_S = 0.04  # the mouth shape is shown this much before the sound it belongs to
PHONE_WEIGHT = 0.65  # share of the phone tracks where allphone decoding hears speech phones
ALIGNED_PHONE_WEIGHT = 0.8  # and where the phones are word-aligned (exact)
DECODE_CHUNK_S = 30.0
CUT_SEARCH_S = 3.0
PART_SEARCH_S = 1.0  # a part's bound is looked for within this much of its nominal place,
PART_SEARCH_SHARE = 0.25  # or this share of a part's length, whichever is more,
PAUSE_ENERGY = 0.1  # in a pause: normalised energy at most this (0 = the silence floor)
# ... for at least this long: a stop's closure (the silence before p, b, t, d, k, g) or a gap
# between words lasts 20-90 ms on the shared clips, and a part cut there loses the word
# it falls in; their pauses between phrases last 150-590 ms.
MIN_PAUSE_S = 0.15
PART_CONTEXT_S = 1.5  # a part is decoded with about this much of its neighbours' speech around it


@dataclass(frozen=True)
class MouthFeatures:
    """Output of the stage for one audio."""

    mouth_params: np.ndarray  # [T, 8] float32, columns MOUTH_PARAMS
    energy: np.ndarray  # [T] float32 normalised loudness 0..1
    phones: tuple[PhoneSegment, ...]


def n_video_frames(n_samples: int, fps: float) -> int:
    """T = ceil(duration_s * fps), robust to float rounding."""
    return max(int(math.ceil(n_samples * fps / SAMPLE_RATE_HZ - 1e-9)), 0)


def fuse_with_acoustics(
    phone: PhoneTracks, acoustic: AcousticTracks, phone_weight: np.ndarray | float = PHONE_WEIGHT
) -> np.ndarray:
    """Shape tracks [N, N_SHAPE] from phones and acoustics.

    Phones decide the shape where the decoder hears speech phones; elsewhere (non-English,
    noise the decoder labels +SPN+, or silence labels over voiced sound) the opening follows
    loudness and voicing, rounding/spreading follow the F2-region share, teeth follow frication.
    Everything is gated by voice activity, so silence is rest."""
    p = phone.shape
    energy, activity, voiced = acoustic.energy, acoustic.activity, acoustic.voicing
    w = phone_weight * np.clip(phone.speech_weight, 0.0, 1.0)
    loudness = 0.3 + 0.7 * np.sqrt(energy)
    open_acoustic = energy**0.6 * (0.35 + 0.65 * voiced) * (1.0 - 0.5 * acoustic.fricative)
    front = acoustic.frontness - 0.5
    out = np.zeros_like(p)
    out[:, JAW] = w * p[:, JAW] * loudness + (1 - w) * 0.8 * open_acoustic
    out[:, LIP_OPEN] = w * p[:, LIP_OPEN] * loudness + (1 - w) * 0.85 * open_acoustic
    out[:, LIP_WIDTH] = w * p[:, LIP_WIDTH] + (1 - w) * 0.8 * front * voiced
    out[:, LIP_ROUND] = w * p[:, LIP_ROUND] + (1 - w) * 0.5 * np.clip(-2 * front, 0, 1) * voiced
    out[:, CLOSURE] = p[:, CLOSURE]
    out[:, TEETH] = np.maximum(
        w * p[:, TEETH] + (1 - w) * 0.5 * np.clip(front + 0.5, 0, 1) * voiced,
        0.8 * acoustic.fricative,
    )
    out[:, TONGUE] = w * p[:, TONGUE]
    return out * activity[:, None]


def _frame_windows(n_frames: int, fps: float, shift_s: float, n_track: int) -> tuple[np.ndarray, np.ndarray]:
    """Track-frame index ranges [lo, hi) covering each video frame's time span (+ shift)."""
    centres_s = np.arange(n_frames) / fps + shift_s
    half_s = 0.5 / fps
    lo = np.clip(np.floor((centres_s - half_s) * TRACK_RATE_HZ + 0.5), 0, max(n_track - 1, 0)).astype(int)
    hi = np.clip(np.ceil((centres_s + half_s) * TRACK_RATE_HZ + 0.5), 1, n_track).astype(int)
    return lo, np.maximum(hi, lo + 1)


def _box_mean(track: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    csum = np.concatenate([np.zeros((1,) + track.shape[1:]), np.cumsum(track, axis=0)])
    return (csum[hi] - csum[lo]) / (hi - lo).reshape((-1,) + (1,) * (track.ndim - 1))


def resample_to_video(
    shape: np.ndarray,
    acoustic: AcousticTracks,
    n_samples: int,
    fps: float,
    closures_s: Sequence[tuple[float, float]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(mouth_params [T, 8], energy [T]) at the video rate; mouth led by LEAD_S, bilabial
    closures (closures_s) shut the lips on the frames they cover, at their own time."""
    n_frames = n_video_frames(n_samples, fps)
    params = np.zeros((n_frames, len(MOUTH_PARAMS)), dtype=np.float32)
    energy = np.zeros(n_frames, dtype=np.float32)
    if n_frames == 0 or shape.shape[0] == 0:
        return params, energy
    lo, hi = _frame_windows(n_frames, fps, LEAD_S, shape.shape[0])
    mouth = _box_mean(shape, lo, hi)
    # The blended closure target only shapes the approach (it already pulls lip_open down);
    # the lips are shut exactly on the frames the closures cover.
    mouth[:, CLOSURE] = 0.0
    mouth = impose_closures(mouth, closure_frames(closures_s, n_frames, fps))
    lo, hi = _frame_windows(n_frames, fps, 0.0, shape.shape[0])
    params[:, :N_SHAPE] = mouth
    params[:, ACTIVITY] = _box_mean(acoustic.activity, lo, hi)
    energy[:] = _box_mean(acoustic.energy, lo, hi)
    params[:, [JAW, LIP_OPEN, LIP_ROUND, CLOSURE, TEETH, TONGUE, ACTIVITY]] = np.clip(
        params[:, [JAW, LIP_OPEN, LIP_ROUND, CLOSURE, TEETH, TONGUE, ACTIVITY]], 0.0, 1.0
    )
    params[:, LIP_WIDTH] = np.clip(params[:, LIP_WIDTH], -1.0, 1.0)
    return params, np.clip(energy, 0.0, 1.0)


def split_points(acoustic: AcousticTracks, parts: int) -> list[int]:
    """Track-frame bounds [0, ..., n] of `parts` parts of similar length, each inner bound in
    a pause: the quietest frame of the pause (at least MIN_PAUSE_S near the silence floor)
    nearest its nominal place, within PART_SEARCH of it. Where the speech has no pause there,
    the bound falls on the previous one and that part is empty: the recogniser is never cut
    mid-phrase or mid-word (it would lose the words' context), at the price of less work done
    side by side."""
    n = acoustic.n_frames
    bounds = [0]
    search = max(int(PART_SEARCH_S * TRACK_RATE_HZ), int(PART_SEARCH_SHARE * n / parts))
    pauses = _pauses(acoustic)
    for i in range(1, parts):
        nominal = n * i // parts
        lo, hi = max(bounds[-1] + 1, nominal - search), min(nominal + search, n - 1)
        inside = [(max(start, lo), min(stop, hi)) for start, stop in pauses if start < hi and stop > lo]
        if not inside:
            bounds.append(bounds[-1])
            continue
        start, stop = min(inside, key=lambda pause: abs((pause[0] + pause[1]) / 2 - nominal))
        bounds.append(start + int(np.argmin(acoustic.level_db[start:stop])))
    bounds.append(n)
    return bounds


def _pauses(acoustic: AcousticTracks) -> list[tuple[int, int]]:
    """[start, stop) track-frame runs at most PAUSE_ENERGY for at least MIN_PAUSE_S."""
    quiet = np.concatenate([[False], acoustic.energy <= PAUSE_ENERGY, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    shortest = int(round(MIN_PAUSE_S * TRACK_RATE_HZ))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= shortest]


def _quiet_near(acoustic: AcousticTracks, frame: int, search: int) -> int:
    """The quietest track frame within `search` of `frame` (clipped to the audio)."""
    lo, hi = max(frame - search, 0), min(frame + search + 1, acoustic.n_frames)
    if hi <= lo:
        return min(max(frame, 0), acoustic.n_frames)
    return lo + int(np.argmin(acoustic.level_db[lo:hi]))


def extract_mouth_features(audio: np.ndarray, fps: float, decoder: PhoneRecognizer,
                           part: int = 0, parts: int = 1) -> MouthFeatures:
    """Mouth parameters for 16 kHz mono float32 audio in [-1, 1] at fps video frames per second.

    With parts > 1, only part `part` of the audio is decoded and only its video frames are
    returned: a run of the ~30 s decode pieces when there are enough of them (the phones
    are then those of the whole audio), else a stretch between pauses (`split_points`),
    decoded with some context. The parts of one audio, each computed on its own (in
    parallel by several stage instances), concatenate to the whole answer, because
    loudness, voice activity and the split itself are measured on the whole audio."""
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"part must be in 0..parts-1 with parts >= 1, got part {part} of {parts}")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not (audio.max(initial=0.0) <= 1.0 and audio.min(initial=0.0) >= -1.0):  # NaN fails both
        # Not-a-number samples become silence and the rest is clipped to full scale (an
        # infinite sample would turn every later sum into NaN). Only then is the audio
        # copied: 10 minutes are 38 MB.
        audio = np.clip(np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    # 1. Language-independent acoustic tracks (blockwise, flat memory).
    acoustic = analyse_audio(audio)
    # 2. Phones of this part, decoded in ~30 s pieces cut at the quietest nearby moment.
    chunk, search = int(DECODE_CHUNK_S * TRACK_RATE_HZ), int(CUT_SEARCH_S * TRACK_RATE_HZ)
    pieces = quiet_cut_points(acoustic, chunk, search)
    if len(pieces) - 1 >= parts:
        # Speech of at least as many pieces as parts (always the whole, parts = 1): each part
        # is a run of whole pieces, decoded exactly as in the whole audio; only co-articulation
        # across a cut (in the quiet there) is lost.
        runs = [round(i * (len(pieces) - 1) / parts) for i in range(parts + 1)]
        cuts = pieces[runs[part] : runs[part + 1] + 1]
        first, last = cuts[0], cuts[-1]
    else:
        # Shorter speech split anyway: bounds in pauses, and the neighbours lend each part some
        # context (their frames are decoded, not answered) so words at a bound keep theirs.
        first, last = split_points(acoustic, parts)[part : part + 2]
        context = int(PART_CONTEXT_S * TRACK_RATE_HZ)
        decode_first = _quiet_near(acoustic, first - context, context // 3) if part > 0 else 0
        decode_last = _quiet_near(acoustic, last + context, context // 3) if part < parts - 1 else acoustic.n_frames
        cuts = quiet_cut_points(acoustic, chunk, search, decode_first, decode_last)
    decoding = decoder.decode_pieces(audio, cuts, acoustic.activity)
    # 3. Co-articulated viseme tracks (Cohen-Massaro dominance blending).
    phone_tracks = blend_dominance(decoding.segments, acoustic.n_frames)
    # 4. Fuse with acoustics (trusting word-aligned phones more), gate by voice activity,
    #    smooth without phase lag.
    weight = np.where(decoding.aligned_mask(acoustic.n_frames, TRACK_RATE_HZ), ALIGNED_PHONE_WEIGHT, PHONE_WEIGHT)
    shape = smooth_critically_damped(fuse_with_acoustics(phone_tracks, acoustic, weight))
    # 5. Resample to the video frame rate, mouth slightly ahead of the sound, bilabial
    #    closures on the frames they cover (only where there is speech).
    closures_s = closure_intervals(decoding.segments, acoustic.activity, TRACK_RATE_HZ)
    params, energy = resample_to_video(shape, acoustic, audio.shape[0], fps, closures_s)
    hop = SAMPLE_RATE_HZ // TRACK_RATE_HZ
    lo = n_video_frames(first * hop, fps) if part > 0 else 0
    hi = n_video_frames(last * hop, fps) if part < parts - 1 else params.shape[0]
    return MouthFeatures(params[lo:hi], energy[lo:hi], decoding.segments)
