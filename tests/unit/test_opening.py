"""Opening a recorded mouth wider before it is transplanted (model_repository/generator/1:
lipwarp/opening.py, Renderer.render_opened, the `reference_opening` of TransplantRenderer) on
two real frames of one talking video: a closed mouth and an open one. The opening is measured
by running the face mesh again on the rendered crops. Skipped when the face_detection models
or the test media are missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN_DIR = ROOT / "model_repository" / "generator" / "1"
FACE_DIR = ROOT / "model_repository" / "face_detection" / "1"
for entry in (GEN_DIR, FACE_DIR):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from lipwarp.opening import opened_shapes, uncovered_share  # noqa: E402
from lipwarp.shapes import source_shape  # noqa: E402
from tests.talking_face import CLOSED_FRAME, OPEN_FRAME, face_crops, face_mesh  # noqa: E402

SIDE_PX = 256
TEETH, TONGUE = 0.5, 0.3


@pytest.fixture(scope="module")
def crops() -> dict[str, object]:
    if not (GEN_DIR / "generator.onnx").is_file():
        pytest.skip("generator models missing (make models)")
    from lipwarp.render import Renderer

    mesh = face_mesh()
    return {"mesh": mesh, "renderer": Renderer(GEN_DIR),
            **face_crops(mesh, {CLOSED_FRAME: "closed", OPEN_FRAME: "open"}, SIDE_PX)}


def gap_px(landmarks: np.ndarray) -> float:
    """Inner-lip gap at the middle of the mouth (13-14)."""
    return float(np.linalg.norm(landmarks[14, :2] - landmarks[13, :2]))


def iod_px(landmarks: np.ndarray) -> float:
    return float(source_shape(landmarks, SIDE_PX).frame.iod_px)


def dark_mouth_pixels(crop: np.ndarray, landmarks: np.ndarray) -> int:
    """Dark pixels (the mouth's inside) in a box around the lips."""
    lips = landmarks[[61, 291, 0, 17], :2]
    x0, y0 = np.floor(lips.min(0)).astype(int)
    x1, y1 = np.ceil(lips.max(0)).astype(int)
    return int((crop[y0:y1 + 1, x0:x1 + 1].astype(np.float32).mean(-1) < 70).sum())


def test_zero_extra_opening_moves_no_control_point(crops: dict) -> None:
    shape = source_shape(crops["closed_landmarks"], SIDE_PX)
    shapes, moved = opened_shapes(shape, np.zeros(1))
    np.testing.assert_array_equal(shapes.target_px, shapes.source_px)
    np.testing.assert_allclose(moved[0], np.asarray(crops["closed_landmarks"])[:, :2], atol=1e-9)
    assert uncovered_share(3.0, np.array([3.0]))[0] == 0.0
    assert uncovered_share(0.0, np.array([8.0]))[0] == 1.0


@pytest.mark.parametrize("name", ["closed", "open"])
def test_zero_extra_opening_renders_the_crop_unchanged(crops: dict, name: str) -> None:
    crop, landmarks = crops[name], crops[name + "_landmarks"]
    opened, opened_landmarks = crops["renderer"].render_opened(crop, landmarks, 0.0, TEETH, TONGUE)
    np.testing.assert_array_equal(opened, crop)
    np.testing.assert_allclose(opened_landmarks[:, :2], landmarks[:, :2], atol=1e-4)


@pytest.mark.parametrize("name", ["closed", "open"])
def test_an_opened_mouth_shows_a_wider_opening(crops: dict, name: str) -> None:
    crop, landmarks = crops[name], crops[name + "_landmarks"]
    iod = iod_px(landmarks)
    extra_px = 0.25 * iod  # ~12 px here
    opened, opened_landmarks = crops["renderer"].render_opened(crop, landmarks, 0.25, TEETH, TONGUE)
    # the landmarks the transplant is given: the gap grew by the asked amount at the middle
    assert gap_px(opened_landmarks) - gap_px(landmarks) == pytest.approx(extra_px, rel=0.08)
    # the pixels: the face mesh, run again, sees most of it, and the inside is darker
    measured = crops["mesh"].detect(opened, max_faces=1)[0].landmarks
    assert gap_px(measured) - gap_px(landmarks) > 0.6 * extra_px
    assert dark_mouth_pixels(opened, measured) > dark_mouth_pixels(crop, landmarks) + 0.3 * extra_px * 0.5 * iod
    # the upper face stays where it was (the spline's far tail moves a few pixels, within a few
    # rows above the nose tip, by a few levels: up to 6 on the open frame)
    top = int(landmarks[1, 1])  # nose tip
    diff = np.abs(opened[:top].astype(np.int16) - crop[:top])
    assert (diff > 0).mean() < 1e-3 and diff.max() <= 8


def test_transplant_with_zero_opening_is_bit_identical(crops: dict) -> None:
    from transplant_batch import TransplantRenderer

    renderer = TransplantRenderer(GEN_DIR, opener=crops["renderer"])
    args = (np.asarray(crops["closed"])[None], np.asarray(crops["closed_landmarks"])[None],
            np.asarray(crops["open"])[None], np.asarray(crops["open_landmarks"])[None])
    plain = renderer.render(*args, count=1)
    zero = renderer.render(*args, count=1, opening=np.zeros(1, np.float32))
    np.testing.assert_array_equal(plain[0], zero[0])
    np.testing.assert_array_equal(plain[1], zero[1])


def test_transplanted_opened_mouth_is_wider(crops: dict) -> None:
    from transplant_batch import TransplantRenderer

    renderer = TransplantRenderer(GEN_DIR, opener=crops["renderer"])
    args = (np.asarray(crops["closed"])[None], np.asarray(crops["closed_landmarks"])[None],
            np.asarray(crops["open"])[None], np.asarray(crops["open_landmarks"])[None])
    params = np.zeros((1, 8), np.float32)
    plain, _ = renderer.render(*args, count=1)
    wider, mask = renderer.render(*args, count=1, opening=np.full(1, 0.25, np.float32), mouth_params=params)
    iod = iod_px(crops["open_landmarks"])
    before = gap_px(crops["mesh"].detect(plain[0], max_faces=1)[0].landmarks)
    after = gap_px(crops["mesh"].detect(wider[0], max_faces=1)[0].landmarks)
    assert after - before > 0.5 * 0.25 * iod
    assert mask[0, :SIDE_PX // 10].max() == 0.0  # still nothing changes near the top border


def test_opening_needs_a_valid_input(crops: dict) -> None:
    from transplant_batch import TransplantRenderer

    args = (np.asarray(crops["closed"])[None], np.asarray(crops["closed_landmarks"])[None],
            np.asarray(crops["open"])[None], np.asarray(crops["open_landmarks"])[None])
    with pytest.raises(ValueError, match="reference_opening must be"):
        TransplantRenderer(GEN_DIR, opener=crops["renderer"]).render(*args, count=1, opening=np.full(2, 0.1))
    with pytest.raises(ValueError, match="cannot open"):
        TransplantRenderer(GEN_DIR).render(*args, count=1, opening=np.full(1, 0.1))
