"""The evaluation tool's metric functions on synthetic signals with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from tests.eval import identity, stability, sync
from tests.eval.cases import all_cases, select
from tests.eval.resources import tree_rss_kib
from tests.eval.sync import Phone


def _landmarks(frames: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(100, 300, size=(468, 3)).astype(np.float32)
    base[sync.EYE_RIGHT, :2], base[sync.EYE_LEFT, :2] = (150, 150), (250, 150)
    return np.repeat(base[None], frames, axis=0)


def test_auc_of_perfectly_separated_scores_is_one() -> None:
    assert sync.roc_auc(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0])) == 1.0
    assert sync.roc_auc(np.array([1.0, 2.0]), np.array([5.0, 6.0, 7.0])) == 0.0


def test_auc_of_shuffled_scores_is_about_one_half() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=4000)
    assert sync.roc_auc(scores[:2000], scores[2000:]) == pytest.approx(0.5, abs=0.03)


def test_auc_counts_ties_as_half() -> None:
    assert sync.roc_auc(np.ones(5), np.ones(7)) == 0.5


def test_lag_finder_finds_a_mouth_that_leads_by_three_frames() -> None:
    rng = np.random.default_rng(2)
    energy = np.convolve(rng.normal(size=300), np.ones(3) / 3, mode="same")
    mouth = np.roll(energy, -3)  # mouth[t] = energy[t + 3]: the mouth moves first
    lag, corr = sync.best_lag(sync.lagged_correlations(mouth, energy))
    assert lag == 3 and corr > 0.95


def test_lag_finder_finds_a_mouth_that_lags_by_two_frames() -> None:
    rng = np.random.default_rng(3)
    energy = rng.normal(size=300)
    lag, _ = sync.best_lag(sync.lagged_correlations(np.roll(energy, 2), energy))
    assert lag == -2


def test_pearson_of_a_constant_track_is_zero_not_nan() -> None:
    assert sync.pearson(np.ones(50), np.arange(50.0)) == 0.0


def test_jitter_of_a_static_track_is_zero() -> None:
    assert stability.landmark_jitter(_landmarks(20)) == 0.0


def test_jitter_of_steady_motion_is_zero_and_of_noise_is_not() -> None:
    moving = _landmarks(20)
    moving[:, :, 0] += np.arange(20, dtype=np.float32)[:, None] * 2.0
    assert stability.landmark_jitter(moving) == pytest.approx(0.0, abs=1e-6)
    noisy = _landmarks(20) + np.random.default_rng(4).normal(0, 1.0, size=(20, 468, 3)).astype(np.float32)
    assert stability.landmark_jitter(noisy) > 0.01


def test_mouth_opening_is_the_lip_gap_over_the_eye_distance() -> None:
    landmarks = _landmarks(1)
    landmarks[0, sync.MOUTH_UPPER, :2] = (200, 250)
    landmarks[0, sync.MOUTH_LOWER, :2] = (200, 270)
    assert sync.mouth_opening(landmarks)[0] == pytest.approx(0.2)


def test_bilabial_auc_is_one_when_the_mouth_shuts_on_every_bilabial() -> None:
    fps = 25.0
    phones = [Phone("M" if i % 2 else "AA", i * 0.2, (i + 1) * 0.2) for i in range(20)]
    opening = np.array([0.0 if phones[min(int(t / fps / 0.2), 19)].label == "M" else 0.3
                        for t in range(100)])
    auc, closed, opened = sync.bilabial_auc(opening, phones, fps)
    assert (auc, closed, opened) == (1.0, 10, 10)


def test_energy_follows_the_loudness_of_each_frame() -> None:
    rate = 16_000
    samples = np.concatenate([np.zeros(rate // 25), 0.5 * np.ones(rate // 25)]).astype(np.float32)
    energy = sync.frame_energy_db(samples, rate, 25.0, 2)
    assert energy[1] == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert energy[0] == pytest.approx(energy[1] - sync.ENERGY_FLOOR_DB)


def test_procrustes_distance_ignores_pose_and_sees_shape() -> None:
    rng = np.random.default_rng(5)
    points = rng.normal(size=(40, 2))
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 3.0 * points @ rotation.T + 7.0
    assert identity.procrustes_distance(moved, points) == pytest.approx(0.0, abs=1e-6)
    assert identity.procrustes_distance(rng.normal(size=(40, 2)), points) > 0.5


def test_psnr_outside_a_mask_ignores_what_is_inside() -> None:
    a = np.full((40, 40, 3), 100, np.uint8)
    b = a.copy()
    b[10:20, 10:20] = 0
    inside = np.zeros((40, 40), bool)
    inside[10:20, 10:20] = True
    assert identity.psnr_from_mse(identity.masked_mse(a, b, ~inside)) == float("inf")
    assert identity.masked_ssim(a, b, ~inside) > identity.masked_ssim(a, b, np.ones((40, 40), bool))


def test_case_filter_keeps_calibration_only_when_the_mesh_is_skipped() -> None:
    picked = select(all_cases(), [], skip_mesh=True)
    assert picked and all(c.group == "calibration" for c in picked)
    assert [c.name for c in select(all_cases(), ["dub_talk_a"], skip_mesh=False)] == ["dub_talk_a_en_3", "dub_talk_a_own_speech"]


def test_memory_of_this_process_tree_is_counted() -> None:
    import os  # noqa: PLC0415

    assert tree_rss_kib(os.getpid(), {}) > 1000


def test_real_mouth_score_finds_a_shifted_copy_and_its_lag() -> None:
    from tests.eval import realmouth  # noqa: PLC0415

    rng = np.random.default_rng(3)
    real = np.convolve(rng.normal(size=120), np.ones(4) / 4, mode="same")
    late = np.concatenate([[real[0]], real[:-1]])  # the output follows one frame late
    score = realmouth.real_mouth_score(late, real)
    assert score.best_lag == -1 and score.corr_best == pytest.approx(1.0, abs=1e-6)
    assert score.corr_lag0 < 0.9
    unrelated = realmouth.real_mouth_score(rng.normal(size=120), real)
    assert abs(unrelated.corr_lag0) < 0.35


def test_resampled_track_keeps_values_at_the_other_frame_rate() -> None:
    from tests.eval import realmouth  # noqa: PLC0415

    ramp = np.arange(50, dtype=np.float64)  # value = frame index at 20 fps
    out = realmouth.resample_track(ramp, 20.0, 25.0, 70)
    assert out[5] == pytest.approx(4.0)  # 0.2 s
    assert np.isnan(out[-1])  # past the end of the real track


def test_mouth_sharpness_drops_when_the_mouth_is_blurred() -> None:
    import cv2  # noqa: PLC0415

    from tests.eval import realmouth  # noqa: PLC0415

    rng = np.random.default_rng(4)
    frame = (rng.uniform(0, 255, size=(400, 400, 3))).astype(np.uint8)
    landmarks = np.full((468, 3), np.nan, np.float32)
    angles = np.linspace(0, 2 * np.pi, len(realmouth.OUTER_LIPS), endpoint=False)
    landmarks[list(realmouth.OUTER_LIPS), 0] = 200 + 60 * np.cos(angles)
    landmarks[list(realmouth.OUTER_LIPS), 1] = 250 + 25 * np.sin(angles)
    sharp = realmouth.sharpness(frame, landmarks)
    blurred = realmouth.sharpness(cv2.GaussianBlur(frame, (0, 0), 3.0), landmarks)
    assert sharp > 0 and blurred < 0.2 * sharp
    assert realmouth.sharpness_ratio([blurred], [sharp]) == pytest.approx(blurred / sharp)
    # the same mouth at twice the size scores about the same: the crop is scale-free
    big = cv2.resize(frame, (800, 800), interpolation=cv2.INTER_NEAREST)
    scaled = landmarks.copy()
    scaled[:, :2] = landmarks[:, :2] * 2 + 0.5
    assert realmouth.sharpness(big, scaled) == pytest.approx(sharp, rel=0.35)
