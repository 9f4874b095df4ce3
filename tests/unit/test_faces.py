"""Choosing faces: largest by default, the one under the mask when given, left to right
for conversations, and clear errors for missing or tiny faces."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.faces import select_faces
from orchestrator.stages import DetectedFace
from preprocess.errors import MediaError


def _face(x0: float, y0: float, side: float) -> DetectedFace:
    rng = np.random.default_rng(int(x0))
    landmarks = np.zeros((468, 3), np.float32)
    landmarks[:, 0] = rng.uniform(x0, x0 + side, 468)
    landmarks[:, 1] = rng.uniform(y0, y0 + side, 468)
    return DetectedFace(box=np.array([x0, y0, x0 + side, y0 + side], np.float32), score=0.9,
                        landmarks=landmarks)


def test_largest_face_is_chosen_without_a_mask() -> None:
    small, large = _face(10, 10, 60), _face(200, 10, 120)
    assert select_faces([small, large], 1, None) == [large]


def test_mask_picks_the_face_under_its_white_part() -> None:
    small, large = _face(10, 10, 60), _face(200, 10, 120)
    mask = np.zeros((200, 400), np.uint8)
    mask[:100, :100] = 255
    assert select_faces([small, large], 1, mask) == [small]


def test_two_faces_come_left_to_right() -> None:
    right, left = _face(300, 10, 100), _face(20, 10, 90)
    assert select_faces([right, left], 2, None) == [left, right]


def test_one_face_for_a_conversation_is_refused() -> None:
    with pytest.raises(MediaError) as error:
        select_faces([_face(10, 10, 100)], 2, None)
    assert error.value.code == "two_faces_required"


def test_no_face_is_refused() -> None:
    with pytest.raises(MediaError) as error:
        select_faces([], 1, None)
    assert error.value.code == "face_not_found"


def test_face_too_small_to_animate_is_refused() -> None:
    with pytest.raises(MediaError) as error:
        select_faces([_face(10, 10, 20)], 1, None)
    assert error.value.code == "face_too_small"
