"""Unit tests of the generator stage (lipwarp + its ONNX graph) on a real portrait.

Landmarks come from the face_detection stage (skipped when its ONNX models are not built);
the graph is built into a temporary directory by model_repository/generator/build.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
GEN_DIR = ROOT / "model_repository" / "generator"
FACE_DIR = ROOT / "model_repository" / "face_detection" / "1"
for entry in (GEN_DIR / "1", FACE_DIR):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from lipwarp import landmarks as ix  # noqa: E402
from lipwarp.render import Renderer  # noqa: E402
from tests.media import media_file

SIDE_PX = 256
CLOSED = [0, 0, 0, 0, 0, 0, 0, 0]
OPEN = [0.9, 0.9, 0.0, 0.0, 0.0, 0.9, 0.2, 1.0]
STILL = [0, 0, 0, 0]


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def polygon_mask(points: np.ndarray, side: int, grow_px: float = 0.0) -> np.ndarray:
    """Pixels whose centre lies inside a polygon (even-odd rule), optionally grown."""
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    inside = np.zeros((side, side), dtype=bool)
    n = len(points)
    for i in range(n):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % n]
        crosses = (y0 > ys) != (y1 > ys)
        x_at = x0 + (ys - y0) * (x1 - x0) / np.where(y1 == y0, 1e-9, y1 - y0)
        inside ^= crosses & (xs < x_at)
    if grow_px > 0:
        from scipy.ndimage import binary_dilation

        inside = binary_dilation(inside, iterations=int(round(grow_px)))
    return inside


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("generator_build", GEN_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    out = tmp_path_factory.mktemp("generator")
    build.write_models(out)
    return out


@pytest.fixture(scope="module")
def renderer(model_dir: Path) -> Renderer:
    return Renderer(model_dir)


@pytest.fixture(scope="module")
def mesh():  # type: ignore[no-untyped-def]
    if not (FACE_DIR / "face_landmark.onnx").exists():
        pytest.skip("face_detection ONNX models are not built (make models)")
    media_file("portrait_photo_a.png")
    from facemesh import FaceMesh

    return FaceMesh(FACE_DIR)


def crop_portrait(mesh, name: str) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """A square crop twice the face box, resized to SIDE_PX, and its landmarks."""
    image = np.asarray(Image.open(media_file(name)).convert("RGB"))
    faces = mesh.detect(image)
    assert faces, f"no face in {name}"
    lm = faces[0].landmarks
    (x0, y0), (x1, y1) = lm[:, :2].min(0), lm[:, :2].max(0)
    side = 2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    crop = np.asarray(Image.fromarray(image).crop(box).resize((SIDE_PX, SIDE_PX), Image.BICUBIC))
    return crop, landmarks_of(mesh, crop)


def landmarks_of(mesh, crop: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    faces = mesh.detect(crop)
    assert faces, "no face in the crop"
    return faces[0].landmarks.astype(np.float32)


@pytest.fixture(scope="module")
def portrait(mesh) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    return crop_portrait(mesh, "portrait_photo_a.png")


def render(renderer: Renderer, crop: np.ndarray, lm: np.ndarray, mouth: list[float], motion: list[float]):  # type: ignore[no-untyped-def]
    frames, masks = renderer.render(crop[None], lm[None], np.array([mouth], np.float32), np.array([motion], np.float32))
    return frames[0], masks[0]


def lip_colour_luma(crop: np.ndarray, lm: np.ndarray) -> float:
    body = (lm[list(ix.OUTER_LOWER), :2] + lm[list(ix.INNER_LOWER), :2]) / 2
    xs, ys = body[2:9, 0].astype(int), body[2:9, 1].astype(int)
    return float(np.median(luma(crop[ys, xs])))


def test_closed_mouth_stays_lip_coloured(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    frame, _ = render(renderer, crop, lm, CLOSED, STILL)
    inner = np.concatenate([lm[list(ix.INNER_UPPER), :2], lm[list(ix.INNER_LOWER), :2][::-1]])
    region = polygon_mask(inner, SIDE_PX, grow_px=1)
    assert region.sum() > 10
    y, lip = luma(frame[region]), lip_colour_luma(crop, lm)
    # a closed mouth shows lips and at most a thin dark seam (as in the source), never a cavity
    y_source = luma(crop[region])
    assert np.median(y) > 0.85 * np.median(y_source)
    assert (y < 0.35 * lip).mean() <= (y_source < 0.35 * lip).mean() + 0.05


def test_open_mouth_shows_dark_cavity_and_teeth(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    frame, mask = render(renderer, crop, lm, OPEN, STILL)
    mouth = polygon_mask(np.concatenate([lm[list(ix.OUTER_UPPER), :2], lm[list(ix.OUTER_LOWER), :2][::-1]]), SIDE_PX, 6)
    y = luma(frame)
    dark = (y < 0.35 * lip_colour_luma(crop, lm)) & mouth
    assert dark.sum() > 40, "no dark mouth cavity"
    # teeth: bright, low-saturation pixels just below the upper lip
    upper_lip_y = float(lm[13, 1])
    near_upper = mouth & (np.mgrid[0:SIDE_PX, 0:SIDE_PX][0] > upper_lip_y) & (np.mgrid[0:SIDE_PX, 0:SIDE_PX][0] < upper_lip_y + 14)
    rgb = frame.astype(np.float64)
    saturation = rgb.max(-1) - rgb.min(-1)
    teeth = near_upper & (y > np.percentile(luma(crop)[mouth], 50)) & (saturation < 60)
    assert teeth.sum() > 15, "no teeth below the upper lip"
    assert mask[mouth].mean() > 0.9


def test_eyes_and_upper_face_are_not_warped(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    frame, _ = render(renderer, crop, lm, OPEN, STILL)
    eyes = lm[list(ix.RIGHT_EYE + ix.LEFT_EYE + ix.BROWS), :2]
    (x0, y0), (x1, y1) = eyes.min(0).astype(int) - 4, eyes.max(0).astype(int) + 4
    assert psnr(frame[y0:y1, x0:x1], crop[y0:y1, x0:x1]) > 40


def test_blink_covers_the_eyes(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    frame, mask = render(renderer, crop, lm, CLOSED, [1, 0, 0, 0])
    eye = polygon_mask(lm[list(ix.RIGHT_UPPER + ix.RIGHT_LOWER[::-1]), :2], SIDE_PX)
    assert psnr(frame[eye], crop[eye]) < 30, "the eye did not change"
    assert mask[eye].mean() > 0.9


@pytest.mark.parametrize("eye", [(ix.RIGHT_UPPER, ix.RIGHT_LOWER), (ix.LEFT_UPPER, ix.LEFT_LOWER)])
def test_full_blink_is_an_opaque_lid(renderer: Renderer, portrait, eye) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    frames, _ = renderer.render(crop[None], lm[None], np.zeros((3, 8), np.float32),
                                np.array([STILL, [0.5, 0, 0, 0], [1, 0, 0, 0]], np.float32))
    upper, lower = lm[list(eye[0]), :2], lm[list(eye[1]), :2]
    whole = polygon_mask(np.concatenate([upper, lower[::-1]]), SIDE_PX)
    top_half = polygon_mask(np.concatenate([upper, ((upper + lower) / 2)[::-1]]), SIDE_PX)
    y_open, y_half, y_shut = (luma(f) for f in frames)
    pupil = np.percentile(y_open[whole], 20)  # iris and pupil: the darkest fifth of the open eye
    assert (y_open[top_half] <= pupil).mean() > 0.2, "the open eye shows no iris (bad landmarks?)"
    # shut: the lid covers the whole eye (nothing of the eye shows through), and looks different
    assert np.abs(y_shut - y_open)[top_half].mean() > 30
    assert (y_shut[top_half] <= pupil).mean() < 0.03
    assert (y_shut[whole] <= pupil).mean() < 0.05
    # the stretched lid skin is smoothed along the eye: no vertical streaks (unsmoothed, this
    # portrait's lids measured 9.0 and 9.7 luma levels per pixel; smoothed 5.8 and 6.8)
    along = top_half[:, 1:] & top_half[:, :-1]
    assert np.abs(np.diff(y_shut, axis=1))[along].mean() < 7.5
    # half shut: the upper half is lid (opaque, not a blend), the lower half still shows the eye
    assert (y_half[top_half] <= pupil).mean() < 0.08
    assert (y_half[whole & ~top_half] <= pupil).mean() > 0.1


def test_batches_render_like_single_frames(model_dir: Path, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    params = np.array([OPEN, CLOSED, [0.3, 0.3, 0.8, 0, 0, 1, 0, 1], OPEN, [0.5, 0.6, 0, 0.5, 0, 0.5, 0.5, 1], CLOSED], np.float32)
    motion = np.array([[0, 0.02, 0, 0.05], [0.7, 0, 0.01, 0], STILL, [1, -0.01, 0, -0.04], [0.3, 0, 0, 0], [0, 0, 0.02, 0]],
                      np.float32)
    single = Renderer(model_dir, batch_frames=1).render(crop[None], lm[None], params, motion)
    batched = Renderer(model_dir, batch_frames=4).render(crop[None], lm[None], params, motion)
    assert np.array_equal(single[0], batched[0]), f"max frame difference {np.abs(single[0].astype(int) - batched[0]).max()}"
    # The float mask may differ in the last bits where ONNX Runtime picks another kernel for
    # another batch size (seen on AVX-512 machines: 2e-6); the blend quantises it to 1/255.
    np.testing.assert_allclose(single[1], batched[1], rtol=0, atol=1e-5)


def test_mask_is_zero_at_the_crop_border(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    _, mask = render(renderer, crop, lm, OPEN, [0.5, 0.04, -0.03, 0.1])
    edge = max(2, SIDE_PX // 50)
    border = np.ones_like(mask, dtype=bool)
    border[edge:-edge, edge:-edge] = False
    assert mask.max() > 0.99 and mask[border].max() == 0.0
    assert mask.min() >= 0.0 and mask.max() <= 1.0 + 1e-6


def test_rendering_is_deterministic(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    params = np.array([OPEN, CLOSED, [0.3, 0.3, 0.8, 0, 0, 1, 0, 1]], np.float32)
    motion = np.array([[0, 0.02, 0, 0.05], [0.7, 0, 0.01, 0], STILL], np.float32)
    first = renderer.render(crop[None], lm[None], params, motion)
    second = renderer.render(crop[None], lm[None], params, motion)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])


def test_an_open_source_mouth_can_be_closed(renderer: Renderer, mesh, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    opened, _ = render(renderer, crop, lm, OPEN, STILL)
    open_lm = landmarks_of(mesh, opened)
    gap = np.linalg.norm(open_lm[14, :2] - open_lm[13, :2])
    assert gap > 8, "the detector does not see the rendered open mouth"
    closed, _ = render(renderer, opened, open_lm, CLOSED, STILL)
    closed_lm = landmarks_of(mesh, closed)
    assert np.linalg.norm(closed_lm[14, :2] - closed_lm[13, :2]) < 0.4 * gap
    mouth = polygon_mask(np.concatenate([open_lm[list(ix.INNER_UPPER), :2], open_lm[list(ix.INNER_LOWER), :2][::-1]]), SIDE_PX)
    assert (luma(closed[mouth]) < 0.35 * lip_colour_luma(crop, lm)).mean() < 0.05, "dark cavity left after closing"


def test_bad_shapes_are_refused(renderer: Renderer, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    with pytest.raises(ValueError):
        renderer.render(np.stack([crop, crop]), np.stack([lm, lm]), np.zeros((3, 8), np.float32), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError):
        renderer.render(crop[None], lm[None], np.zeros((2, 8), np.float32), np.zeros((3, 4), np.float32))


def test_a_still_source_is_prepared_once_for_its_following_requests(model_dir: Path, portrait) -> None:  # type: ignore[no-untyped-def]
    crop, lm = portrait
    renderer = Renderer(model_dir)
    prepared: list[int] = []
    original = renderer.prepare
    renderer.prepare = lambda *args: prepared.append(1) or original(*args)  # type: ignore[method-assign]
    params, motion = np.array([OPEN, CLOSED], np.float32), np.array([STILL, [1, 0, 0, 0]], np.float32)
    first = renderer.render(crop[None], lm[None], params, motion)
    again = renderer.render(crop[None], lm[None], params, motion)
    assert len(prepared) == 1
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert np.array_equal(first[0], Renderer(model_dir).render(crop[None], lm[None], params, motion)[0])
    moved = lm.copy()
    moved[:, 0] += 1.0  # other landmarks: another source
    renderer.render(crop[None], moved[None], params, motion)
    assert len(prepared) == 2
