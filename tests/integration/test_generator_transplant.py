"""The generator stage's transplant mode (optional `reference` inputs) served by a real
tritonserver: two frames of the real talking video, a closed mouth given an open one."""
from __future__ import annotations


import numpy as np
import pytest

from orchestrator.stages import TritonStages
from proto.stages import StageRequestError
from tests.talking_face import CLOSED_FRAME, OPEN_FRAME, face_crops, face_mesh

pytestmark = pytest.mark.integration

SIDE_PX = 256


@pytest.fixture(scope="module")
def pair() -> dict[str, np.ndarray]:
    return face_crops(face_mesh(), {CLOSED_FRAME: "closed", OPEN_FRAME: "open"}, SIDE_PX)


def lip_gap_iod(landmarks: np.ndarray) -> float:
    gap = np.mean([np.linalg.norm(landmarks[b, :2] - landmarks[a, :2]) for a, b in ((82, 87), (13, 14), (312, 317))])
    return float(gap / np.linalg.norm(landmarks[263, :2] - landmarks[33, :2]))


async def test_reference_mouth_is_transplanted(stages: TritonStages, pair: dict[str, np.ndarray]) -> None:
    source = np.stack([pair["closed"], pair["closed"]])
    landmarks = np.stack([pair["closed_landmarks"], pair["closed_landmarks"]])
    reference = np.stack([pair["open"], pair["closed"]])  # frame 1: its own mouth (identity)
    reference_landmarks = np.stack([pair["open_landmarks"], pair["closed_landmarks"]])
    out = await stages.generate(source, landmarks, np.zeros((2, 8), np.float32), np.zeros((2, 4), np.float32),
                                reference=reference, reference_landmarks=reference_landmarks)
    assert out.frames.shape == (2, SIDE_PX, SIDE_PX, 3) and out.masks.shape == (2, SIDE_PX, SIDE_PX)
    # Outside the paste mask the crop is the source, bit for bit; the mouth region changed.
    outside = out.masks[0] == 0
    assert np.array_equal(out.frames[0][outside], pair["closed"][outside])
    async def gap(image: np.ndarray) -> float:  # measured the same way on all three crops
        return lip_gap_iod((await stages.detect_faces(image, max_faces=1))[0].landmarks)

    closed, opened, got = await gap(pair["closed"]), await gap(pair["open"]), await gap(out.frames[0])
    assert opened > closed + 0.05
    assert abs(got - opened) < 0.4 * (opened - closed)
    # The frame's own mouth as reference gives the frame back (up to resampling).
    inside = out.masks[1] > 0
    assert np.abs(out.frames[1].astype(int) - pair["closed"])[inside].mean() < 1.5


async def test_mismatched_reference_is_a_request_error(stages: TritonStages, pair: dict[str, np.ndarray]) -> None:
    with pytest.raises(StageRequestError, match="generator"):  # the caller's error: never retried
        await stages.generate(pair["closed"][None], pair["closed_landmarks"][None], np.zeros((1, 8), np.float32),
                              np.zeros((1, 4), np.float32), reference=pair["open"][None, :128, :128],
                              reference_landmarks=pair["open_landmarks"][None])


async def test_reference_opening_opens_the_transplanted_mouth_wider(stages: TritonStages,
                                                                    pair: dict[str, np.ndarray]) -> None:
    source, landmarks = pair["closed"][None].repeat(2, 0), pair["closed_landmarks"][None].repeat(2, 0)
    reference, reference_landmarks = pair["open"][None].repeat(2, 0), pair["open_landmarks"][None].repeat(2, 0)
    zeros = np.zeros((2, 8), np.float32), np.zeros((2, 4), np.float32)
    plain = await stages.generate(source, landmarks, *zeros, reference=reference, reference_landmarks=reference_landmarks)
    out = await stages.generate(source, landmarks, *zeros, reference=reference, reference_landmarks=reference_landmarks,
                                reference_opening=np.array([0.0, 0.25], np.float32))
    # no extra opening: the plain transplant, bit for bit
    assert np.array_equal(out.frames[0], plain.frames[0]) and np.array_equal(out.masks[0], plain.masks[0])

    async def gap(image: np.ndarray) -> float:
        return lip_gap_iod((await stages.detect_faces(image, max_faces=1))[0].landmarks)

    assert await gap(out.frames[1]) > await gap(plain.frames[1]) + 0.05
