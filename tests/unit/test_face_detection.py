"""Unit tests of the face_detection stage logic (BlazeFace + Face Mesh) on real portraits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
STAGE_DIR = ROOT / "model_repository" / "face_detection" / "1"
MODEL_FILES = ("face_detection_short_range.onnx", "face_landmark.onnx")
if str(STAGE_DIR) not in sys.path:
    sys.path.insert(0, str(STAGE_DIR))

from blazeface import FULL_RANGE, SHORT_RANGE, ssd_anchor_centers, tile_regions  # noqa: E402
from facemesh import Face, FaceMesh  # noqa: E402
from tests.media import media_file

# Face Mesh topology indices (MediaPipe canonical face model).
EYES = [33, 133, 263, 362]
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
UPPER_LIP, LOWER_LIP, MOUTH_RIGHT, MOUTH_LEFT = 13, 14, 61, 291
NOSE_TIP, CHIN = 1, 152
PORTRAITS = ["portrait_photo_a", "portrait_photo_b", "portrait_painting", "portrait_art", "portrait_anime"]


def load_rgb(name: str) -> np.ndarray:
    path = media_file(f"{name}.png")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def face_mesh() -> FaceMesh:
    missing = [name for name in MODEL_FILES if not (STAGE_DIR / name).is_file()]
    if missing:
        pytest.skip(f"face_detection ONNX models not built ({', '.join(missing)}): run `make models`")
    return FaceMesh(STAGE_DIR)


def assert_upright_face_geometry(face: Face) -> None:
    """Eyes above nose above mouth above chin; lips inside the box; subject's right eye on image left."""
    points = face.landmarks
    assert points.shape == (468, 3) and points.dtype == np.float32
    eye_y = points[EYES, 1].mean()
    mouth_y = points[[UPPER_LIP, LOWER_LIP], 1].mean()
    assert eye_y < points[NOSE_TIP, 1] < mouth_y < points[CHIN, 1]
    assert points[RIGHT_EYE_OUTER, 0] < points[LEFT_EYE_OUTER, 0]
    assert points[MOUTH_RIGHT, 0] < points[MOUTH_LEFT, 0]
    x0, y0, x1, y1 = face.box
    lips = points[[UPPER_LIP, LOWER_LIP, MOUTH_RIGHT, MOUTH_LEFT], :2]
    assert ((lips[:, 0] > x0) & (lips[:, 0] < x1) & (lips[:, 1] > y0) & (lips[:, 1] < y1)).all()


def test_anchor_grids_match_mediapipe_options() -> None:
    assert ssd_anchor_centers(SHORT_RANGE).shape == (896, 2)
    assert ssd_anchor_centers(FULL_RANGE).shape == (2304, 2)


def test_small_images_are_not_tiled_and_large_ones_are() -> None:
    assert tile_regions(480, 360) == []
    regions = tile_regions(1920, 1080)
    assert 2 <= len(regions) <= 12
    assert max(r[2] for r in regions) == pytest.approx(1920) and max(r[3] for r in regions) == pytest.approx(1080)


@pytest.mark.parametrize("name", PORTRAITS)
def test_each_portrait_has_one_upright_face(face_mesh: FaceMesh, name: str) -> None:
    image = load_rgb(name)
    faces = face_mesh.detect(image)
    assert len(faces) == 1, f"{name}: {len(faces)} faces"
    face = faces[0]
    assert 0.5 <= face.score <= 1.0
    height, width = image.shape[:2]
    box_w, box_h = face.box[2] - face.box[0], face.box[3] - face.box[1]
    assert 0.1 * min(width, height) < box_w < width and 0.1 * min(width, height) < box_h < height
    assert_upright_face_geometry(face)


def test_duo_photo_has_two_faces_left_and_right(face_mesh: FaceMesh) -> None:
    image = load_rgb("duo_photo")
    faces = face_mesh.detect(image)
    assert len(faces) == 2
    centers_x = sorted(float(f.box[0] + f.box[2]) / 2 for f in faces)
    assert centers_x[0] < image.shape[1] / 2 < centers_x[1]
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
    assert areas == sorted(areas, reverse=True), "faces must come largest first"
    for face in faces:
        assert_upright_face_geometry(face)


def test_max_faces_keeps_the_largest(face_mesh: FaceMesh) -> None:
    image = load_rgb("duo_photo")
    both = face_mesh.detect(image)
    only = face_mesh.detect(image, max_faces=1)
    assert len(only) == 1
    np.testing.assert_allclose(only[0].box, both[0].box)


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3)),
        np.zeros((1080, 1920, 3), dtype=np.uint8),
    ],
    ids=["noise", "gradient", "black_1080p"],
)
def test_images_without_faces_give_no_faces(face_mesh: FaceMesh, image: np.ndarray) -> None:
    assert face_mesh.detect(image) == []


@pytest.mark.parametrize("quarter_turns", [1, 3])
def test_rotated_portrait_landmarks_follow_the_rotation(face_mesh: FaceMesh, quarter_turns: int) -> None:
    image = load_rgb("portrait_photo_a")
    upright = face_mesh.detect(image)[0].landmarks[:, :2]
    rotated_faces = face_mesh.detect(np.rot90(image, quarter_turns))
    assert len(rotated_faces) == 1
    # np.rot90 maps (x, y) -> (y, W-1-x) per counter-clockwise quarter turn.
    expected = upright.copy()
    size = image.shape[1]
    for _ in range(quarter_turns):
        expected = np.stack([expected[:, 1], size - 1 - expected[:, 0]], axis=1)
    error_px = np.linalg.norm(rotated_faces[0].landmarks[:, :2] - expected, axis=1).mean()
    assert error_px < 4.0


def test_small_face_in_large_canvas_is_found(face_mesh: FaceMesh) -> None:
    with Image.open(media_file("portrait_photo_b.png")) as portrait:
        small = np.asarray(portrait.convert("RGB").resize((64, 64), Image.BILINEAR))
    canvas = np.full((1080, 1920, 3), 90, dtype=np.uint8)
    canvas[700:764, 1500:1564] = small
    faces = face_mesh.detect(canvas)
    assert len(faces) == 1
    center_x, center_y = (faces[0].box[:2] + faces[0].box[2:]) / 2
    assert 1500 < center_x < 1564 and 700 < center_y < 764
    assert_upright_face_geometry(faces[0])


def test_tracking_from_prior_boxes_matches_detection(face_mesh: FaceMesh) -> None:
    image = load_rgb("duo_photo")
    detected = face_mesh.detect(image)
    tracked = face_mesh.detect(image, prior_boxes=np.stack([f.box for f in detected]))
    assert len(tracked) == 2
    for before, after in zip(detected, tracked):
        error_px = np.linalg.norm(before.landmarks[:, :2] - after.landmarks[:, :2], axis=1).mean()
        assert error_px < 3.0
        assert after.score >= 0.5


def test_lost_prior_box_falls_back_to_detection(face_mesh: FaceMesh) -> None:
    image = load_rgb("portrait_photo_a")
    background_box = np.array([[0, 380, 80, 460]], dtype=np.float32)
    faces = face_mesh.detect(image, prior_boxes=background_box)
    assert len(faces) == 1
    assert faces[0].box[0] > 100, "the face, not the background prior, must be returned"


def test_gray_and_rgba_inputs_are_accepted(face_mesh: FaceMesh) -> None:
    image = load_rgb("portrait_photo_b")
    gray = image.mean(axis=2).astype(np.uint8)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert len(face_mesh.detect(gray)) == 1
    assert len(face_mesh.detect(rgba)) == 1
    with pytest.raises(ValueError):
        face_mesh.detect(image[:, :, :2])


# MediaPipe 0.10.21 FaceMesh (static_image_mode, refine_landmarks=False) on the same images,
# landmarks 1, 13, 14, 33, 61, 152, 263, 291, 10, 234, 454 in pixels: the port must agree.
REFERENCE_INDICES = [1, 13, 14, 33, 61, 152, 263, 291, 10, 234, 454]
MEDIAPIPE_REFERENCE_PX = {
    "portrait_photo_a": [
        [230.8, 192.8], [232.8, 220.9], [233.0, 222.9], [178.3, 145.9], [205.8, 219.9], [235.6, 263.5],
        [281.0, 141.4], [260.4, 217.4], [225.8, 84.2], [158.9, 161.6], [305.4, 155.2],
    ],
    "portrait_photo_b": [
        [129.4, 170.7], [128.8, 192.1], [129.0, 192.5], [83.0, 119.7], [101.9, 187.1], [128.5, 230.3],
        [173.6, 122.1], [154.6, 187.4], [129.4, 69.6], [61.0, 131.6], [192.3, 134.2],
    ],
}


@pytest.mark.parametrize("name", sorted(MEDIAPIPE_REFERENCE_PX))
def test_landmarks_agree_with_mediapipe_face_mesh(face_mesh: FaceMesh, name: str) -> None:
    faces = face_mesh.detect(load_rgb(name))
    reference = np.array(MEDIAPIPE_REFERENCE_PX[name], dtype=np.float32)
    error_px = np.linalg.norm(faces[0].landmarks[REFERENCE_INDICES, :2] - reference, axis=1)
    assert error_px.mean() < 0.5 and error_px.max() < 1.5
