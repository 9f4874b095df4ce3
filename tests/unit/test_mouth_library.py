"""Unit tests of the mouth library (descriptors, calibration) and the Viterbi mouth selection
used for dubbing by re-synthesis (orchestrator.mouth_library, orchestrator.mouth_select)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.mouth_library import (
    CLOSURE,
    JAW,
    LIP_OPEN,
    N_PARAMS,
    Calibration,
    MouthLibrary,
    build_library,
    calibrate,
    measure_mouths,
)
from orchestrator.mouth_select import (
    CALM_STYLE_SHARE,
    EXPRESSIVE_P95,
    WIDEN_FROM,
    WIDEN_FULL,
    SelectionWeights,
    calm_share,
    match_speaking_style,
    select_mouths,
    widen_selection,
)
from tests.media import media_file

ROOT = Path(__file__).resolve().parents[2]
FACE_DIR = ROOT / "model_repository" / "face_detection" / "1"
LOWER_LIP = (14, 87, 317, 178, 402, 88, 318, 95, 324, 17, 84, 314, 181, 405, 91, 321, 146, 375)
CHIN_AREA = (152, 148, 377, 176, 400, 149, 378, 199, 175, 200, 18)


def make_library(params: np.ndarray, pose: np.ndarray | None = None, usable: np.ndarray | None = None) -> MouthLibrary:
    n = params.shape[0]
    return MouthLibrary(
        params=params.astype(np.float32), raw=params.astype(np.float32),
        pose=np.zeros((n, 3), np.float32) if pose is None else pose.astype(np.float32),
        usable=np.ones(n, bool) if usable is None else usable,
        calibration=Calibration(zero=np.zeros(N_PARAMS), span=np.ones(N_PARAMS)))


def speech_params(n: int, seed: int = 0, period: float = 9.0) -> np.ndarray:
    """Smooth syllable-like opening with jaw following it."""
    t = np.arange(n)
    phase = np.random.default_rng(seed).uniform(0, 6)
    params = np.zeros((n, N_PARAMS), np.float32)
    params[:, LIP_OPEN] = 0.5 + 0.45 * np.sin(2 * np.pi * t / period + phase)
    params[:, JAW] = 0.8 * params[:, LIP_OPEN]
    return params


def test_selection_picks_the_closest_shapes() -> None:
    params = np.zeros((41, N_PARAMS), np.float32)
    params[:, LIP_OPEN] = np.linspace(0.0, 1.0, 41)
    rng = np.random.default_rng(1)
    library = make_library(params[rng.permutation(41)])  # no useful runs: shape must decide
    target = np.zeros((30, N_PARAMS), np.float32)
    target[:, LIP_OPEN] = np.repeat(rng.uniform(0, 1, 6), 5)  # a new shape every 5 frames
    selection = select_mouths(library, target, np.zeros(30, np.int64))
    error = np.abs(library.params[selection.frames, LIP_OPEN] - target[:, LIP_OPEN])
    assert error.max() < 0.1
    assert not selection.fallback.any()


def test_selection_prefers_playing_consecutive_library_frames() -> None:
    # The same recording twice (tiny noise): a good path plays one copy on, frame after frame.
    base = speech_params(60)
    noisy = base + np.random.default_rng(2).normal(0, 0.01, base.shape).astype(np.float32)
    library = make_library(np.concatenate([base, noisy]))
    target = base[10:50]
    chosen = select_mouths(library, target, np.arange(40)).frames
    assert np.mean(np.diff(chosen) == 1) > 0.9
    # Without transition costs the shape noise alone decides and the path hops between copies.
    free = SelectionWeights(hold=0.0, skip=0.0, jump=0.0, continuity=0.0)
    hopping = select_mouths(library, target, np.arange(40), free).frames
    assert np.mean(np.diff(hopping) == 1) < np.mean(np.diff(chosen) == 1)


def test_missing_shapes_are_flagged_for_the_fallback() -> None:
    params = speech_params(80)
    params[:, LIP_OPEN] *= 0.3  # this person never opens wide
    params[:, JAW] = 0.8 * params[:, LIP_OPEN]
    library = make_library(params)
    target = np.zeros((40, N_PARAMS), np.float32)
    target[:, LIP_OPEN] = 0.2
    target[15:25, LIP_OPEN] = 1.0
    target[15:25, JAW] = 0.9
    selection = select_mouths(library, target, np.arange(40))
    assert selection.fallback[15:25].all()
    assert not selection.fallback[:12].any() and not selection.fallback[28:].any()


def test_a_shape_the_path_misses_but_the_library_has_is_transplanted_not_rendered() -> None:
    # A long run of half-open mouths and one wide-open frame; a path that never jumps stays
    # on the run and misses the wide target, which the library's own wide mouth then serves.
    params = np.zeros((60, N_PARAMS), np.float32)
    params[:, LIP_OPEN], params[:, JAW] = 0.3, 0.24
    params[59, LIP_OPEN], params[59, JAW] = 1.0, 0.8
    library = make_library(params)
    target = np.repeat(params[:1], 20, axis=0)
    target[8:10, LIP_OPEN], target[8:10, JAW] = 1.0, 0.8
    sticky = SelectionWeights(jump=100.0, hold=0.0)
    selection = select_mouths(library, target, np.arange(20), sticky)
    assert (selection.frames[8:10] == 59).all()
    assert not selection.fallback.any()


def test_closure_is_never_served_by_an_open_mouth() -> None:
    params = speech_params(50)
    params[:, LIP_OPEN] = np.maximum(params[:, LIP_OPEN], 0.3)  # no closed frame at all
    library = make_library(params)
    target = np.zeros((10, N_PARAMS), np.float32)
    target[:, CLOSURE] = 1.0
    assert select_mouths(library, target, np.arange(10)).fallback.all()


def test_unusable_frames_are_never_chosen() -> None:
    params = speech_params(50)
    usable = np.ones(50, bool)
    usable[::2] = False
    library = make_library(params, usable=usable)
    selection = select_mouths(library, params[5:45], np.arange(40))
    assert usable[selection.frames].all()


def test_head_pose_breaks_ties_towards_the_frame_being_pasted_on() -> None:
    base = speech_params(40)
    pose = np.zeros((80, 3), np.float32)
    pose[40:, 0] = np.radians(12.0)  # second copy: head turned
    library = make_library(np.concatenate([base, base]), pose=pose)
    order = np.arange(45, 75)  # pasted on turned-head frames
    chosen = select_mouths(library, base[5:35], order).frames
    assert (chosen >= 40).mean() > 0.9


def test_selection_of_long_videos_is_fast_enough() -> None:
    library = make_library(speech_params(2000, period=13.0) + np.random.default_rng(3).normal(0, 0.02, (2000, 8)).astype(np.float32))
    target = speech_params(3000, seed=4, period=7.0)
    import time
    start = time.perf_counter()
    selection = select_mouths(library, target, np.arange(3000) % 2000)
    assert time.perf_counter() - start < 20.0  # ~1 s on one core; generous for loaded CI
    assert selection.frames.shape == (3000,)


def test_calibration_maps_the_video_percentiles_to_zero_and_one() -> None:
    raw = np.zeros((200, N_PARAMS))
    raw[:, LIP_OPEN] = np.linspace(0.0, 0.8, 200)  # wider than the anatomical floor
    raw[:, JAW] = 1.0 + np.linspace(0.0, 0.4, 200)
    cal = calibrate(raw)
    gap = (raw[:, LIP_OPEN] - cal.zero[LIP_OPEN]) / cal.span[LIP_OPEN]
    assert np.percentile(gap, 5) == pytest.approx(0.0, abs=1e-6)
    assert np.percentile(gap, 95) == pytest.approx(1.0, abs=1e-6)


def _calm_library_and_lively_target() -> tuple[np.ndarray, MouthLibrary, np.ndarray]:
    """A library whose mouth opens a third as wide as the speech asks, and that speech."""
    params = speech_params(100)
    params[:, LIP_OPEN] *= 0.3
    return params, make_library(params), speech_params(60, seed=5)


def test_style_matching_brings_a_wide_target_into_the_library_range() -> None:
    params, library, target = _calm_library_and_lively_target()
    matched = match_speaking_style(target, library, floor=0.0)
    assert matched[:, LIP_OPEN].max() <= params[:, LIP_OPEN].max() + 1e-5
    assert np.corrcoef(matched[:, LIP_OPEN], target[:, LIP_OPEN])[0, 1] > 0.95


def test_style_matching_keeps_a_share_of_the_target_for_a_calm_speaker() -> None:
    params, library, target = _calm_library_and_lively_target()
    matched = match_speaking_style(target, library, floor=0.6)
    assert (matched[:, LIP_OPEN] >= 0.6 * target[:, LIP_OPEN] - 1e-6).all()
    assert matched[:, LIP_OPEN].max() > params[:, LIP_OPEN].max() + 0.1  # wider than the library
    assert matched[:, LIP_OPEN].max() <= target[:, LIP_OPEN].max() + 1e-6
    # by default: only as much as the library is calm
    assert calm_share(np.zeros(50)) == CALM_STYLE_SHARE
    assert calm_share(np.full(50, EXPRESSIVE_P95)) == 0.0
    expressive = make_library(speech_params(100))
    np.testing.assert_array_equal(match_speaking_style(target, expressive),
                                  match_speaking_style(target, expressive, floor=0.0))


def test_a_narrow_library_mouth_is_opened_wider_instead_of_falling_back() -> None:
    params = speech_params(100)
    params[:, LIP_OPEN] *= 0.3
    library = make_library(params)
    target = speech_params(40, seed=5)
    selection = select_mouths(library, target, np.arange(40))
    assert selection.fallback.any()  # the library has no mouth this wide
    fallback, extra = widen_selection(library, target, selection)
    assert not fallback.any()
    short = target[:, LIP_OPEN] - library.params[selection.frames, LIP_OPEN]
    assert (short[selection.fallback] > WIDEN_FULL).any()
    np.testing.assert_allclose(extra[short >= WIDEN_FULL], short[short >= WIDEN_FULL], atol=1e-6)  # all the way
    assert (extra[short <= WIDEN_FROM] == 0).all()
    assert ((extra >= 0) & (extra <= np.maximum(short, 0) + 1e-6)).all()


def test_a_closure_the_library_cannot_show_still_falls_back() -> None:
    params = speech_params(50)
    params[:, LIP_OPEN] = np.maximum(params[:, LIP_OPEN], 0.3)  # no closed frame at all
    library = make_library(params)
    target = np.zeros((10, N_PARAMS), np.float32)
    target[:, CLOSURE] = 1.0
    fallback, extra = widen_selection(library, target, select_mouths(library, target, np.arange(10)))
    assert fallback.all() and (extra == 0).all()


# --- descriptors measured on real landmarks (skipped without the face_detection models)

@pytest.fixture(scope="module")
def portrait_landmarks() -> np.ndarray:
    media_file("portrait_photo_a.png")
    if not (FACE_DIR / "face_landmark.onnx").is_file():
        pytest.skip("face_detection models missing")
    if str(FACE_DIR) not in sys.path:
        sys.path.insert(0, str(FACE_DIR))
    from facemesh import FaceMesh

    with Image.open(media_file("portrait_photo_a.png")) as image:
        rgb = np.asarray(image.convert("RGB"))
    return FaceMesh(FACE_DIR).detect(rgb, max_faces=1)[0].landmarks.astype(np.float64)


def _rotate(landmarks: np.ndarray, yaw_deg: float, roll_deg: float, scale: float) -> np.ndarray:
    y, r = np.radians(yaw_deg), np.radians(roll_deg)
    yaw = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    centre = landmarks.mean(0)
    return (landmarks - centre) @ (roll @ yaw).T * scale + centre + np.array([30.0, -12.0, 0.0])


def test_mouth_descriptor_ignores_head_pose_and_face_size(portrait_landmarks: np.ndarray) -> None:
    frames = np.stack([portrait_landmarks, _rotate(portrait_landmarks, 15, 10, 1.4),
                       _rotate(portrait_landmarks, -10, -5, 0.7)]).astype(np.float32)
    raw, pose = measure_mouths(None, frames)
    assert np.abs(raw[1:, :4] - raw[0, :4]).max() < 0.01
    assert abs(np.degrees(pose[1, 2] - pose[0, 2])) == pytest.approx(10, abs=1.0)


def test_dropping_the_lower_lip_and_chin_opens_mouth_and_jaw(portrait_landmarks: np.ndarray) -> None:
    iod = np.linalg.norm(portrait_landmarks[263, :2] - portrait_landmarks[33, :2])
    sequence = []
    for drop in np.linspace(0.0, 0.4, 12):
        lm = portrait_landmarks.copy()
        lm[list(LOWER_LIP), 1] += drop * iod
        lm[list(CHIN_AREA), 1] += drop * iod
        sequence.append(lm)
    library = build_library(None, np.stack(sequence).astype(np.float32))
    assert np.all(np.diff(library.raw[:, LIP_OPEN]) > 0)
    assert np.all(np.diff(library.raw[:, JAW]) > 0)
    assert library.params[-1, LIP_OPEN] > library.params[0, LIP_OPEN] + 0.8


def test_a_library_mouth_too_open_for_the_target_still_falls_back() -> None:
    params = speech_params(50)
    params[:, LIP_OPEN] = np.maximum(params[:, LIP_OPEN], 0.6)  # never less open than this
    library = make_library(params)
    target = np.zeros((10, N_PARAMS), np.float32)  # a barely open mouth, lips not pressed
    target[:, LIP_OPEN] = 0.05
    selection = select_mouths(library, target, np.arange(10))
    fallback, extra = widen_selection(library, target, selection)
    np.testing.assert_array_equal(fallback, selection.fallback)
    assert fallback.all() and (extra == 0).all()
